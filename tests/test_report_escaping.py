"""The HTML report shows every entity, group and model name as written, in every context (text, attributes, links,
the hover script's JSON, figure text): no name can inject markup or script, break the page, or crash a figure."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from test_reports_fixture import write_results

from worldprobe.reports.build import build_report
from worldprobe.reports.figure import FigureFile, HoverPoint
from worldprobe.reports.html import hover_json
from worldprobe.workspace import Workspace

NASTY = [
    "</script><script>window.pwned = 1</script>",
    "<!--<script>",
    "\"double\" & 'single' <b>bold</b> &amp; &lt;",
    "line\u2028separator\u2029paragraph",
    '<img src=x onerror="window.pwned = 2">',
    "Budget of $x^$ dollars (not valid math)",
]
MODEL = 'tiny&"<i>m'  # no slash: the fixture names folders after it
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report whose entity names, hold-out blocks and model name are all hostile."""
    root = tmp_path_factory.mktemp("escaping")
    results = write_results(root, datasets=("world_place", "historical_figure"), models={MODEL: 6},
                            prompts=("empty",), neurons=False, n=90)  # fmt: skip
    for path in results.glob("*/predictions.parquet"):
        table = pd.read_parquet(path)
        table["name"] = [NASTY[i % len(NASTY)] for i in range(len(table))]
        table["text"] = table["name"]  # the hover shows the text the model read
        table.to_parquet(path)
    for path in results.glob("*/holdouts.parquet"):
        table = pd.read_parquet(path)
        blocks = [b for b in dict.fromkeys(table["block"]) if b != "(mean)"]
        table["block"] = table["block"].replace({b: NASTY[i % len(NASTY)] for i, b in enumerate(blocks)})
        table.to_parquet(path)
    return build_report(Workspace(root), root / "report")


class _Tags(HTMLParser):
    """The start tags, their attributes, and the text of each script element, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self._in_script: dict[str, str | None] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = dict(attrs)
            self.scripts.append((self._in_script, ""))

    def handle_data(self, data):
        if self._in_script is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = None


def _parsed(report) -> tuple[str, _Tags]:
    page = report.index.read_text(encoding="utf-8")
    tags = _Tags()
    tags.feed(page)
    return page, tags


def test_hostile_names_make_no_tags_and_no_scripts(report):
    page, parsed = _parsed(report)
    names = [tag for tag, _ in parsed.tags]
    hover_figures = [f for f in report.figures if f.hover]
    assert names.count("script") == len(hover_figures) + 1  # the hover data blocks and the one page script
    assert names.count("img") == len(report.figures) and "b" not in names and "i" not in names
    assert not any("onerror" in attrs for _, attrs in parsed.tags)
    for raw in ("</script><script>", "<!--<script>", "<img src=x", "<b>bold</b>", "<i>m"):
        assert raw not in page


def test_hover_json_gives_back_every_name_exactly(report):
    _, parsed = _parsed(report)
    blocks = [text for attrs, text in parsed.scripts if attrs.get("type") == "application/json"]
    assert blocks and all("\u2028" not in text and "\u2029" not in text and "<" not in text for text in blocks)
    labels = [point[2] for text in blocks for point in json.loads(text)]
    for name in NASTY:
        assert any(name in label for label in labels), name


def test_text_attributes_and_links_are_escaped(report):
    page, parsed = _parsed(report)
    assert "&lt;/script&gt;&lt;script&gt;" in page  # the example-entity table shows the name as text
    alts = [attrs["alt"] for tag, attrs in parsed.tags if tag == "img"]
    assert any(MODEL in alt for alt in alts)  # the attribute holds the model name exactly
    links = [attrs["href"] for tag, attrs in parsed.tags if tag == "a" and attrs["href"].startswith("figures/")]
    assert links and all(Path(report.index.parent, _unquote(link)).exists() for link in links)


def _unquote(link: str) -> str:
    from urllib.parse import unquote

    return unquote(link)


def test_hover_json_escapes_what_could_end_the_script_element():
    figure = FigureFile("k", "a.png", "a.svg", "t", "c", [HoverPoint(0.5, 0.5, name) for name in NASTY])
    text = hover_json(figure)
    assert not {"<", ">", "&", "\u2028", "\u2029"} & set(text)
    assert [point[2] for point in json.loads(text)] == NASTY


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium/chromedriver not installed (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")  # fmt: skip
def test_no_name_runs_script_in_a_browser(report, tmp_path):
    from test_reports import _driver

    driver = _driver(tmp_path / "profile")
    try:
        driver.get(report.index.as_uri())
        assert driver.execute_script("return window.pwned === undefined;")
        assert driver.execute_script("return document.querySelectorAll('img').length;") == len(report.figures)
        labels = driver.execute_script(
            "return Array.from(document.querySelectorAll('script[type=\"application/json\"]'))"
            ".flatMap(s => JSON.parse(s.textContent).map(p => p[2]));"
        )
        for name in NASTY:
            assert any(name in label for label in labels), name
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()


def test_an_interval_in_a_table_cell_never_breaks_inside_its_brackets():
    from worldprobe.reports.html import table_html

    html = table_html(pd.DataFrame({"test R²": [".52 [.46, .57]"], "n": [399]}))
    assert ".52 [.46,\u00a0.57]" in html and "[.46, .57]" not in html
