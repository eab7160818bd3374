"""Live builders: the six datasets from public online sources, for users who are online.

| dataset | source |
|---|---|
| world_place, us_place, art | Wikidata SPARQL (query.wikidata.org), paged with LIMIT/OFFSET, popularity = sitelinks |
| nyc_place | NYC Open Data "Points of Interest" (Socrata API, ``$limit``/``$offset``), the paper's filters |
| historical_figure | the Age dataset CSV (CC BY 4.0); the paper's selection: first 350 per death decade by QID |
| headline | the NYT Archive API (key from ``$NYT_API_KEY``), the paper's desks and filters |

Base URLs come from ``BuildOptions.extra["urls"][<api>]``, else an environment variable (``ENDPOINTS``), else the
public default, so that tests can point them at a local stub. ``extra["http"]`` overrides :class:`HttpSettings`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from worldprobe.checksums import checked_sha256
from worldprobe.countries import canonical_country
from worldprobe.datasets.builder import BuildContext, BuildOptions, register_builder
from worldprobe.datasets.normalize import art_text, fractional_year, nyc_title_case, world_place_text
from worldprobe.datasets.sources.wikidata import (
    ART_YEARS,
    PRECISION_YEAR,
    WikidataKind,
    art_query,
    parse_wkt_point,
    place_query,
    sparql_rows,
    wikidata_years,
)
from worldprobe.errors import WorldprobeError
from worldprobe.http import HttpClient, HttpSettings, base_url, fetch_file, paginate, require
from worldprobe.workspace import cache_dir

SOURCE = "live"


@dataclass(frozen=True)
class Endpoint:
    """One public API: its default base URL, the env var that overrides it, politeness and licence."""

    name: str
    default: str | None
    env: str
    licence: str
    attribution: str
    settings: HttpSettings = HttpSettings()  # not used by the Age dataset, which is one file (fetch_file)


ENDPOINTS = {
    e.name: e
    for e in (
        Endpoint(
            "wikidata", "https://query.wikidata.org/sparql", "WORLDPROBE_WIKIDATA_SPARQL_URL", "CC0 1.0",
            "Wikidata contributors, Wikidata Query Service", HttpSettings(min_interval=1.0),
        ),
        Endpoint(
            "nyc_opendata", "https://data.cityofnewyork.us", "WORLDPROBE_NYC_OPENDATA_URL",
            "NYC Open Data Terms of Use (public data, free to reuse)",
            "City of New York, Points of Interest (Department of City Planning), NYC Open Data",
            HttpSettings(min_interval=0.2),
        ),
        Endpoint(
            "age_dataset", None, "WORLDPROBE_AGE_DATASET_URL", "CC BY 4.0",
            "Annamoradnejad & Annamoradnejad (2022), Age dataset: a structured general-purpose dataset on life, "
            "work, and death of 1.22 million distinguished people (ICWSM workshop)",
        ),
        Endpoint(
            "nyt_archive", "https://api.nytimes.com/svc/archive/v1", "WORLDPROBE_NYT_ARCHIVE_URL",
            "NYT APIs Terms of Use (non-commercial research; headlines (c) NYT)", "The New York Times Archive API",
            HttpSettings(min_interval=12.0),  # the Archive API allows 5 requests a minute
        ),
    )
}  # fmt: skip
DATASET_ENDPOINTS = {"world_place": "wikidata", "us_place": "wikidata", "art": "wikidata",
                     "nyc_place": "nyc_opendata", "historical_figure": "age_dataset", "headline": "nyt_archive"}
"""The API each live builder reads (what a study's dry run lists as its download)."""
NYT_KEY_ENV = "NYT_API_KEY"
NYC_RESOURCE_ID = "rxuy-2muj"  # data.cityofnewyork.us/City-Government/Points-Of-Interest/rxuy-2muj (the paper's)


def _client(api: str, options: BuildOptions, **kwargs: Any) -> tuple[HttpClient, str]:
    endpoint = ENDPOINTS[api]
    url = base_url(api, endpoint.default or "", endpoint.env, options.extra)
    settings = endpoint.settings.updated(options.extra.get("http"))
    return HttpClient(api, settings=settings, **kwargs), url


LIMIT_NOTE = ("with limit the download stops early, so the sample is drawn from the first rows the API returns (in "
              "its order), not from the whole source")


def _finish(
    context: BuildContext, table: pd.DataFrame, *, split_keys: pd.Series, split_rule: str, notes: Iterable[str],
    details: Mapping[str, Any] = (), download_stops_at_limit: bool = True,
) -> pd.DataFrame:  # fmt: skip
    """Add the seeded grouped split and the source column, and write down the notes and details."""
    table = context.split(table, split_keys, split_rule)
    table["source"] = SOURCE
    context.notes.extend(notes)
    if context.options.limit is not None and download_stops_at_limit:
        context.notes.append(LIMIT_NOTE)
    context.details.update(details)
    return table


# ---------------------------------------------------------------- Wikidata SPARQL (world_place, us_place, art)


WORLD_KINDS = (
    WikidataKind("populated_place", ("Q486972",)),  # human settlement
    WikidataKind("structure", ("Q811979",)),  # architectural structure
    WikidataKind("natural_place", ("Q35145263",)),  # natural geographic object
)
US_KINDS = (
    WikidataKind("city", ("Q1093829",)),  # city in the United States
    WikidataKind("county", ("Q47168",)),  # county of the United States
    WikidataKind("college", ("Q189004", "Q3918")),  # college, university
    WikidataKind("structure", ("Q811979",)),
    WikidataKind("natural_place", ("Q35145263",)),
)
ART_KINDS = (
    WikidataKind("movie", ("Q11424",), "P57", subclasses=False),  # film, director
    WikidataKind("book", ("Q7725634", "Q571"), "P50", subclasses=False),  # literary work / book, author
    WikidataKind("song", ("Q7366", "Q134556"), "P175", subclasses=False),  # song / single, performer
)
LOWER48_DC = frozenset(
    {"AL", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "ID", "IL", "IN", "IA", "KS", "KY", "LA", "ME", "MD",
     "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI",
     "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY"}
)  # fmt: skip
DEFAULT_MIN_SITELINKS = {"world_place": 10, "us_place": 3, "art": 5}
DEFAULT_PAGE_SIZE = 10_000


def _wikidata_frame(context: BuildContext, kinds: Iterable[WikidataKind], query_of: Callable) -> pd.DataFrame:
    """The bindings of every kind's query as one table (the rows read); the responses are recorded as an input."""
    options = context.options
    client, endpoint = _client("wikidata", options, headers={"Accept": "application/sparql-results+json"})
    page_size = int(options.extra.get("page_size", DEFAULT_PAGE_SIZE))
    frames = []
    for kind in kinds:
        rows = sparql_rows(
            client, endpoint, query_of(kind), page_size=page_size, limit=options.limit, label=kind.entity_type
        )
        frame = pd.DataFrame(rows, columns=None if rows else ["item", "itemLabel"])
        frames.append(frame.assign(entity_type=kind.entity_type))
    table = pd.concat(frames, ignore_index=True)
    if table.empty:
        raise WorldprobeError(
            "the SPARQL queries returned no rows", file=endpoint, hint="lower extra['min_sitelinks']?"
        )
    table["entity_id"] = table["item"].str.rsplit("/", n=1).str[-1]
    table["sitelinks"] = pd.to_numeric(table.get("sitelinks"), errors="coerce")
    context.record_input(**client.record(what=f"{endpoint} (SPARQL)", licence=ENDPOINTS["wikidata"].licence,
                                         attribution=ENDPOINTS["wikidata"].attribution))  # fmt: skip
    context.rows_in = len(table)
    return table


def _drop_unlabelled_and_repeats(table: pd.DataFrame, context: BuildContext) -> pd.DataFrame:
    table = context.drop(table, table["itemLabel"].str.fullmatch(r"Q\d+"), "no_english_label")
    return context.drop(table, table["entity_id"].duplicated(), "repeated_item")


def _coordinates(table: pd.DataFrame, context: BuildContext) -> pd.DataFrame:
    points = table["coord"].map(parse_wkt_point)
    table = context.drop(table, points.isna(), "bad_or_non_earth_coordinates")
    points = points[points.notna()]
    return table.assign(latitude=[p[0] for p in points], longitude=[p[1] for p in points])


def _min_sitelinks(options: BuildOptions, dataset: str) -> int:
    return int(options.extra.get("min_sitelinks", DEFAULT_MIN_SITELINKS[dataset]))


@register_builder("world_place", SOURCE)
def build_world_place(context: BuildContext) -> pd.DataFrame:
    """World places from Wikidata: settlements, structures and natural places with coordinates and a country."""
    minimum = _min_sitelinks(context.options, "world_place")
    raw = _wikidata_frame(context, WORLD_KINDS, lambda k: place_query(k, min_sitelinks=minimum))
    table = _coordinates(_drop_unlabelled_and_repeats(raw, context), context)
    table = table.assign(
        name=table["itemLabel"], text=table["itemLabel"].map(world_place_text),
        country=table["countryLabel"].map(canonical_country),
    )  # fmt: skip
    table = context.drop(table, ~(table["text"].str.len() > 0), "empty_text")
    columns = ["entity_id", "name", "text", "latitude", "longitude", "entity_type", "country", "sitelinks"]
    return _finish(
        context, table[columns], split_keys=table["text"],
        split_rule="grouped by text (identical names on one side), 20% test",
        notes=[f"popularity: at least {minimum} Wikipedia sitelinks", "one row per Wikidata item (first binding)"],
    )  # fmt: skip


@register_builder("us_place", SOURCE)
def build_us_place(context: BuildContext) -> pd.DataFrame:
    """US places from Wikidata (cities, counties, colleges, structures, natural places), state via the P131 chain."""
    minimum = _min_sitelinks(context.options, "us_place")
    raw = _wikidata_frame(context, US_KINDS, lambda k: place_query(k, min_sitelinks=minimum, us=True))
    table = _coordinates(_drop_unlabelled_and_repeats(raw, context), context)
    table = table.assign(name=table["itemLabel"], text=table["itemLabel"].str.strip(), state_id=table["iso"].str[3:])
    table = context.drop(table, ~table["state_id"].isin(LOWER48_DC), "outside_lower48_and_dc")
    columns = ["entity_id", "name", "text", "latitude", "longitude", "entity_type", "state_id", "sitelinks"]
    return _finish(
        context, table[columns], split_keys=table["text"],
        split_rule="grouped by text (identical names on one side), 20% test",
        notes=[f"popularity: at least {minimum} sitelinks", "state: ISO 3166-2 code (P300) of a P131 ancestor",
               "contiguous 48 states + DC"],
    )  # fmt: skip


@register_builder("art", SOURCE)
def build_art(context: BuildContext) -> pd.DataFrame:
    """Films, books and songs from Wikidata with creator (P57/P50/P175) and publication date (P577), 1950-2022."""
    minimum = _min_sitelinks(context.options, "art")
    raw = _wikidata_frame(context, ART_KINDS, lambda k: art_query(k, min_sitelinks=minimum))
    table = context.drop(raw, raw["itemLabel"].str.fullmatch(r"Q\d+"), "no_english_label")
    table = context.drop(table, table["creatorLabel"].str.fullmatch(r"Q\d+"), "creator_without_english_label")
    precision = pd.to_numeric(table["precision"], errors="coerce").fillna(0).astype(int)
    table = table.assign(year=wikidata_years(table["date"], precision), precision=precision)
    table = context.drop(table, table["year"].isna(), "date_coarser_than_a_year")
    # several dates / creators per work: keep the earliest date, then the first creator by name
    table = table.sort_values(["entity_id", "year", "creatorLabel"], kind="stable")
    table = context.drop(table, table["entity_id"].duplicated(), "repeated_item")
    table = table.assign(name=table["itemLabel"], creator=table["creatorLabel"].str.strip())
    table["text"] = [art_text(c, t) for c, t in zip(table["creator"], table["name"], strict=True)]
    table["decade"] = (np.floor(table["year"] / 10) * 10).astype(int)
    year_only = int((table["precision"] == PRECISION_YEAR).sum())
    columns = ["entity_id", "name", "text", "year", "entity_type", "creator", "decade", "sitelinks"]
    return _finish(
        context, table[columns], split_keys=table["creator"],
        split_rule="grouped by creator (the paper's rule), 20% test",
        notes=[f"popularity: at least {minimum} sitelinks", f"released {ART_YEARS[0]}-{ART_YEARS[1]}",
               f"{year_only} works dated to the year only are kept at mid-year (year + 0.5)"],
        details={"year_only_dates": year_only},
    )  # fmt: skip


# ---------------------------------------------------------------- NYC Open Data (nyc_place)

BOROUGHS = {"1": "Manhattan", "2": "Bronx", "3": "Brooklyn", "4": "Queens", "5": "Staten Island",
            "6": "Nassau County", "7": "Westchester", "8": "New Jersey"}  # fmt: skip
FACILITY_TYPES = {
    "1": "Residential", "2": "Education Facility", "3": "Cultural Facility", "4": "Recreational Facility",
    "5": "Social Services", "6": "Transportation Facility", "7": "Commercial",
    "8": "Government Facility (non public safety)", "9": "Religious Institution", "10": "Health Services",
    "11": "Public Safety", "12": "Water", "13": "Miscellaneous",
}  # fmt: skip
SOCRATA_PAGE_SIZE = 50_000


def socrata_records(payload: Any, url: str) -> list[dict[str, Any]]:
    """A Socrata JSON page: an array of record objects, or a clear error."""
    if not isinstance(payload, list) or not all(isinstance(r, Mapping) for r in payload):
        raise WorldprobeError("malformed response: expected a JSON array of records", file=url)
    return payload


def _geometry_point(geometry: Any) -> tuple[float, float] | None:
    """(latitude, longitude) of a GeoJSON Point as Socrata returns it, or None."""
    if not isinstance(geometry, Mapping) or geometry.get("type") != "Point":
        return None
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list | tuple) or len(coordinates) < 2:
        return None
    try:
        lon, lat = float(coordinates[0]), float(coordinates[1])
    except (TypeError, ValueError):
        return None
    return (lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None


def union_groups(*keys: pd.Series) -> np.ndarray:
    """Group labels that join rows sharing *any* of the keys (connected components), so no key straddles a split."""
    n = len(keys[0])
    codes = [pd.factorize(k.astype(str).to_numpy())[0] for k in keys]
    offsets = np.cumsum([0] + [int(c.max()) + 1 for c in codes])
    cols = np.concatenate([c + o for c, o in zip(codes, offsets[:-1], strict=True)])
    rows = np.tile(np.arange(n), len(keys))
    graph = coo_matrix((np.ones(len(rows)), (rows, n + cols)), shape=(n + offsets[-1],) * 2)
    return connected_components(graph, directed=False)[1][:n]


@register_builder("nyc_place", SOURCE)
def build_nyc_place(context: BuildContext) -> pd.DataFrame:
    """NYC points of interest from NYC Open Data (Socrata), with the paper's filters and Title Case names."""
    options = context.options
    client, base = _client("nyc_opendata", options)
    resource = options.extra.get("resource_id", NYC_RESOURCE_ID)
    url = f"{base}/resource/{resource}.json"
    page_size = int(options.extra.get("page_size", SOCRATA_PAGE_SIZE))

    def page(offset: int, size: int) -> list[dict[str, Any]]:
        return client.get_json(url, {"$limit": size, "$offset": offset, "$order": ":id"}, check=socrata_records)[0]

    records = list(tqdm(paginate(page, page_size=page_size, limit=options.limit), desc="nyc poi", unit=" rows"))
    raw = pd.DataFrame.from_records(records)
    context.record_input(**client.record(what=url, licence=ENDPOINTS["nyc_opendata"].licence,
                                         attribution=ENDPOINTS["nyc_opendata"].attribution))  # fmt: skip
    if raw.empty:
        raise WorldprobeError(
            "the API returned no records", file=url, hint="check the resource id (extra['resource_id'])"
        )
    context.rows_in = len(raw)
    for column in ("name", "the_geom", "borough", "facility_t", "complexid"):
        if column not in raw.columns:
            raise WorldprobeError(f"malformed response: no field '{column}' in any record", file=url, field=column)
    table = context.drop(raw, raw["name"].map(lambda v: not isinstance(v, str) or v.strip() == ""), "no_name")
    table = context.drop(table, table["name"].str.contains("BUOY|BOUY"), "buoy")  # the paper's filters
    table = context.drop(table, table["name"].str.len() <= 7, "name_7_chars_or_shorter")
    points = table["the_geom"].map(_geometry_point)
    table = context.drop(table, points.isna(), "no_point_geometry")
    points = points[points.notna()]
    complexid = table["complexid"].fillna("0").astype(str)
    table = table.assign(
        entity_id="nyc-" + table.get("placeid", pd.Series(table.index, index=table.index)).astype(str),
        name=table["name"], text=table["name"].map(nyc_title_case).str.strip(),
        latitude=[p[0] for p in points], longitude=[p[1] for p in points],
        borough=table["borough"].astype(str).map(BOROUGHS).fillna("unknown"),
        facility_type=table["facility_t"].astype(str).map(FACILITY_TYPES).fillna("unknown"), complexid=complexid,
    )  # fmt: skip
    table = context.drop(table, table["entity_id"].duplicated(), "repeated_placeid")
    table["entity_type"] = table["facility_type"]
    alone = "row:" + pd.Series(np.arange(len(table)), index=table.index).astype(str)
    complex_key = ("complex:" + table["complexid"]).where(table["complexid"] != "0", alone)
    groups = pd.Series(union_groups(complex_key, table["text"]), index=table.index)
    columns = ["entity_id", "name", "text", "latitude", "longitude", "entity_type", "borough", "facility_type",
               "complexid"]  # fmt: skip
    return _finish(
        context, table[columns], split_keys=groups,
        split_rule="grouped by complexid (the paper's rule) joined with identical text, 20% test",
        notes=["filters: no BUOY/BOUY, names longer than 7 characters (the paper's)", "names ALL CAPS -> Title Case"],
    )  # fmt: skip


# ---------------------------------------------------------------- Age dataset (historical_figure)

AGE_COLUMNS = {
    "Id": "wiki_id", "Name": "name", "Short description": "description", "Gender": "gender", "Country": "country",
    "Occupation": "occupation", "Birth year": "birth_year", "Death year": "death_year",
    "Manner of death": "cause_of_death", "Age of death": "age",
}  # fmt: skip
PER_DECADE = 350
DEATH_YEAR_AFTER = -1000


def _age_dataset_file(options: BuildOptions) -> tuple[Path, dict[str, Any]]:
    """The Age dataset CSV: ``--from`` (file or URL), else the URL from extra/env; a URL is downloaded into the cache
    and re-validated with the server on every build unless its sha256 is given (``--sha256``)."""
    endpoint = ENDPOINTS["age_dataset"]
    source = options.from_path or (options.extra.get("urls") or {}).get("age_dataset") or os.environ.get(endpoint.env)
    if not source:
        raise WorldprobeError(
            "the Age dataset has no fixed public download URL",
            field="from_path",
            hint=f"download AgeDataset-V1.csv (or its .zip; CC BY 4.0, e.g. from Kaggle) and pass --from PATH, "
            f"or set ${endpoint.env} to a URL",
        )
    expected = options.extra.get("sha256") or options.extra.get("age_sha256")
    if not re.match(r"^https?://", source):
        path = Path(source).expanduser()
        if not path.exists():
            raise WorldprobeError("file not found", file=path, field="from_path")
        entry = {"what": source, "sha256": checked_sha256(path, expected or None)}
    else:
        dest = cache_dir("live", "age_dataset") / Path(urlparse(source).path).name
        entry = fetch_file(source, dest, sha256=expected).record()
        path = dest
    entry.update(licence=endpoint.licence, attribution=endpoint.attribution)
    return path, entry


@register_builder("historical_figure", SOURCE)
def build_historical_figure(context: BuildContext) -> pd.DataFrame:
    """Historical figures from the Age dataset: the first 350 per death decade by Wikidata id, died after -1000."""
    path, entry = _age_dataset_file(context.options)
    context.record_input(**entry)
    try:
        raw = pd.read_csv(path, dtype={"Id": str})
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise WorldprobeError(f"not a readable CSV: {error}", file=path) from None
    missing = [c for c in AGE_COLUMNS if c not in raw.columns]
    if missing:
        raise WorldprobeError(
            f"missing column(s) {missing}", file=path, field=missing[0], hint="expected the Age dataset CSV"
        )
    context.rows_in = len(raw)
    per_decade = int(context.options.extra.get("per_decade", PER_DECADE))
    table = raw.rename(columns=AGE_COLUMNS)
    qid = pd.to_numeric(table["wiki_id"].str.extract(r"^Q(\d+)$", expand=False), errors="coerce")
    table = context.drop(table.assign(qid=qid), qid.isna(), "bad_wikidata_id")
    table["death_year"] = pd.to_numeric(table["death_year"], errors="coerce")
    table = context.drop(table, table["death_year"].isna(), "no_death_year")
    table = context.drop(table, table["name"].map(lambda v: not isinstance(v, str) or v.strip() == ""), "no_name")
    table = table.sort_values("qid", kind="stable")
    table["death_decade"] = (table["death_year"] // 10).astype(int)
    table = context.drop(table, table.groupby("death_decade").cumcount() >= per_decade, "beyond_per_decade_cap")
    table = context.drop(table, table["death_year"] <= DEATH_YEAR_AFTER, "died_in_or_before_-1000")
    table = table.assign(
        entity_id=table["wiki_id"], text=table["name"].str.strip(), year=table["death_year"].astype(float),
        century=(table["death_year"] // 100).astype(int), entity_type="person",
        occupation=table["occupation"].fillna("unknown").astype(str).str.lower(),
    )  # fmt: skip
    columns = ["entity_id", "name", "text", "year", "entity_type", "century", "occupation", "death_decade",
               "birth_year", "gender", "country", "description"]  # fmt: skip
    table[columns[-3:]] = table[columns[-3:]].astype("string")
    return _finish(
        context, table[columns], split_keys=table["text"],
        split_rule="grouped by text (identical names on one side), 20% test",
        notes=[f"the paper's selection: first {per_decade} per death decade by Wikidata id, death year > -1000",
               "occupation lower-cased, 'unknown' when missing"], download_stops_at_limit=False,
    )  # fmt: skip


# ---------------------------------------------------------------- NYT Archive API (headline)

NYT_DESKS = (("Foreign", "World"), ("National", "U.S."), ("Politics", "U.S."), ("Washington", "U.S."), ("Obits", None))
NYT_YEARS = tuple(range(2010, 2021))
NYT_TIMEZONE = "America/New_York"  # pub_date is UTC; the paper's dates are New York days


def nyt_docs(payload: Any, url: str) -> list[dict[str, Any]]:
    """The article documents of an Archive API month (``response.docs``), or a clear error."""
    docs = require(payload, "response.docs", url=url, kind=list)
    if not all(isinstance(d, Mapping) for d in docs):
        raise WorldprobeError("malformed response: a document is not an object", file=url, field="response.docs")
    return docs


def _nyt_docs(options: BuildOptions) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    key = options.extra.get("nyt_api_key") or os.environ.get(NYT_KEY_ENV)
    if not key:
        raise WorldprobeError(
            f"the NYT Archive API needs a key: ${NYT_KEY_ENV} is not set",
            field=NYT_KEY_ENV,
            hint="get a free key at developer.nytimes.com (Archive API) and export it",
        )
    client, base = _client("nyt_archive", options, secret_params=frozenset({"api-key"}))
    years = [int(y) for y in options.extra.get("years", NYT_YEARS)]
    months = [int(m) for m in options.extra.get("months", range(1, 13))]
    docs: list[dict[str, Any]] = []
    for year, month in tqdm([(y, m) for y in years for m in months], desc="nyt archive", unit=" months"):
        page, _ = client.get_json(f"{base}/{year}/{month}.json", {"api-key": key}, check=nyt_docs)
        docs.extend(page)
        if options.limit is not None and len(docs) >= options.limit:
            break
    entry = client.record(what=f"{base}/<year>/<month>.json", licence=ENDPOINTS["nyt_archive"].licence,
                          attribution=ENDPOINTS["nyt_archive"].attribution)  # fmt: skip
    return docs, entry


def _nyt_frame(docs: list[Mapping[str, Any]]) -> pd.DataFrame:
    def headline(doc: Mapping[str, Any]) -> Any:
        value = doc.get("headline")
        return value.get("main") if isinstance(value, Mapping) else None

    return pd.DataFrame(
        {
            "entity_id": [d.get("_id") or d.get("uri") for d in docs],
            "headline": [headline(d) for d in docs],
            "pub_date": [d.get("pub_date") for d in docs],
            "news_desk": [d.get("news_desk") for d in docs],
            "section": [d.get("section_name") for d in docs],
            "document_type": [d.get("document_type") for d in docs],
            "print_page": [d.get("print_page") for d in docs],
            "print_section": [d.get("print_section") for d in docs],
            "word_count": [d.get("word_count") for d in docs],
        }
    )


@register_builder("headline", SOURCE)
def build_headline(context: BuildContext) -> pd.DataFrame:
    """NYT headlines 2010-2020 from the Archive API, desks Foreign/National/Politics/Washington/Obits, + "."."""
    docs, entry = _nyt_docs(context.options)
    context.record_input(**entry)
    raw = _nyt_frame(docs)
    context.rows_in = len(raw)
    table = context.drop(raw, raw["document_type"] != "article", "not_an_article")
    on_desk = np.zeros(len(table), dtype=bool)
    for desk, section in NYT_DESKS:
        on_desk |= ((table["news_desk"] == desk) & ((table["section"] == section) if section else True)).to_numpy()
    table = context.drop(table, ~on_desk, "other_desk_or_section")
    table = context.drop(table, table[["entity_id", "headline", "pub_date", "print_page"]].isna().any(axis=1),
                         "missing_field")  # fmt: skip
    table = context.drop(table, table["headline"].str.contains("?", regex=False), "question_mark")
    table = context.drop(table, ~table["print_page"].astype(str).str.isnumeric(), "print_page_not_a_number")
    page = table["print_page"].astype(int)
    foreign = table["news_desk"] == "Foreign"
    table = context.drop(table, (foreign & (page > 5)) | (~foreign & (page > 10)), "beyond_front_pages")
    table = context.drop(table, table["headline"].str.strip().str.endswith("."), "ends_with_period")
    dates = pd.to_datetime(table["pub_date"], utc=True, errors="coerce", format="ISO8601")
    table = context.drop(table, dates.isna(), "bad_pub_date")
    dates = dates[dates.notna()]
    table = context.drop(table, table["entity_id"].duplicated(), "repeated_article")
    dates = dates[table.index].dt.tz_convert(NYT_TIMEZONE)
    table = table.assign(
        name=table["headline"], text=table["headline"].str.strip() + ".", year=fractional_year(dates),
        pub_year=dates.dt.year.astype(int), entity_type="headline", print_page=table["print_page"].astype(int),
    )  # fmt: skip
    columns = ["entity_id", "name", "text", "year", "entity_type", "pub_year", "news_desk", "section",
               "print_page", "print_section", "word_count"]  # fmt: skip
    return _finish(
        context, table[columns], split_keys=table["text"],
        split_rule="grouped by text (identical headlines on one side), 20% test",
        notes=["the paper's filters: articles only; desks Foreign(World)/National,Politics,Washington(U.S.)/Obits; "
               "print page <= 10 (Foreign <= 5); no '?'; headline + '.'"],
    )  # fmt: skip
