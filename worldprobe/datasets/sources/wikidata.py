"""Wikidata for the live source: the SPARQL queries of places and works (by kind, with a sitelinks floor), paged
query results read into rows, WKT points and dated values read into coordinates and years.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from tqdm import tqdm

from worldprobe.datasets.normalize import fractional_year
from worldprobe.errors import WorldprobeError
from worldprobe.http import HttpClient, paginate, require

ART_YEARS = (1950, 2022)
_PLACE_QUERY = """SELECT DISTINCT ?item ?itemLabel ?coord ?countryLabel ?sitelinks{state_vars} WHERE {{
  VALUES ?class {{ {classes} }}
  ?item wdt:P31{path} ?class ;
        wdt:P625 ?coord ;
        wdt:P17 ?country ;
        wikibase:sitelinks ?sitelinks .{state}
  FILTER(?sitelinks >= {min_sitelinks})
  SERVICE wikibase:label {{ bd:serviceParam wikibase:language "en". }}
}}
ORDER BY ?item ?country ?coord{state_vars}"""
_US_STATE = """
  ?item wdt:P17 wd:Q30 ;
        wdt:P131+ ?state .
  ?state wdt:P300 ?iso .
  FILTER(STRSTARTS(?iso, "US-"))"""
_ART_QUERY = """SELECT DISTINCT ?item ?itemLabel ?creatorLabel ?date ?precision ?sitelinks WHERE {{
  VALUES ?class {{ {classes} }}
  ?item wdt:P31 ?class ;
        wdt:{creator} ?creator ;
        p:P577/psv:P577 [ wikibase:timeValue ?date ; wikibase:timePrecision ?precision ] ;
        wikibase:sitelinks ?sitelinks .
  FILTER(?sitelinks >= {min_sitelinks} && YEAR(?date) >= {first_year} && YEAR(?date) <= {last_year})
  SERVICE wikibase:label {{ bd:serviceParam wikibase:language "en". }}
}}
ORDER BY ?item ?creator ?date ?precision"""
"""Both queries order by every bound variable: a total order, so LIMIT/OFFSET pages neither skip nor repeat rows
and "the first binding of an item" is the same on every run. DISTINCT folds items reached through several classes."""
_WKT_POINT = re.compile(r"^\s*Point\(\s*(\S+)\s+(\S+)\s*\)\s*$", re.IGNORECASE)
_WIKIDATA_DATE = re.compile(r"^([+-]?\d{1,6})-(\d\d)-(\d\d)T")
PRECISION_YEAR, PRECISION_MONTH, PRECISION_DAY = 9, 10, 11
"""Wikidata's time precisions: a year, a month, a day."""


@dataclass(frozen=True)
class WikidataKind:
    """One entity type fetched from Wikidata: its classes (QIDs) and, for works, the creator property."""

    entity_type: str
    classes: tuple[str, ...]
    creator_property: str | None = None
    subclasses: bool = True  # follow wdt:P279* from the class (places); works use direct instances only


def place_query(kind: WikidataKind, *, min_sitelinks: int, us: bool = False) -> str:
    """The SPARQL query (without LIMIT/OFFSET) for places of one kind."""
    return _PLACE_QUERY.format(
        classes=" ".join(f"wd:{q}" for q in kind.classes), path="/wdt:P279*" if kind.subclasses else "",
        state_vars=" ?iso" if us else "", state=_US_STATE if us else "", min_sitelinks=min_sitelinks,
    )  # fmt: skip


def art_query(kind: WikidataKind, *, min_sitelinks: int, years: tuple[int, int] = ART_YEARS) -> str:
    """The SPARQL query (without LIMIT/OFFSET) for works of one kind with creator and date."""
    return _ART_QUERY.format(
        classes=" ".join(f"wd:{q}" for q in kind.classes), creator=kind.creator_property, min_sitelinks=min_sitelinks,
        first_year=years[0], last_year=years[1],
    )  # fmt: skip


def sparql_bindings(payload: Any, url: str) -> list[dict[str, str]]:
    """The rows of a SPARQL JSON result (``results.bindings``) as ``{variable: value}`` dicts, or a clear error."""
    rows = []
    for binding in require(payload, "results.bindings", url=url, kind=list):
        if not isinstance(binding, Mapping):
            raise WorldprobeError("malformed response: a binding is not an object", file=url, field="results.bindings")
        rows.append({var: require(cell, "value", url=url) for var, cell in binding.items()})
    return rows


def sparql_rows(client: HttpClient, endpoint: str, query: str, *, page_size: int, limit: int | None, label: str):
    """All result rows of a paged SELECT query as ``{variable: value}`` dicts (paged by appending LIMIT/OFFSET)."""

    def page(offset: int, size: int) -> list[dict[str, str]]:
        params = {"query": f"{query}\nLIMIT {size} OFFSET {offset}", "format": "json"}
        return client.get_json(endpoint, params, check=sparql_bindings)[0]

    rows = paginate(page, page_size=page_size, limit=limit)
    return list(tqdm(rows, desc=f"wikidata {label}", unit=" rows", leave=False))


def parse_wkt_point(value: str) -> tuple[float, float] | None:
    """(latitude, longitude) from a Wikidata ``Point(lon lat)`` literal; None if not an Earth point in range."""
    match = _WKT_POINT.match(value) if isinstance(value, str) else None
    if match is None:  # other globes are written "<http://www.wikidata.org/entity/Q405> Point(...)"
        return None
    try:
        lon, lat = float(match.group(1)), float(match.group(2))
    except ValueError:
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def wikidata_years(values: pd.Series, precisions: pd.Series) -> pd.Series:
    """Fractional years of Wikidata time values at their precision (day exact, month at the 15th, year + 0.5).

    NaN where the value is unreadable, coarser than a year, or outside pandas' date range.
    """
    parts = values.astype(str).str.extract(_WIKIDATA_DATE).apply(pd.to_numeric, errors="coerce")
    year, month, day = parts[0], parts[1].clip(lower=1), parts[2].clip(lower=1)
    day = day.where(precisions >= PRECISION_DAY, 15)
    stamps = pd.to_datetime(
        pd.DataFrame({"year": year, "month": month, "day": day}).where(year.between(1678, 2261)), errors="coerce"
    )
    result = fractional_year(stamps).where(precisions >= PRECISION_MONTH, year + 0.5)
    return result.where(precisions >= PRECISION_YEAR)
