"""The `paper` source: release CSVs (fixtures for all six formats, the real world/us files) to entity tables."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import FIXTURES, PAPER_DATA, paper_csv

from worldprobe.datasets import get_spec, load, load_report
from worldprobe.datasets.builder import BuildOptions, available, build
from worldprobe.datasets.schema import validate
from worldprobe.datasets.sources import paper as paper_source
from worldprobe.errors import WorldprobeError

PAPER_FIXTURES = FIXTURES / "paper"
DATASETS = ("world_place", "us_place", "nyc_place", "historical_figure", "art", "headline")


def build_fixture(name: str, workspace, path=None, **options) -> tuple[pd.DataFrame, dict]:
    source = path or PAPER_FIXTURES / f"{name}.csv"
    build(name, "paper", BuildOptions(from_path=str(source), **options), workspace)
    return load(name, workspace), load_report(name, workspace)


def texts(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["entity_id"], table["text"], strict=True))


def test_paper_builders_are_registered_for_all_six():
    assert all("paper" in available()[name] for name in DATASETS)


@pytest.mark.parametrize("name", DATASETS)
def test_fixture_builds_with_release_split_order_and_report(name, workspace):
    path = PAPER_FIXTURES / f"{name}.csv"
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    table, report = build_fixture(name, workspace)
    validate(table, get_spec(name))
    kept = table["entity_id"].str.split(":").str[1].astype(int).to_numpy()
    assert (np.diff(kept) > 0).all()  # release row order kept, ids are release rows
    assert table["is_test"].tolist() == (raw["is_test"].iloc[kept] == "True").tolist()
    assert (table["source"] == "paper").all()
    assert list(raw.columns) == list(paper_source.FORMATS[name].columns)  # fixture has the exact release columns
    item = report.inputs[0]
    assert item["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert item["licence"] and item["attribution"]
    assert report.rows_in == len(raw) and report.rows_out == len(table)
    assert report.rows_in - report.rows_out == sum(report.dropped.values())


def test_world_names_countries_and_leaks(workspace):
    table, report = build_fixture("world_place", workspace)
    text = texts(table)
    assert text["world_place:1"] == "Syracuse, New York's Landmark Theatre"
    assert text["world_place:2"] == "Dublin's St Mary's Church, Mary Street"
    assert text["world_place:3"] == "Olympia's Kensington station"
    assert text["world_place:9"] == "Afsluitdijk"
    assert table.loc[table["entity_id"] == "world_place:9", "name"].item() == "Afsluitdijk "  # name as in the source
    country = dict(zip(table["entity_id"], table["country"], strict=True))
    assert country["world_place:6"] == country["world_place:7"] == "China"
    assert country["world_place:3"] == country["world_place:8"] == "United Kingdom"
    assert country["world_place:4"] == country["world_place:5"] == country["world_place:1"] == "United States"
    assert table.loc[table["entity_id"] == "world_place:8", "country_label"].item() == "Scotland"
    assert report.details["split_leaks"] == [
        {"text": "California's Canyon Lake", "train": ["world_place:4"], "test": ["world_place:5"]}
    ]
    assert report.split_rule.startswith("the release's is_test")


def test_drop_split_leaks_removes_only_the_test_side(workspace):
    table, report = build_fixture("us_place", workspace, drop_split_leaks=True)
    assert "us_place:7" not in set(table["entity_id"]) and "us_place:6" in set(table["entity_id"])
    assert report.dropped == {"split_leak_test_side": 1}
    assert len(table) == 9


def test_us_zips_padded_and_names_not_reordered(workspace):
    table, _ = build_fixture("us_place", workspace)
    text = texts(table)
    assert text["us_place:2"] == "01001" and text["us_place:3"] == "01002"
    assert text["us_place:5"] == "California State University, Bakersfield"
    assert text["us_place:8"] == "Hoover Dam"
    assert set(table["state_id"]) >= {"NY", "MA", "DC"}


def test_nyc_title_case_groups_and_missing_borough(workspace):
    table, report = build_fixture("nyc_place", workspace)
    text = texts(table)
    assert text["nyc_place:2"] == "The Museum of the City of New York"
    assert text["nyc_place:4"] == "FDNY Engine 10 and Ladder 10"
    assert table["name"].iloc[2] == "THE MUSEUM OF THE CITY OF NEW YORK"
    row = table.set_index("entity_id").loc["nyc_place:8"]
    assert row["borough"] == "unknown" and row["facility_type"] == "unknown"
    assert table.set_index("entity_id").loc["nyc_place:7", "borough"] == "New Jersey"
    assert "poi_source" in table and "complexid" in table  # the release's own `source` column does not clash
    assert [leak["text"] for leak in report.details["split_leaks"]] == ["Whitestone"]


def test_figures_years_centuries_and_occupations(workspace):
    table, _ = build_fixture("historical_figure", workspace)
    raw = pd.read_csv(PAPER_FIXTURES / "historical_figure.csv")
    assert table["year"].tolist() == raw["death_year"].astype(float).tolist()
    assert table["century"].tolist() == raw["death_century"].tolist()  # floor(year / 100), -347 -> -4
    assert table.set_index("entity_id").loc["historical_figure:4", "occupation"] == "unknown"
    assert table.set_index("entity_id").loc["historical_figure:0", "occupation"] == "philosopher"


def test_art_text_dates_groups_and_dropped_rows(workspace):
    table, report = build_fixture("art", workspace)
    text = texts(table)
    assert text["art:0"] == "Stephen King's It"
    assert text["art:2"] == "Pablo Fenjves' If I Did It"
    assert text["art:4"] == "Isaac Asimov's I, Robot"
    year = dict(zip(table["entity_id"], table["year"], strict=True))
    assert year["art:5"] == pytest.approx(2000 + 365 / 366)  # 2000-12-31, a leap year
    assert year["art:0"] == pytest.approx(1986 + 257 / 365)
    assert report.dropped == {"empty_text": 1}  # the row without a creator
    assert set(table["decade"]) == {1950, 1960, 1980, 2000}
    assert table.set_index("entity_id").loc["art:3", "creator"] == "Dominick Dunne"


def test_headlines_keep_period_and_fractional_dates(workspace):
    table, _ = build_fixture("headline", workspace)
    assert table["text"].str.endswith(".").all()
    assert table["text"].iloc[3] == 'Trump Says "Very Good" Talks With Iran.'
    assert table["pub_year"].tolist() == [2010, 2020, 2020, 2019, 2016]
    assert table["year"].iloc[2] == 2020.0 and table["year"].iloc[3] == pytest.approx(2019 + 364 / 365)
    assert table["year"].iloc[4] == pytest.approx(2016 + 59 / 366)  # 29 February
    assert table["is_china"].tolist() == [False, False, True, False, False]


def test_limit_keeps_a_seeded_sample_in_order_and_counts_the_rest(workspace):
    table, report = build_fixture("world_place", workspace, limit=4)
    rows = [int(entity_id.split(":")[1]) for entity_id in table["entity_id"]]
    assert len(rows) == 4 and rows == sorted(rows)
    assert report.dropped == {"beyond_limit": 8}
    again, _ = build_fixture("world_place", workspace, limit=4)
    other, _ = build_fixture("world_place", workspace, limit=4, seed=5)
    assert again["entity_id"].tolist() == table["entity_id"].tolist() != other["entity_id"].tolist()


# --- bad input: every error names the file, and the row and field where there is one ----------------------------


def edited_fixture(tmp_path, name: str, edit) -> str:
    frame = pd.read_csv(PAPER_FIXTURES / f"{name}.csv", dtype=str, keep_default_na=False)
    edit(frame)
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return str(path)


def build_error(name: str, source: str, workspace) -> WorldprobeError:
    with pytest.raises(WorldprobeError) as info:
        build(name, "paper", BuildOptions(from_path=source), workspace)
    assert source in str(info.value) or str(info.value.file).endswith(source.split("/")[-1])
    return info.value


def test_missing_column(tmp_path, workspace):
    path = edited_fixture(tmp_path, "world_place", lambda f: f.drop(columns="country", inplace=True))
    error = build_error("world_place", path, workspace)
    assert error.field == "country" and "missing column" in error.message


def test_a_column_named_twice_is_refused_not_read_as_the_first(tmp_path, workspace):
    """pandas reads a repeated header name as 'latitude.1'; the build used the first column without a word."""
    path = edited_fixture(tmp_path, "world_place", lambda f: None)
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    edited = [lines[0] + ",latitude"] + [line + ",0" for line in lines[1:]]
    Path(path).write_text("\n".join(edited) + "\n", encoding="utf-8")
    error = build_error("world_place", path, workspace)
    assert (error.row, error.field) == (1, "latitude") and "names the column 'latitude' twice" in error.message


def test_latitude_out_of_range(tmp_path, workspace):
    path = edited_fixture(tmp_path, "world_place", lambda f: f.__setitem__("latitude", f["latitude"].where(
        f.index != 5, "123")))  # fmt: skip
    error = build_error("world_place", path, workspace)
    assert (error.row, error.field) == (5, "latitude") and "123" in error.message and "line 7" in error.message


def test_latitude_not_a_number(tmp_path, workspace):
    path = edited_fixture(tmp_path, "us_place", lambda f: f.__setitem__("longitude", f["longitude"].where(
        f.index != 2, "east")))  # fmt: skip
    error = build_error("us_place", path, workspace)
    assert (error.row, error.field) == (2, "longitude") and "not a number" in error.message


def test_unparsable_date(tmp_path, workspace):
    path = edited_fixture(tmp_path, "art", lambda f: f.__setitem__("release_date", f["release_date"].where(
        f.index != 3, "2007-13-45")))  # fmt: skip
    error = build_error("art", path, workspace)
    assert (error.row, error.field) == (3, "release_date") and "2007-13-45" in error.message


def test_unparsable_headline_date(tmp_path, workspace):
    path = edited_fixture(tmp_path, "headline", lambda f: f.__setitem__("pub_date", f["pub_date"].where(
        f.index != 1, "yesterday")))  # fmt: skip
    error = build_error("headline", path, workspace)
    assert (error.row, error.field) == (1, "pub_date")


def test_missing_death_year_and_bad_flag(tmp_path, workspace):
    path = edited_fixture(tmp_path, "historical_figure", lambda f: f.__setitem__("death_year", f["death_year"].where(
        f.index != 6, "")))  # fmt: skip
    error = build_error("historical_figure", path, workspace)
    assert (error.row, error.field) == (6, "death_year") and "missing" in error.message
    path = edited_fixture(tmp_path, "nyc_place", lambda f: f.__setitem__("is_test", f["is_test"].where(
        f.index != 0, "maybe")))  # fmt: skip
    error = build_error("nyc_place", path, workspace)
    assert (error.row, error.field) == (0, "is_test")


def test_empty_file_and_header_only(tmp_path, workspace):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty" in build_error("world_place", str(empty), workspace).message
    header = tmp_path / "header.csv"
    header.write_text(",".join(paper_source.FORMATS["world_place"].columns) + "\n")
    assert "no data rows" in build_error("world_place", str(header), workspace).message


@pytest.mark.parametrize(
    "content,kind",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG"),
        (gzip.compress((PAPER_FIXTURES / "art.csv").read_bytes()), "gzip"),
        (b"PK\x03\x04\x14\x00\x00\x00", "zip"),
        (b"\x00\x01\x02binary", "binary"),
    ],
)
def test_not_a_csv(tmp_path, workspace, content, kind):
    path = tmp_path / "art.csv"
    path.write_bytes(content)
    error = build_error("art", str(path), workspace)
    assert "not a CSV" in error.message and kind in error.message


def test_not_utf8_and_ragged_rows(tmp_path, workspace):
    latin = tmp_path / "latin.csv"
    latin.write_bytes((PAPER_FIXTURES / "world_place.csv").read_text().encode("latin-1"))
    assert "UTF-8" in build_error("world_place", str(latin), workspace).message
    ragged = tmp_path / "ragged.csv"
    lines = (PAPER_FIXTURES / "us_place.csv").read_text().splitlines()
    lines[4] += ",extra,cells"
    ragged.write_text("\n".join(lines) + "\n")
    error = build_error("us_place", str(ragged), workspace)
    assert error.row == 3 and "not a valid CSV" in error.message


def test_byte_order_mark_is_accepted(tmp_path, workspace):
    path = tmp_path / "art.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (PAPER_FIXTURES / "art.csv").read_bytes())
    table, _ = build_fixture("art", workspace, path=path)
    assert len(table) == 7


def test_wrong_format_and_missing_file(tmp_path, workspace):
    error = build_error("headline", str(PAPER_FIXTURES / "art.csv"), workspace)
    assert error.field == "headline"
    with pytest.raises(WorldprobeError, match="no such file"):
        build("art", "paper", BuildOptions(from_path=str(tmp_path / "nope.csv")), workspace)


# --- download path, served from a local HTTP server (no network) -------------------------------------------------


@pytest.fixture
def fixture_server():
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(PAPER_FIXTURES))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("WORLDPROBE_CACHE", str(root))
    return root


def test_build_from_url(fixture_server, cache, workspace):
    url = f"{fixture_server}/nyc_place.csv"
    table, report = build_fixture("nyc_place", workspace, path=url)
    assert len(table) == 9 and report.inputs[0]["what"] == url
    assert len(list((cache / "paper").glob("*nyc_place.csv"))) == 1


def test_release_download_is_pinned_and_checked_on_every_use(fixture_server, cache, workspace, monkeypatch):
    fixture = PAPER_FIXTURES / "us_place.csv"
    monkeypatch.setattr(paper_source, "RELEASE_URL", fixture_server + "/{name}.csv")
    good = hashlib.sha256(fixture.read_bytes()).hexdigest()
    monkeypatch.setitem(paper_source.RELEASE_SHA256, "us_place", good)
    _, report = build("us_place", "paper", BuildOptions(), workspace)
    entry = report.inputs[0]
    assert entry["what"] == f"{fixture_server}/us_place.csv" and entry["pinned_sha256"] == good
    assert entry["sha256"] == good and entry["sha256_check"] == "pinned" and entry["fetched"] == "downloaded"
    cached = cache / "paper" / "us_place.csv"
    assert cached.read_bytes() == fixture.read_bytes()
    cached.write_bytes(cached.read_bytes().replace(b"Soap Lake", b"Soap Lakf"))  # tampered in the cache
    _, report = build("us_place", "paper", BuildOptions(), workspace)  # fetched again, not used as it was
    assert cached.read_bytes() == fixture.read_bytes() and report.inputs[0]["fetched"] == "downloaded"
    _, report = build("us_place", "paper", BuildOptions(), workspace)
    assert report.inputs[0]["fetched"] == "cached, sha256 checked"
    cached.unlink()
    monkeypatch.setitem(paper_source.RELEASE_SHA256, "us_place", "0" * 64)
    with pytest.raises(WorldprobeError, match="checksum mismatch") as info:
        build("us_place", "paper", BuildOptions(), workspace)
    assert info.value.file == f"{fixture_server}/us_place.csv" and not cached.exists()


def test_release_urls_name_the_pinned_commit_and_four_pins():
    assert paper_source.RELEASE_COMMIT in paper_source.RELEASE_URL.format(name="art")
    assert sorted(paper_source.RELEASE_SHA256) == ["art", "nyc_place", "us_place", "world_place"]
    for name in ("world_place", "us_place"):  # the two release files on this machine match their pins
        path = PAPER_DATA / f"{name}.csv"
        if path.exists():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == paper_source.RELEASE_SHA256[name]


def test_unpinned_release_file_is_recorded_at_first_download(fixture_server, cache, workspace, monkeypatch):
    monkeypatch.setattr(paper_source, "RELEASE_URL", fixture_server + "/{name}.csv")
    _, report = build("headline", "paper", BuildOptions(), workspace)
    first = report.inputs[0]
    assert first["sha256_check"].startswith("first download") and first["pinned_sha256"] is None
    _, report = build("headline", "paper", BuildOptions(), workspace)
    assert report.inputs[0]["sha256_check"] == "recorded at its first download"
    assert report.inputs[0]["sha256"] == first["sha256"] and report.inputs[0]["fetched"] == "cached, sha256 checked"
    record = cache / "paper" / "headline.csv.json"
    record.write_text(record.read_text().replace(first["sha256"], "1" * 64))  # the server now serves other bytes
    (cache / "paper" / "headline.csv").unlink()
    with pytest.raises(WorldprobeError, match="checksum mismatch"):
        build("headline", "paper", BuildOptions(), workspace)


def test_from_url_is_revalidated_or_pinned_with_sha256(tmp_path, cache, workspace):
    served = tmp_path / "served"
    served.mkdir()
    csv = served / "nyc_place.csv"
    csv.write_bytes((PAPER_FIXTURES / "nyc_place.csv").read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/nyc_place.csv"
    try:
        table, report = build_fixture("nyc_place", workspace, path=url)
        assert report.inputs[0]["fetched"] == "downloaded" and report.inputs[0]["last_modified"]
        table, report = build_fixture("nyc_place", workspace, path=url)
        assert report.inputs[0]["fetched"] == "cached, server says unchanged"
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        frame.iloc[:3].to_csv(csv, index=False)  # the file on the server changes
        later = time.time() + 5
        os.utime(csv, (later, later))
        changed, report = build_fixture("nyc_place", workspace, path=url)
        assert report.inputs[0]["fetched"] == "downloaded" and len(changed) == 3 < len(table)
        digest = report.inputs[0]["sha256"]
    finally:
        server.shutdown()
        server.server_close()
    _, report = build_fixture("nyc_place", workspace, path=url, extra={"sha256": digest})  # offline with --sha256
    assert report.inputs[0]["fetched"] == "cached, sha256 checked"
    with pytest.raises(WorldprobeError, match=f"pass --sha256 {digest}"):  # offline without: refused, with the fix
        build_fixture("nyc_place", workspace, path=url)
    with pytest.raises(WorldprobeError, match="checksum mismatch"):  # a local --from file is checked too
        build_fixture("nyc_place", workspace, extra={"sha256": "2" * 64})


def test_download_failure_is_a_clear_error(fixture_server, cache, workspace):
    with pytest.raises(WorldprobeError, match="download failed") as info:
        build("art", "paper", BuildOptions(from_path=f"{fixture_server}/missing.csv"), workspace)
    assert "--from" in str(info.value)


# --- the real release files --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_world_place(workspace):
    started = time.perf_counter()
    table, report = build_fixture("world_place", workspace, path=paper_csv("world_place"))
    assert time.perf_counter() - started < 30
    assert len(table) == 39_585 and int(table["is_test"].sum()) == 7_917
    assert report.inputs[0]["sha256"] == paper_source.RELEASE_SHA256["world_place"]
    assert not table["text"].str.endswith(" ").any()
    assert table["country"].nunique() == 225 and (table["country"] == "United Kingdom").sum() == 5_667
    assert [leak["text"] for leak in report.details["split_leaks"]] == ["California's Canyon Lake"]


@pytest.mark.slow
def test_real_us_place(workspace):
    table, report = build_fixture("us_place", workspace, path=paper_csv("us_place"))
    assert len(table) == 29_997 and int(table["is_test"].sum()) == 5_999
    leaks = report.details["split_leaks"]
    assert len(leaks) == 15 and {"Soap Lake", "Lincoln University"} <= {leak["text"] for leak in leaks}
    table, report = build_fixture("us_place", workspace, path=paper_csv("us_place"), drop_split_leaks=True)
    assert report.dropped == {"split_leak_test_side": sum(len(leak["test"]) for leak in leaks)}
    assert len(table) == 29_997 - report.dropped["split_leak_test_side"]
    zips = table.loc[table["entity_type"] == "zip", "text"]
    assert len(zips) == 12_533 and zips.str.fullmatch(r"\d{5}").all()
    assert table["state_id"].nunique() == 49
