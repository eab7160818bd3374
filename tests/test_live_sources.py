"""Live builders, offline: a stub HTTP server on 127.0.0.1 serves hand-written responses in each API's format."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest

from worldprobe import cli
from worldprobe.datasets import load, load_report
from worldprobe.datasets.builder import BuildOptions, build
from worldprobe.datasets.sources.live import LIMIT_NOTE, union_groups
from worldprobe.datasets.sources.wikidata import parse_wkt_point, wikidata_years
from worldprobe.datasets.split import text_leaks
from worldprobe.errors import WorldprobeError
from worldprobe.http import HttpClient, HttpSettings, paginate, retry_after

LIVE = Path(__file__).resolve().parent / "fixtures" / "live"
FAST = {"min_interval": 0.0, "backoff": 0.001, "max_wait": 0.5, "timeout": 5.0}
Reply = tuple[int, dict[str, str], bytes]


class Stub:
    """A local HTTP server: ``route(path, query) -> (status, headers, body)``; ``script`` replies go first."""

    def __init__(self, route: Callable[[str, dict[str, list[str]]], Reply], port: int = 0) -> None:
        self.route = route
        self.script: list[Reply] = []
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                stub.requests.append(self.path)
                parts = urlsplit(self.path)
                status, headers, body = (
                    stub.script.pop(0) if stub.script else stub.route(parts.path, parse_qs(parts.query))
                )
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ok(payload: object) -> Reply:
    return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def not_found() -> Reply:
    return 404, {}, b"not found"


def sparql_route(path: str, query: dict[str, list[str]]) -> Reply:
    """Answer a SPARQL GET like WDQS would, from the fixture of the first class in VALUES, honouring LIMIT/OFFSET."""
    text = query["query"][0]
    assert query.get("format") == ["json"]
    family = "art" if "P577" in text else "us" if "P300" in text else "world"
    qid = re.search(r"VALUES \?class \{ wd:(Q\d+)", text).group(1)
    fixture = LIVE / "wikidata" / f"{family}-{qid}.json"
    payload = (
        json.loads(fixture.read_text()) if fixture.exists() else {"head": {"vars": []}, "results": {"bindings": []}}
    )
    limit = int(re.search(r"LIMIT (\d+)", text).group(1))
    offset = int(re.search(r"OFFSET (\d+)", text).group(1))
    payload["results"]["bindings"] = payload["results"]["bindings"][offset : offset + limit]
    return ok(payload)


def socrata_route(path: str, query: dict[str, list[str]]) -> Reply:
    if path != "/resource/rxuy-2muj.json":
        return not_found()
    records = json.loads((LIVE / "nyc_poi.json").read_text())
    offset, limit = int(query["$offset"][0]), int(query["$limit"][0])
    return ok(records[offset : offset + limit])


def nyt_route(path: str, query: dict[str, list[str]]) -> Reply:
    match = re.fullmatch(r"/svc/archive/v1/(\d{4})/(\d{1,2})\.json", path)
    if query.get("api-key") != ["test-key"]:
        return 401, {}, b'{"fault": {"faultstring": "Invalid ApiKey"}}'
    fixture = LIVE / f"nyt_archive_{match.group(1)}_{match.group(2)}.json" if match else None
    return ok(json.loads(fixture.read_text())) if fixture and fixture.exists() else not_found()


def file_route(path: str, query: dict[str, list[str]]) -> Reply:
    fixture = LIVE / path.lstrip("/")
    return (200, {"Content-Type": "text/csv"}, fixture.read_bytes()) if fixture.exists() else not_found()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """An empty download cache per test (responses are cached on disk)."""
    monkeypatch.setenv("WORLDPROBE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def stub():
    servers: list[Stub] = []

    def start(route: Callable[[str, dict[str, list[str]]], Reply]) -> Stub:
        servers.append(Stub(route))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def options(url_name: str, url: str, **extra) -> BuildOptions:
    return BuildOptions(extra={"urls": {url_name: url}, "http": FAST, **extra})


# ------------------------------------------------------------------ the HTTP client


def test_429_then_200_honours_retry_after(stub):
    server = stub(lambda path, query: ok({"fine": True}))
    server.script = [(429, {"Retry-After": "0.05"}, b"slow down")]
    client = HttpClient("t", settings=HttpSettings(**FAST))
    start = time.monotonic()
    payload, fetched = client.get_json(f"{server.url}/x", {"a": 1})
    assert payload == {"fine": True} and not fetched.from_cache
    assert client.waits == [0.05]  # the header's value, not the (much shorter) backoff
    assert time.monotonic() - start >= 0.05
    assert len(server.requests) == 2


def test_5xx_retried_with_exponential_backoff(stub):
    server = stub(lambda path, query: ok([1, 2]))
    server.script = [(503, {}, b"busy"), (502, {}, b"bad gateway")]
    client = HttpClient("t", settings=HttpSettings(**FAST))
    assert client.get_json(f"{server.url}/y")[0] == [1, 2]
    assert client.waits == [0.001, 0.002]


def test_retries_exhausted_and_client_errors_name_the_url(stub):
    server = stub(lambda path, query: (500, {}, b"boom") if path == "/down" else not_found())
    client = HttpClient("t", settings=HttpSettings(**{**FAST, "max_retries": 2}))
    with pytest.raises(WorldprobeError, match="HTTP 500 after 3 attempts") as info:
        client.get(f"{server.url}/down", {"q": "v"})
    assert info.value.file == f"{server.url}/down?q=v"
    with pytest.raises(WorldprobeError, match="HTTP 404") as info:
        client.get(f"{server.url}/missing")
    assert info.value.file == f"{server.url}/missing"
    assert len(server.requests) == 3 + 1  # a 404 is not retried


def test_connection_refused_is_a_clear_error(stub):
    server = stub(lambda path, query: ok({}))
    dead = server.url
    server.close()
    client = HttpClient("t", settings=HttpSettings(**{**FAST, "max_retries": 1}))
    with pytest.raises(WorldprobeError, match="request failed after 2 attempts") as info:
        client.get(f"{dead}/x")
    assert info.value.file == f"{dead}/x"


def test_bad_url_fails_at_once():
    client = HttpClient("t", settings=HttpSettings(**FAST))
    with pytest.raises(WorldprobeError, match="request not possible"):
        client.get("notaurl/sparql")
    assert client.waits == []


def test_rate_limit_spaces_network_requests(stub):
    server = stub(lambda path, query: ok({}))
    pauses: list[float] = []
    client = HttpClient("t", settings=HttpSettings(**{**FAST, "min_interval": 30.0}), sleep=pauses.append)
    client.get(f"{server.url}/a")
    client.get(f"{server.url}/b")
    client.get(f"{server.url}/a")  # cached: no request, no pause
    assert len(pauses) == 1 and 29.0 < pauses[0] <= 30.0
    assert len(server.requests) == 2 and client.fetched[-1].from_cache


def test_cache_key_leaves_out_secrets_and_record_sums_up(stub, cache):
    server = stub(lambda path, query: ok({"n": 1}))
    client = HttpClient("nyt", settings=HttpSettings(**FAST), secret_params=frozenset({"api-key"}))
    client.get(f"{server.url}/m.json", {"api-key": "secret-1"})
    again = HttpClient("nyt", settings=HttpSettings(**FAST), secret_params=frozenset({"api-key"}))
    assert again.get(f"{server.url}/m.json", {"api-key": "secret-2"}).from_cache
    record = client.record(what="m", licence="L")
    assert "secret" not in json.dumps(record) and record["responses"] == 1 and len(record["sha256"]) == 64
    assert not any("secret" in p.name for p in cache.rglob("*"))


def test_malformed_json_is_an_error_and_not_cached(stub):
    server = stub(lambda path, query: (200, {}, b"<html>maintenance</html>"))
    client = HttpClient("t", settings=HttpSettings(**FAST))
    for _ in range(2):
        with pytest.raises(WorldprobeError, match="not JSON.*maintenance") as info:
            client.get_json(f"{server.url}/z")
        assert info.value.file == f"{server.url}/z"
    assert len(server.requests) == 2  # the bad body was dropped from the cache


def test_retry_after_forms():
    assert retry_after("3") == 3.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait


def test_paginate_stops_on_short_page_and_limit():
    data = list(range(7))
    calls: list[tuple[int, int]] = []

    def page(offset: int, size: int) -> list[int]:
        calls.append((offset, size))
        return data[offset : offset + size]

    assert list(paginate(page, page_size=3)) == data and calls == [(0, 3), (3, 3), (6, 3)]
    calls.clear()
    assert list(paginate(page, page_size=3, limit=5)) == data[:5] and calls == [(0, 3), (3, 2)]


def test_http_setting_names_are_checked():
    with pytest.raises(WorldprobeError, match="unknown HTTP setting"):
        HttpSettings().updated({"retries": 3})


# ------------------------------------------------------------------ Wikidata builders


def test_world_place_from_wikidata_pages_and_normalises(stub, workspace):
    server = stub(sparql_route)
    path, report = build("world_place", "live", options("wikidata", server.url, page_size=3), workspace)
    table = load("world_place", workspace)
    assert path.exists() and len(table) == 11  # 8 + 3 + 2 bindings, minus a repeat and an unlabelled item
    assert report.dropped == {"no_english_label": 1, "repeated_item": 1} and report.rows_in == 13
    row = table.set_index("name").loc["Beijing"]
    assert row["country"] == "China" and row["entity_type"] == "populated_place"
    assert table.set_index("name").loc["Chicago", "country"] == "United States"
    assert (row["latitude"], row["longitude"]) == pytest.approx((39.906666666, 116.391388888))
    assert set(table["entity_type"]) == {"populated_place", "structure", "natural_place"}
    assert table["source"].eq("live").all() and table["is_test"].any() and not table["is_test"].all()
    # paging: 3 + 3 + 2 for 8 rows of settlements, 3 + 0 for structures, 2 for natural places
    assert len(server.requests) == 3 + 2 + 1
    saved = load_report("world_place", workspace)
    assert saved.inputs[0]["responses"] == 6 and saved.inputs[0]["licence"] == "CC0 1.0"
    # a second build is served from the cache, with the same result
    build("world_place", "live", options("wikidata", server.url, page_size=3), workspace)
    assert len(server.requests) == 6
    pd.testing.assert_frame_equal(load("world_place", workspace), table)


def test_world_place_split_is_seeded(stub, workspace):
    server = stub(sparql_route)
    first = build("world_place", "live", options("wikidata", server.url), workspace)[1]
    split = load("world_place", workspace)["is_test"].to_numpy()
    again = build("world_place", "live", options("wikidata", server.url), workspace)[1]
    assert first.fingerprint == again.fingerprint
    other = BuildOptions(seed=7, extra={"urls": {"wikidata": server.url}, "http": FAST})
    build("world_place", "live", other, workspace)
    assert not np.array_equal(load("world_place", workspace)["is_test"].to_numpy(), split)


def test_limit_is_a_seeded_sample_of_what_was_downloaded(stub, workspace):
    server = stub(sparql_route)

    def limited(seed: int) -> BuildOptions:
        return replace(options("wikidata", server.url, page_size=2), limit=3, seed=seed)

    _, report = build("world_place", "live", limited(0), workspace)
    table = load("world_place", workspace)
    # each query stops after 3 rows (3 + 3 + 2 downloaded), then 3 of the 7 good rows are drawn with the seed
    assert len(server.requests) == 6 and report.rows_in == 8 and len(table) == 3
    assert report.dropped == {"repeated_item": 1, "beyond_limit": 4} and report.notes[-2] == LIMIT_NOTE
    assert report.notes[-1].startswith("limit: a seeded sample of 3 of the 7 rows built")
    assert build("world_place", "live", limited(0), workspace)[1].fingerprint == report.fingerprint
    assert build("world_place", "live", limited(9), workspace)[1].fingerprint != report.fingerprint
    whole_file = BuildOptions(from_path=str(LIVE / "AgeDataset-V1.csv"), limit=3)  # read whole: no note
    _, report = build("historical_figure", "live", whole_file, workspace)
    assert report.rows_out == 3 and report.dropped["beyond_limit"] == 8 and LIMIT_NOTE not in report.notes


def test_wikidata_url_from_environment(stub, workspace, monkeypatch):
    server = stub(sparql_route)
    monkeypatch.setenv("WORLDPROBE_WIKIDATA_SPARQL_URL", server.url + "/sparql")
    build("world_place", "live", BuildOptions(extra={"http": FAST}), workspace)
    assert server.requests and all(r.startswith("/sparql?") for r in server.requests)


def test_us_place_keeps_lower48_and_dc(stub, workspace):
    server = stub(sparql_route)
    _, report = build("us_place", "live", options("wikidata", server.url), workspace)
    table = load("us_place", workspace).set_index("name")
    assert report.dropped == {"outside_lower48_and_dc": 1}  # Honolulu
    assert table.loc["Washington, D.C.", "state_id"] == "DC" and table.loc["Cook County", "entity_type"] == "county"
    assert set(table["entity_type"]) == {"city", "county", "college", "structure", "natural_place"}
    assert len(table) == 8


def test_art_text_dates_and_creator_split(stub, workspace):
    server = stub(sparql_route)
    _, report = build("art", "live", options("wikidata", server.url, page_size=2), workspace)
    table = load("art", workspace).set_index("name")
    assert table.loc["Hey Jude", "text"] == "The Beatles' Hey Jude"
    assert table.loc["Inception", "text"] == "Christopher Nolan's Inception"
    assert table.loc["Titanic", "year"] == pytest.approx(1997 + 304 / 365)  # the earlier of two dates (1 Nov)
    assert table.loc["The Road", "year"] == 2006.5  # dated to the year only: mid-year
    assert table.loc["Beloved", "year"] == pytest.approx(1987 + 257 / 365)  # month precision: the 15th
    assert table.loc["The Godfather", "decade"] == 1970 and table.loc["Imagine", "entity_type"] == "song"
    assert report.dropped == {"repeated_item": 1} and report.details["year_only_dates"] == 1
    assert table.groupby("creator")["is_test"].nunique().max() == 1


def test_wikidata_years_precision():
    values = pd.Series(["2000-03-01T00:00:00Z", "1999-00-00T00:00:00Z", "-0500-01-01T00:00:00Z", "junk"])
    years = wikidata_years(values, pd.Series([11, 9, 9, 11]))
    assert years[0] == pytest.approx(2000 + 60 / 366) and years[1] == 1999.5 and years[2] == -499.5
    assert np.isnan(years[3])
    assert np.isnan(wikidata_years(pd.Series(["1900-01-01T00:00:00Z"]), pd.Series([8]))[0])  # decade precision


def test_parse_wkt_point():
    assert parse_wkt_point("Point(2.35 48.85)") == (48.85, 2.35)
    assert parse_wkt_point("<http://www.wikidata.org/entity/Q405> Point(10 20)") is None  # the Moon
    assert parse_wkt_point("Point(200 10)") is None and parse_wkt_point("Point(a b)") is None


def test_malformed_sparql_response_names_url_and_field(stub, workspace):
    server = stub(lambda path, query: ok({"head": {"vars": ["item"]}}))
    with pytest.raises(WorldprobeError, match=r"no 'results' \(expected 'results.bindings'\)") as info:
        build("world_place", "live", options("wikidata", server.url), workspace)
    assert info.value.file.startswith(server.url + "?format=json&query=SELECT")
    assert info.value.field == "results.bindings"


def test_empty_results_are_a_clear_error(stub, workspace):
    server = stub(lambda path, query: ok({"head": {"vars": []}, "results": {"bindings": []}}))
    with pytest.raises(WorldprobeError, match="returned no rows") as info:
        build("art", "live", options("wikidata", server.url), workspace)
    assert info.value.file == server.url


def test_wikidata_retries_inside_a_build(stub, workspace):
    server = stub(sparql_route)
    server.script = [(429, {"Retry-After": "0"}, b""), (504, {}, b"gateway timeout")]
    _, report = build("world_place", "live", options("wikidata", server.url), workspace)
    assert report.inputs[0]["retry_waits_s"] == [0.0, 0.002]
    assert len(load("world_place", workspace)) == 11


# ------------------------------------------------------------------ NYC Open Data


def test_nyc_place_filters_title_case_and_grouping(stub, workspace):
    server = stub(socrata_route)
    _, report = build("nyc_place", "live", options("nyc_opendata", server.url, page_size=4), workspace)
    table = load("nyc_place", workspace)
    assert report.dropped == {"buoy": 1, "name_7_chars_or_shorter": 1, "no_point_geometry": 1}
    assert len(table) == 9 and len(server.requests) == 4  # 4 + 4 + 4 + an empty page
    texts = set(table["text"])
    assert {"Metropolitan Museum of Art", "FDNY Engine 54 Ladder 4", "PS 87 William Sherman"} <= texts
    by_name = table.drop_duplicates("name").set_index("name")
    assert by_name.loc["YANKEE STADIUM", "borough"] == "Bronx"
    assert by_name.loc["STATEN ISLAND FERRY TERMINAL", "facility_type"] == "Transportation Facility"
    assert (
        table.groupby("complexid").filter(lambda g: g.name != "0").groupby("complexid")["is_test"].nunique().max() == 1
    )
    assert text_leaks(table).empty


def test_union_groups_joins_shared_keys():
    a = pd.Series(["c1", "c1", "x", "y", "z"])
    b = pd.Series(["t1", "t2", "t2", "t3", "t4"])
    groups = union_groups(a, b)
    assert groups[0] == groups[1] == groups[2] and len({groups[2], groups[3], groups[4]}) == 3


def test_nyc_malformed_page(stub, workspace):
    server = stub(lambda path, query: ok({"error": True, "message": "query failed"}))
    with pytest.raises(WorldprobeError, match="expected a JSON array"):
        build("nyc_place", "live", options("nyc_opendata", server.url), workspace)


# ------------------------------------------------------------------ Age dataset


def test_historical_figure_from_age_dataset_url(stub, workspace):
    server = stub(file_route)
    opts = options("age_dataset", f"{server.url}/AgeDataset-V1.csv", per_decade=1)
    _, report = build("historical_figure", "live", opts, workspace)
    table = load("historical_figure", workspace).set_index("name")
    assert "Wolfgang Amadeus Mozart" not in table.index  # same death decade as Washington, larger Wikidata id
    assert "Ramesses II" not in table.index and "Elon Musk" not in table.index
    assert report.dropped == {"no_death_year": 1, "beyond_per_decade_cap": 1, "died_in_or_before_-1000": 1}
    assert table.loc["Julius Caesar", "year"] == -44 and table.loc["Julius Caesar", "century"] == -1
    assert table.loc["Augustine of Hippo", "occupation"] == "unknown"
    assert table.loc["Marie Curie", "occupation"] == "researcher" and len(table) == 10
    assert report.inputs[0]["licence"] == "CC BY 4.0" and len(report.inputs[0]["sha256"]) == 64
    build("historical_figure", "live", opts, workspace)  # no ETag/Last-Modified to re-validate with: fetched again
    assert len(server.requests) == 2
    pinned = options("age_dataset", f"{server.url}/AgeDataset-V1.csv", per_decade=1, sha256=report.inputs[0]["sha256"])
    _, again = build("historical_figure", "live", pinned, workspace)  # with its sha256 the cached copy is used
    assert len(server.requests) == 2 and again.inputs[0]["fetched"] == "cached, sha256 checked"


def test_historical_figure_from_local_file_and_missing_source(workspace, monkeypatch):
    monkeypatch.delenv("WORLDPROBE_AGE_DATASET_URL", raising=False)
    _, report = build("historical_figure", "live", BuildOptions(from_path=str(LIVE / "AgeDataset-V1.csv")), workspace)
    assert report.rows_out == 11 and report.dropped["died_in_or_before_-1000"] == 1
    with pytest.raises(WorldprobeError, match="no fixed public download URL"):
        build("historical_figure", "live", BuildOptions(), workspace)


def test_historical_figure_wrong_csv(tmp_path, workspace):
    bad = tmp_path / "people.csv"
    bad.write_text("Id,Name\nQ1,Someone\n")
    with pytest.raises(WorldprobeError, match="missing column") as info:
        build("historical_figure", "live", BuildOptions(from_path=str(bad)), workspace)
    assert info.value.file == bad


# ------------------------------------------------------------------ NYT Archive API


def test_headline_from_nyt_archive(stub, workspace, monkeypatch):
    server = stub(nyt_route)
    monkeypatch.setenv("NYT_API_KEY", "test-key")
    opts = options("nyt_archive", server.url + "/svc/archive/v1", years=[2019], months=[1, 2])
    _, report = build("headline", "live", opts, workspace)
    table = load("headline", workspace).set_index("name")
    assert report.dropped == {
        "not_an_article": 1, "other_desk_or_section": 1, "missing_field": 1, "question_mark": 1,
        "beyond_front_pages": 2, "ends_with_period": 1,
    }  # fmt: skip
    assert len(table) == 6 and table["text"].str.endswith(".").all()
    kim = table.loc["Kim Jong-un Warns U.S. in New Year's Speech"]
    assert kim["text"] == "Kim Jong-un Warns U.S. in New Year's Speech." and kim["news_desk"] == "Foreign"
    # 05:12 UTC on 1 January is 00:12 in New York: day 1 of 2019
    assert kim["year"] == pytest.approx(2019.0 + 12 / 60 / 24 / 365, abs=1e-3) and kim["pub_year"] == 2019
    shutdown = table.loc["Government Shutdown Enters Its Second Week"]
    assert shutdown["year"] == pytest.approx(2019 + 1 / 365, abs=1e-3)  # 2 January in New York
    assert "test-key" not in load_report("headline", workspace).to_json()


def test_headline_needs_a_key(workspace, monkeypatch):
    monkeypatch.delenv("NYT_API_KEY", raising=False)
    with pytest.raises(WorldprobeError, match="NYT_API_KEY is not set"):
        build("headline", "live", BuildOptions(), workspace)


def test_headline_bad_key_and_malformed_month(stub, workspace, monkeypatch):
    server = stub(nyt_route)
    opts = options("nyt_archive", server.url + "/svc/archive/v1", years=[2019], months=[1])
    monkeypatch.setenv("NYT_API_KEY", "wrong")
    with pytest.raises(WorldprobeError, match="HTTP 401") as info:
        build("headline", "live", opts, workspace)
    assert "wrong" not in str(info.value)
    monkeypatch.setenv("NYT_API_KEY", "test-key")
    server.script = [ok({"copyright": "x", "response": {"meta": {"hits": 0}}})]
    with pytest.raises(WorldprobeError, match="no 'response.docs'"):
        build("headline", "live", opts, workspace)


# ------------------------------------------------------------------ through the command line


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["worldprobe", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as done:
        code = done.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_live_build_with_limit_and_one_line_errors(stub, workspace, monkeypatch, capsys):
    server = stub(socrata_route)
    monkeypatch.setenv("WORLDPROBE_NYC_OPENDATA_URL", server.url)
    ws = str(workspace.root)
    code, out, _ = run(monkeypatch, capsys, "-w", ws, "datasets", "build", "nyc_place", "--source", "live",
                       "--limit", "5")  # fmt: skip
    assert code == 0 and "nyc_place: 4 rows" in out and "dropped 1 row(s): buoy" in out
    assert len(server.requests) == 1  # one page of at most 5 records
    monkeypatch.delenv("NYT_API_KEY", raising=False)
    code, _, err = run(monkeypatch, capsys, "-w", ws, "datasets", "build", "headline", "--source", "live")
    assert code == 2 and err.count("\n") == 1 and "NYT_API_KEY is not set" in err
