"""Reference geography read from the pinned archives (fetched once into the worldprobe cache)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from worldprobe import geodata


def test_country_names_are_canonical_and_unique():
    names = geodata.country_name_by_iso2()
    assert names["US"] == "United States"
    assert names["NL"] == "Netherlands"  # GeoNames says "The Netherlands"
    assert names["CZ"] == "Czech Republic"
    assert len(set(names.values())) == len(names)


def test_world_countries_contain_their_capitals():
    world = geodata.world_countries()
    assert {"name", "iso2", "geometry"} <= set(world.columns)
    assert 160 <= len(world) <= 200
    assert world["geometry"].map(lambda g: g.is_valid and not g.is_empty).all()
    found = geodata.locate(np.array([48.857, 35.68, -33.87]), np.array([2.35, 139.69, 151.21]), world)
    assert list(found) == ["France", "Japan", "Australia"]


def test_us_states_lower_48_and_dc():
    states = geodata.us_states()
    assert len(states) == 49
    assert set(states["state_id"]) == geodata.CONTIGUOUS_US
    assert {"AK", "HI"} <= set(geodata.us_states(contiguous=False)["state_id"])
    # Denver, Chicago, Washington DC, and a point in the Atlantic
    found = geodata.locate(
        np.array([39.7392, 41.8781, 38.8977, 35.0]),
        np.array([-104.9903, -87.6298, -77.0365, -60.0]),
        states,
        "state_id",
    )
    assert list(found) == ["CO", "IL", "DC", None]


def test_us_counties_names_and_points():
    counties = geodata.us_counties()
    assert 3000 < len(counties) < 3200
    assert counties["state_id"].isin(geodata.CONTIGUOUS_US).all()
    denver = counties[counties["fips"] == "08031"].iloc[0]
    assert denver["name"] == "Denver County"
    assert denver["geometry"].contains(shapely.Point(-104.9903, 39.7392))


@pytest.mark.parametrize(
    ("lat", "lon", "borough"),
    [
        (40.7829, -73.9654, "Manhattan"),  # Central Park
        (40.6602, -73.9690, "Brooklyn"),  # Prospect Park
        (40.7498, -73.8448, "Queens"),  # Flushing Meadows
        (40.8506, -73.8769, "Bronx"),  # Bronx Zoo
        (40.5795, -74.1502, "Staten Island"),
        (40.7178, -74.0431, None),  # Jersey City
    ],
)
def test_nyc_boroughs_point_in_polygon(lat, lon, borough):
    assert geodata.locate(np.array([lat]), np.array([lon]), geodata.nyc_boroughs())[0] == borough


def test_nyc_ntas_kinds():
    ntas = geodata.nyc_ntas()
    assert len(ntas) == 262
    assert set(ntas["borough"]) == set(geodata.nyc_boroughs()["name"])
    kinds = ntas["kind"].value_counts()
    assert kinds["neighborhood"] > 150 and kinds["park"] > 30
    central = ntas[ntas["name"] == "Central Park"].iloc[0]
    assert central["kind"] == "park" and central["borough"] == "Manhattan"


def test_locate_first_region_wins_and_empty_outside():
    squares = pd.DataFrame({"name": ["a", "b"], "geometry": [shapely.box(0, 0, 2, 2), shapely.box(1, 1, 3, 3)]})
    found = geodata.locate(np.array([1.5, 2.5, 10.0]), np.array([1.5, 2.5, 10.0]), squares)
    assert list(found) == ["a", "b", None]
