"""The reports stage: figures, summary, partial results, the CLI, and the page in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import shapely
from test_reports_fixture import build_report_of, write_results
from typer.testing import CliRunner

from worldprobe.cli import app
from worldprobe.probes.verdict import short
from worldprobe.reports.build import build_report
from worldprobe.reports.choice import report_results
from worldprobe.reports.figure import Caption, Hover, new_figure, save, svg_copies
from worldprobe.reports.geography import MAPS, regions
from worldprobe.reports.holdouts import holdout_table
from worldprobe.reports.maps import error_km
from worldprobe.reports.summary import as_markdown, verdict_table
from worldprobe.reports.summary import as_text as summary_text
from worldprobe.reports.timelines import bin_width, error_by_bin, year_text
from worldprobe.workspace import Workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One report from a fixture with a place and a time dataset, two models, two prompts, controls, hold-outs."""
    root = tmp_path_factory.mktemp("reports")
    write_results(root, datasets=("world_place", "historical_figure"), n=200)
    return build_report(Workspace(root), root / "report")


def test_year_text_and_error_bins():
    assert [year_text(y) for y in (1850.4, 0.2, -449.6)] == ["1850", "0", "450 BC"]
    assert [year_text(y, 1) for y in (2014.62, -449.64)] == ["2014.6", "449.6 BC"]
    rows = pd.DataFrame({"true_year": [1905.0, 1915.0, 1911.0, 1941.0], "pred_year": [1915.0, 1905.0, 1913.0, 1941.0]})
    assert bin_width(rows["true_year"]) == 10 and bin_width(pd.Series([-500.0, 1900.0])) == 100
    bins = error_by_bin(rows)
    assert bins["start"].tolist() == [1900, 1910, 1940]
    assert bins["mean"].tolist() == [10.0, 6.0, 0.0] and bins["size"].tolist() == [1, 2, 1]


def test_a_short_span_is_read_to_the_decimal_and_binned_by_year():
    """Headlines span about a decade: whole years printed "true 2014; predicted 2013; error 0 years" and one decade
    bar held every entity."""
    from worldprobe.reports.timelines import example_table, year_decimals

    rows = pd.DataFrame({"true_year": [2010.2, 2013.9, 2014.6, 2019.5], "pred_year": [2011.0, 2013.2, 2014.1, 2017.0],
                         "name": ["a http://t.co/x", "b", "c", "d"], "text": ["a", "b", "c", "d"]})  # fmt: skip
    assert year_decimals(rows["true_year"]) == 1 and bin_width(rows["true_year"]) == 1
    assert error_by_bin(rows)["start"].tolist() == [2010, 2013, 2014, 2019]
    table = example_table(rows)
    assert table["text the model read"].tolist() == ["a", "b", "c", "d"]
    assert table["true year"].tolist() == ["2010.2", "2013.9", "2014.6", "2019.5"]
    assert table["error (years)"].tolist() == [0.8, 0.7, 0.5, 2.5]


def test_error_km_takes_named_columns():
    rows = pd.DataFrame({"true_latitude": [10.0, 10.0], "true_longitude": [0.0, 120.0],
                         "pred_latitude": [11.0, 11.0], "pred_longitude": [0.0, 120.0]})  # fmt: skip
    assert np.allclose(error_km(rows), 111.2, atol=0.05)  # one degree of latitude, at any longitude
    # the same km as the probe stage's metric, so a map's median equals the verdict table's
    from worldprobe.probes.metrics import haversine_km

    true = pd.DataFrame({"latitude": [10.0, 10.0], "longitude": [0.0, 120.0]})
    pred = pd.DataFrame({"latitude": [11.0, 11.0], "longitude": [0.0, 120.0]})
    assert np.array_equal(error_km(rows), haversine_km(true, pred))


def test_place_predictions_are_a_geodataframe_of_predicted_and_true_points(tmp_path):
    from worldprobe.errors import WorldprobeError
    from worldprobe.reports import place_predictions

    rows = pd.DataFrame({"entity_id": ["a", "b", "c"], "control": ["none", "none", "lexical"], "layer": [3, 3, -1],
                         "true_latitude": [10.0, 40.7, 0.0], "true_longitude": [0.0, -74.0, 0.0],
                         "pred_latitude": [11.0, 40.7, 5.0], "pred_longitude": [0.0, -73.0, 5.0]})  # fmt: skip
    (tmp_path / "run").mkdir()
    rows.to_parquet(tmp_path / "run" / "predictions.parquet")
    places = place_predictions(tmp_path / "run")
    assert type(places).__name__ == "GeoDataFrame" and places.crs.to_epsg() == 4326
    assert list(places["entity_id"]) == ["a", "b"]  # the probe itself; a control by name
    assert places.geometry.x.tolist() == [0.0, -73.0] and places["true_position"].y.tolist() == [10.0, 40.7]
    np.testing.assert_allclose(places["error_km"], error_km(rows.iloc[:2]))
    assert place_predictions(rows, control="lexical")["entity_id"].tolist() == ["c"]
    assert places.set_geometry("true_position").to_crs(MAPS["nyc"].crs).geometry.x.abs().iloc[1] < 1  # km from -74°
    with pytest.raises(WorldprobeError, match="not a place run"):
        place_predictions(pd.DataFrame({"control": ["none"], "true_year": [1900.0], "pred_year": [1910.0]}))


def test_regions_from_outlines_states_and_fallback():
    outline = pd.DataFrame({"region": ["West", "East", ""], "name": ["a", "b", "c"],
                            "geometry": [shapely.box(-10, -10, 0, 10), shapely.box(0, -10, 10, 10),
                                         shapely.box(50, 50, 60, 60)]})  # fmt: skip
    places = pd.DataFrame({"true_latitude": [0.0, 0.0, 0.0, 55.0], "true_longitude": [-5.0, 5.0, 11.0, 55.0]})
    assert regions(MAPS["world"], places, outline).tolist() == ["West", "East", "East", "other"]
    states = pd.DataFrame({"state_id": ["CA", "NY", "TX", "ZZ"]})
    assert regions(MAPS["us"], states, None).tolist() == ["West", "Northeast", "South", "other"]
    boroughs = places.assign(borough=["Bronx", "Queens", None, "Bronx"])
    assert regions(MAPS["nyc"], boroughs, None).tolist() == ["Bronx", "Queens", "unknown", "Bronx"]


def test_hover_positions_land_on_the_drawn_points(tmp_path):
    fig, ax = new_figure(1, 2, width=8, height=4)
    x, y = np.array([0.2, 0.7, 0.9]), np.array([0.3, 0.8, 0.1])
    ax[1].scatter(x, y, s=40, color="red")
    ax[1].set(xlim=(0, 1), ylim=(0, 1))
    caption = Caption("d", "m", "empty", "1 of 2 (50% depth)", "test", 3)
    figure = save(fig, tmp_path, "hover", "title", caption, Hover(ax[1], x, y, ["a", "b", "c"]))
    image = mpimg.imread(tmp_path / figure.png)
    height, width = image.shape[:2]
    for point in figure.hover:
        r, g, b = image[int(point.y * height), int(point.x * width), :3]
        assert r > 0.9 and g < 0.2 and b < 0.2, (point, (r, g, b))
    assert [p.label for p in figure.hover] == ["a", "b", "c"]
    assert figure.svg is None and not list(tmp_path.rglob("*.svg"))  # an SVG copy only when asked for
    fig, ax = new_figure(1, 1)
    ax.scatter(x, y)
    with svg_copies():
        vector = save(fig, tmp_path, "vector", "title", caption)
    svg = (tmp_path / vector.svg).read_text()
    assert "dataset d · model m · prompt empty · layer 1 of 2 (50% depth) · split test · n = 3" in svg


def test_verdict_table_reads_the_train_selected_layer_and_paired_intervals(tmp_path):
    write_results(tmp_path, datasets=("us_place",), prompts=("empty",), n=240)
    results = report_results(tmp_path / "results", tmp_path / "datasets")
    view = verdict_table(results.summaries)
    table = view.table.set_index("model")
    run = next(s for s in results.summaries if s["model"] == "tiny-a")
    head = run["headline"]
    assert table.loc["tiny-a", "layer (chosen on train)"] == f"{head['selected_layer']}/12"
    assert table.loc["tiny-a", "n test"] == head["n_test"] > 0
    assert table.loc["tiny-a", "test R² [95% CI]"] == short(head["probe"]["r2"])
    assert table.loc["tiny-a", "Spearman ρ [95% CI]"] == short(head["probe"]["spearman"])
    assert table.loc["tiny-a", "ΔR² vs random init"].endswith("(3 seeds)")
    lexical = short(head["controls"]["lexical"]["own"]["diff_r2"], signed=True)
    assert table.loc["tiny-a", "ΔR² vs lexical"].split(" ")[:3] == lexical.split(" ")
    assert table.loc["tiny-a", "ΔR² vs lexical"].rsplit(" ", 1)[1] in ("above", "below", "equiv.", "inconcl.")
    # the table decides every run in one family, so its label may differ from the run's own (family of one run)
    sentence = dict(((d, m), s) for d, m, s in view.sentences)[("us_place", "tiny-a")]
    assert "comparisons) of this table" in sentence and "comparisons) of this run" in run["verdict"]["sentence"]
    assert view.family.size > len(head["comparisons"])
    text = summary_text(results.summaries)
    assert "paired bootstrap" in text and sentence in text and "Holm's correction" in text
    markdown = as_markdown(view).splitlines()
    header, rule, *rows = markdown[: 2 + len(view.table)]
    assert header.count(" | ") == len(view.table.columns) - 1 and rule == "|" + "---|" * len(view.table.columns)
    assert [row.split(" | ")[1] for row in rows] == list(view.table["model"])
    assert f"- **us_place x tiny-a**: {sentence}" in markdown and markdown[-1] == view.note
    assert not results.breakdown.empty and set(results.metrics["subset"]) == {"all"}


def test_results_of_another_dataset_build_are_left_out_as_stale(tmp_path):
    results = write_results(tmp_path, datasets=("world_place", "us_place"), models={"m": 4}, prompts=("empty",),
                            n=40, neurons=True)  # fmt: skip
    build = tmp_path / "datasets" / "us_place.build.json"
    build.write_text(build_report_of("us_place", "rebuilt with another --limit"))
    loaded = report_results(results, tmp_path / "datasets")
    assert set(loaded.metrics["dataset"]) == {"world_place"} and set(loaded.neurons["dataset"]) == {"world_place"}
    assert len(loaded.stale) == 2 and all("another build of us_place" in note for note in loaded.stale)
    report = build_report(Workspace(tmp_path), tmp_path / "out")
    assert [s.dataset for s in report.sections] == ["world_place"]
    html = report.index.read_text()
    assert "Left out: stale results" in html and "another build of us_place" in html
    old = results / "world_place__m__empty" / "summary.json"
    summary = json.loads(old.read_text())
    del summary["headline"]["comparisons"]  # a verdict without its tests (worldprobe before docs/verdicts.md)
    old.write_text(json.dumps(summary))
    assert any("no tested comparisons" in note for note in report_results(results, tmp_path / "datasets").stale)
    del summary["headline"]
    old.write_text(json.dumps(summary))
    assert any("older worldprobe" in note for note in report_results(results, tmp_path / "datasets").stale)


def test_holdout_table_sorts_blocks_and_keeps_the_stage_mean(tmp_path):
    results = write_results(tmp_path, datasets=("world_place",), models={"m": 4}, prompts=("empty",), n=120)
    rows = report_results(results).holdouts
    table = holdout_table(rows, "country")
    assert table["block"].iat[-1] == "(mean)" and table["n_rows"].iloc[:-1].is_monotonic_decreasing
    stage_mean = rows[(rows["block"] == "(mean)") & (rows["setting"] == "held_out")]["value"].iat[0]
    assert table["held_out"].iat[-1] == pytest.approx(stage_mean)
    assert (table["held_out"].iloc[:-1] > table["nominal"].iloc[:-1]).all()


def test_results_skip_unfinished_runs_and_keep_the_newest(tmp_path):
    results = write_results(tmp_path, datasets=("nyc_place",), models={"m": 4}, prompts=("empty",), n=30, neurons=False)
    (run,) = results.iterdir()
    newer = results / "rerun"
    shutil.copytree(run, newer)
    metrics = pd.read_parquet(newer / "metrics.parquet")
    metrics["value"] += 1
    metrics.to_parquet(newer / "metrics.parquet")
    (newer / "summary.json").touch()
    unfinished = results / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "summary.json").unlink()
    custom = results / "population"
    shutil.copytree(run, custom)
    population = metrics.assign(target=metrics["target"].replace({"latitude": "population", "longitude": "population"}))
    population.assign(value=-5.0).to_parquet(custom / "metrics.parquet")
    loaded = report_results(results)
    assert any("population" in note and "not drawn" in note for note in loaded.missing)
    assert len(loaded.metrics) == len(metrics)
    assert np.allclose(np.sort(loaded.metrics["value"]), np.sort(metrics["value"]))
    assert any("unfinished" in note and "skipped" in note for note in loaded.missing)


@pytest.mark.slow
def test_report_writes_every_figure_with_caption(report):
    assert report.index.exists()
    kinds = {Path(f.png).stem.rsplit("__", 1)[-1] for f in report.figures}
    assert kinds == {"layers", "prompts", "map", "errors", "timeline", "holdouts", "neurons"}
    assert len(report.figures) == 2 * 2 + 2 * (2 + 2) + 2 * (1 + 2)
    for figure in report.figures:
        assert (report.index.parent / figure.png).stat().st_size > 5_000 and figure.svg is None
        assert re.search(r"dataset \S+ · model .+ · prompt .+ · layer .+ · split .+ · n = .*\d", figure.caption)
    maps = [f for f in report.figures if f.png.endswith("__map.png")]
    assert maps and all(len(f.hover) > 10 for f in maps)


@pytest.mark.slow
def test_report_page_is_offline_and_summarises(report):
    html = report.index.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page must not reference any host"
    assert "@import" not in html and "url(" not in html
    summary = html[html.index('id="summary"') : html.index('id="world_place"')]
    for heading in ("layer (chosen on train)", "test R² [95% CI]", "ΔR² vs lexical", "ΔR² vs random init", "n test",
                    "within-group Δr vs spelling", "alt-world gap (matched)", "verdict (Holm)"):  # fmt: skip
        assert heading in summary, heading
    assert summary.count("<tr") == 1 + 2 * 2  # heading + (2 datasets x 2 models)
    assert summary.count("<li><strong>") == 2 * 2 and "chosen on train rows" in summary  # a sentence per row
    assert html.count('class="verdict"') == 2 * 2  # and above each model's figures
    assert '<p class="note">Entity types with fewer than 20 test rows are not broken out' in html  # named, not dropped
    assert "art: no results" in html and "headline: no results" in html
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == len(report.figures) and all((report.index.parent / i).exists() for i in images)


@pytest.mark.slow
def test_same_results_give_the_same_report(tmp_path):
    write_results(tmp_path, datasets=("nyc_place",), models={"m": 4}, prompts=("empty",), n=40, holdouts=False)
    write_results(tmp_path, datasets=("world_place", "historical_figure"), models={"m": 4}, prompts=("empty",), n=40,
                  holdouts=False)
    first = build_report(Workspace(tmp_path), tmp_path / "first", svg=True)
    second = build_report(Workspace(tmp_path), tmp_path / "second", svg=True, workers=2)  # sections in 2 processes
    assert len(first.sections) == 3 and second.index.read_text() == first.index.read_text()
    assert all(figure.svg for figure in first.figures) and 'SVG</a>' in first.index.read_text()
    for figure in first.figures:
        for path in (figure.png, figure.svg):
            assert (tmp_path / "second" / path).read_bytes() == (tmp_path / "first" / path).read_bytes(), path


@pytest.mark.slow
def test_cli_on_partial_results_says_what_is_missing(workspace):
    write_results(workspace.root, datasets=("us_place",), models={"m": 6}, prompts=("empty",), controls=False,
                  holdouts=False, neurons=False, n=60)  # fmt: skip
    result = CliRunner().invoke(app, ["report", "--out", str(workspace.root / "out")])
    assert result.exit_code == 0, result.output
    assert "missing: us_place: no results for control(s) random_init, shuffled" in result.output
    assert "missing: world_place: no results" in result.output
    assert "missing: no holdouts in any run" in result.output
    assert (workspace.root / "out" / "index.html").exists()
    assert (workspace.root / "out" / "verdicts.md").read_text().startswith("| dataset | model |")
    assert (workspace.root / "out" / "figures" / "us_place__m__empty__map.png").exists()


def test_metrics_without_predictions_still_make_a_report(tmp_path):
    results = write_results(tmp_path, datasets=("art",), models={"m": 4}, prompts=("empty",), controls=False,
                            holdouts=False, neurons=False, n=30)  # fmt: skip
    for path in results.glob("*/predictions.parquet"):
        path.unlink()
    report = build_report(Workspace(tmp_path), tmp_path / "out")
    assert [Path(f.png).name for f in report.figures] == ["art__layers.png"]
    assert "no predictions in any run: the report has no predictions section" in report.missing
    assert "art: no predictions.parquet: no map or timeline" in report.missing


def test_cli_without_results_is_a_clear_error(workspace):
    result = CliRunner().invoke(app, ["report"])
    assert result.exit_code != 0
    assert "no finished results found" in str(result.exception)


def _driver(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium/chromedriver not installed (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")  # fmt: skip
def test_report_opens_offline_in_chromium(report, tmp_path):
    driver = _driver(tmp_path / "profile")
    try:
        driver.get_log("performance")  # drop the start page's own requests: only the report's count
        driver.get(report.index.as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
        )
        assert len(images) == len(report.figures) > 0
        assert all(complete and width > 0 for _, complete, width in images), images
        assert driver.save_screenshot(str(tmp_path / "report-top.png"))

        frame = driver.find_element("css selector", ".frame[data-hover]")
        points = json.loads(driver.execute_script(
            "return document.getElementById(arguments[0].dataset.hover).textContent;", frame))  # fmt: skip
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", frame)
        box = driver.execute_script("const b = arguments[0].querySelector('img').getBoundingClientRect();"
                                    "return [b.left, b.top, b.width, b.height];", frame)  # fmt: skip
        x, y, _ = points[0]
        driver.execute_cdp_cmd(  # a real pointer move through the DevTools protocol
            "Input.dispatchMouseEvent", {"type": "mouseMoved", "x": box[0] + x * box[2], "y": box[1] + y * box[3]}
        )
        tooltip = driver.find_element("id", "tooltip")
        assert tooltip.is_displayed()
        assert tooltip.text in {p[2] for p in points}
        assert driver.save_screenshot(str(tmp_path / "report.png"))
        print(f"screenshots: {tmp_path / 'report-top.png'} {tmp_path / 'report.png'}")

        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
        requested = [  # every request the report's document made (Chromium's own pages have chrome:// documents)
            e["params"]["request"]["url"]
            for e in events
            if e["method"] == "Network.requestWillBeSent" and e["params"].get("documentURL", "").startswith("file://")
        ]
        assert sum(url.endswith(".png") for url in requested) == len(report.figures), "images missing from the log"
        offline = [url for url in requested if not url.startswith(("file://", "data:"))]
        assert not offline, offline
    finally:
        driver.quit()


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium/chromedriver not installed (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")  # fmt: skip
@pytest.mark.parametrize("width", [1400, 800])
def test_report_at_two_widths_fits_and_keeps_its_contents_bar(report, tmp_path, width):
    """A reviewer's reading at a desktop and a narrow width: nothing pushes the page sideways (wide tables scroll in
    their own box), the contents bar stays on screen at the bottom of the page, a jump lands below it, and the held-out
    tables that repeat a chart are closed while the others are open."""
    driver = _driver(tmp_path / "profile")
    try:
        driver.set_window_size(width, 1000)
        driver.get(report.index.as_uri())
        page, view = driver.execute_script("return [document.documentElement.scrollWidth, "
                                           "document.documentElement.clientWidth];")  # fmt: skip
        assert page <= view, f"the page is {page} px wide in a {view} px window"
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight);")
        assert driver.execute_script("return document.querySelector('nav.toc').getBoundingClientRect().top;") == 0
        driver.find_element("css selector", "nav.toc a[href='#historical_figure']").click()
        heading, bar = driver.execute_script(
            "return [document.getElementById('historical_figure').getBoundingClientRect().top, "
            "document.querySelector('nav.toc').getBoundingClientRect().bottom];")  # fmt: skip
        assert bar - 1 <= heading < bar + 100, (heading, bar)
        states = driver.execute_script("return Array.from(document.querySelectorAll('details')).map("
                                       "d => [d.querySelector('summary').textContent, d.open]);")  # fmt: skip
        assert any(title.startswith("Held-out") for title, _ in states)
        assert all(is_open == (not title.startswith("Held-out")) for title, is_open in states), states
        assert driver.save_screenshot(str(tmp_path / f"report-{width}.png"))
        print(f"screenshot: {tmp_path / f'report-{width}.png'}")
    finally:
        driver.quit()


def test_small_entity_types_are_named_not_dropped():
    from worldprobe.reports.breakdown import small_types_note

    run = {"headline": {"subsets": {"types": {"city": {}, "airport": {}}, "too_few_rows": {"volcano": 7, "lake": 12}}}}
    assert small_types_note(run) == ["Entity types with fewer than 20 test rows are not broken out; their rows count "
                                     "in every overall number: lake (12), volcano (7)."]  # fmt: skip
    alone = {"headline": {"subsets": {"types": {}, "too_few_rows": {"volcano": 7}}}}
    assert "fewer than two types are large enough" in small_types_note(alone)[0]
    assert small_types_note({"headline": {"subsets": {"types": {}, "too_few_rows": {}}}}) == []


def test_the_ask_block_shows_raw_answers_beside_parsed_ones():
    from worldprobe.reports.interventions import answer_sample

    answers = pd.DataFrame({"text": [f"p{i}" for i in range(20)],
                            "answer_text": [f" died in {1800 + i}. " for i in range(20)], "answer_status": "year",
                            "reading_year": [1800.0 + i for i in range(20)],
                            "true_year": 1810.0, "pred_year": 1790.0, "answer_correct": True})  # fmt: skip
    summary = {"probe": {"targets": ["year"]}, "seed": 3, "model": "m", "question": {"name": "death_year"}}
    title, table = answer_sample(answers, summary)
    assert "8 answers of 20" in title and len(table) == 8
    assert table["answer as written"].str.startswith("died in").all()  # as written, stripped of its spaces
    assert table.equals(answer_sample(answers, summary)[1])  # seeded
    assert table["true year"].iat[0] == "1810" and table["probe's year"].iat[0] == "1790"  # whole years
    assert answer_sample(answers.head(3), summary)[1]["entity"].tolist() == ["p0", "p1", "p2"]


def test_top_neurons_table_ranks_over_every_layer_by_train_correlation():
    from worldprobe.reports.neurons import neuron_table

    rows = pd.DataFrame({
        "target": ["year"] * 6, "kind": "mlp", "layer": [1, 1, 2, 2, 7, 7], "neuron": [10, 11, 20, 21, 70, 71],
        "rank": [0, 1, 0, 1, 0, 1], "train_pearson": [0.30, 0.20, -0.50, 0.10, 0.80, 0.75],
        "test_spearman": [0.2, 0.1, -0.4, 0.0, 0.7, 0.6], "test_r2": [0.0] * 6,
    })  # fmt: skip
    table = neuron_table(rows, per_target=3)
    assert table["neuron"].tolist() == [70, 71, 20]  # not the rank-1 neuron of the first layers


def test_a_skipped_held_out_block_is_said_in_words_not_drawn(tmp_path):
    """A hold-out column whose only block leaves too few rows to train on gets a sentence, no empty chart."""
    from worldprobe.reports.build import _holdouts
    from worldprobe.reports.content import Block

    rows = pd.DataFrame({"block": ["painting"], "n_rows": [0], "setting": ["skipped"], "target": ["mean"],
                         "metric": ["rows_outside"], "value": [0.0], "dataset": ["art"], "model": ["m"],
                         "prompt": ["empty"], "layer": [3], "probe": ["ridge"], "column": ["entity_type"]})  # fmt: skip
    block = Block("m")
    _holdouts(block, rows, "m", pd.DataFrame(), tmp_path)
    assert block.figures == [] and block.tables == []
    assert block.text == ["Held-out blocks by entity_type: not fitted for painting (0 rows outside it), too few rows "
                          "to train on."]  # fmt: skip


def test_a_run_the_verdict_table_does_not_show_is_named():
    """A probe run without controls beside the study's fuller run of the same dataset and model is not silently
    dropped: the report's "not shown" list names it and says which run the table shows instead."""
    from worldprobe.reports.choice import chosen_runs, left_out_runs

    base = {"dataset": "world_place", "model": "m", "prompt": "empty", "probe": "ridge"}
    full = {**base, "run_key": "full", "headline": {"controls": {"shuffled": {}, "lexical": {}}}}
    bare = {**base, "run_key": "bare", "headline": {}}
    assert [r["run_key"] for r in chosen_runs([full, bare])] == ["full"]
    (line,) = left_out_runs([full, bare])
    assert "run bare" in line and "0 control(s)" in line and "most controls" in line
    assert left_out_runs([full]) == []


def test_two_runs_of_one_curve_are_never_mixed(tmp_path):
    """A second run of the same dataset, model, prompt and probe (another cache, a few layers) replaces the first in
    the report; their rows mixed drew one curve from two runs with two chosen layers under one n."""
    import os
    import shutil

    from worldprobe.reports.choice import report_results

    results = write_results(tmp_path, datasets=("art",), models={"m": 4}, prompts=("empty",), controls=False,
                            holdouts=False, neurons=False, n=30)  # fmt: skip
    (first,) = [p for p in results.iterdir() if p.is_dir()]
    second = results / (first.name + "-few-layers")
    shutil.copytree(first, second)
    metrics = pd.read_parquet(second / "metrics.parquet")
    metrics = metrics[metrics["layer"] <= 2].assign(value=lambda m: m["value"] + 0.5)  # other rows, other values
    metrics.to_parquet(second / "metrics.parquet", index=False)
    stamp = (first / "summary.json").stat().st_mtime_ns
    os.utime(second / "summary.json", ns=(stamp + 10**9, stamp + 10**9))  # the newer run
    loaded = report_results(results, tmp_path / "datasets")
    assert set(loaded.metrics["layer"]) <= {0, 1, 2} and len(loaded.summaries) == 1  # the newer run alone
    assert any(first.name in note and "is not drawn" in note for note in loaded.missing)


def test_a_report_stopped_half_way_leaves_the_last_one_whole(tmp_path, monkeypatch):
    """A report killed mid-write left the old index.html over new figures and a 0-byte SVG; it is now written beside
    the finished one and moved in at the end."""
    import worldprobe.reports.build as build_mod

    write_results(tmp_path, datasets=("art",), models={"m": 4}, prompts=("empty",), controls=False, holdouts=False,
                  neurons=False, n=30)  # fmt: skip
    first = build_report(Workspace(tmp_path), tmp_path / "out")
    before = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}

    def crash(report):
        raise KeyboardInterrupt  # stopped after every figure was drawn, before the page

    monkeypatch.setattr(build_mod, "write_html", crash)
    with pytest.raises(KeyboardInterrupt):
        build_report(Workspace(tmp_path), tmp_path / "out", seed=7)
    after = {p.relative_to(tmp_path / "out"): p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before and first.index.exists() and all(after.values())
    monkeypatch.undo()
    again = build_report(Workspace(tmp_path), tmp_path / "out", seed=7)  # the next run finishes and cleans up
    assert again.index == tmp_path / "out" / "index.html" and not (tmp_path / "out.partial").exists()
    assert all((tmp_path / "out" / f.png).stat().st_size > 0 for f in again.figures)


def test_ask_steer_and_context_runs_are_found_through_the_one_stale_check(tmp_path):
    """The report's behaviour sections read runs through probes.results.find_runs: finished runs of the stage and
    dataset, a run of another dataset build left out with stale_reason's words, an unreadable summary named."""
    import json

    from worldprobe.probes.results import find_runs

    results, datasets = tmp_path / "results", tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "historical_figure.build.json").write_text(build_report_of("historical_figure", "new"))

    def run(name: str, **summary) -> None:
        (results / name).mkdir(parents=True)
        (results / name / "summary.json").write_text(json.dumps(summary))

    base = {"stage": "steer", "dataset": "historical_figure", "complete": True}
    run("current", **base, probe={"cache": {"dataset_fingerprint": "new"}})
    run("old", **base, probe={"cache": {"dataset_fingerprint": "old"}})
    run("unfinished", **{**base, "complete": False}, probe={"cache": {"dataset_fingerprint": "new"}})
    run("asked", **{**base, "stage": "ask"}, probe={"cache": {"dataset_fingerprint": "new"}})
    (results / "broken").mkdir()
    (results / "broken" / "summary.json").write_text("{")
    found, notes = find_runs(results, stage="steer", dataset="historical_figure", datasets_dir=datasets)
    assert [folder.name for folder, _ in found] == ["current"]
    assert any("broken" in n and "not valid JSON" in n for n in notes)
    assert any(n.startswith("steer run old computed from another build of historical_figure") for n in notes)
    assert len(notes) == 2
    assert [f.name for f, _ in find_runs(results, stage="steer", dataset="historical_figure")[0]] == ["current", "old"]


def test_one_behaviour_run_per_model_and_question_is_drawn_and_the_others_are_named(tmp_path):
    """Several steering runs of one model (a 9-layer map, then a 2-layer exploration): the widest map is drawn, then
    the newest; every run passed over is named with the one drawn."""
    import os

    from worldprobe.reports.interventions import drawn_runs

    def run(name: str, mtime: int, **summary):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "summary.json").write_text("{}")
        os.utime(folder / "summary.json", ns=(mtime, mtime))
        return folder, {"stage": "steer", "model": "m", "prompt": "empty", "question": {"name": "death_year"},
                        "target": "year", "positions": ["last"], **summary}  # fmt: skip

    wide = run("wide", 1, directions=["mean_diff", "pattern", "ridge"], layers=list(range(9)))
    narrow = run("narrow", 3, directions=["das"], layers=[4])
    other = run("other_model", 2, directions=["das"], layers=[4], model="n")
    notes: list[str] = []
    drawn = drawn_runs([narrow, wide, other], notes)
    assert [folder.name for folder, _ in drawn] == ["other_model", "wide"]
    assert notes == ["steer run narrow of m not drawn: wide is drawn (the widest, then the newest run of this "
                     "question)"]  # fmt: skip
    same = run("same_width_newer", 5, directions=["mean_diff", "pattern", "ridge"], layers=list(range(9)))
    assert [f.name for f, _ in drawn_runs([wide, same], [])] == ["same_width_newer"]


def test_a_control_its_run_declares_not_applicable_is_said_so_not_called_missing(tmp_path):
    results = write_results(tmp_path, datasets=("nyc_place",), models={"m": 4}, prompts=("empty",), n=30, neurons=False)
    (run,) = results.iterdir()
    metrics = pd.read_parquet(run / "metrics.parquet")
    metrics[metrics["control"] != "alt_world"].to_parquet(run / "metrics.parquet")
    assert "nyc_place: no results for control(s) alt_world" in report_results(results).missing
    summary = json.loads((run / "summary.json").read_text())
    summary["headline"]["alt_world"] = {"not_applicable": "no permutation is as learnable from the spelling"}
    (run / "summary.json").write_text(json.dumps(summary))
    missing = report_results(results).missing
    assert "nyc_place: control alt_world not applicable (its verdict says why)" in missing
    assert not any("no results for control" in note for note in missing)
