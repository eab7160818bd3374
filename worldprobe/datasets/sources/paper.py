"""The ``paper`` source: the authors' release CSVs (Gurnee & Tegmark, GitHub wesg52/world-models) as entity tables.

Each of the six datasets is read from its release CSV (downloaded from a pinned commit of the release into
``cache_dir("paper")`` and checked against its sha256 pin on every use, or ``--from`` a local file or URL, optionally
with ``--sha256``), checked cell by cell (errors name the file, the 0-based data row and the column),
and normalised to the entity table of docs/design.md. The release's own ``is_test`` split and row order are kept;
``entity_id`` is ``"<dataset>:<data row>"``. Rows whose text sits on both sides of the release split are listed in
the build report (``details["split_leaks"]``) and ``--drop-split-leaks`` removes their test side.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from worldprobe.checksums import checked_sha256, is_sha256, read_record
from worldprobe.countries import canonical_country
from worldprobe.datasets.builder import BuildContext, register_builder
from worldprobe.datasets.normalize import (
    art_text,
    clean_whitespace,
    fractional_year,
    nyc_title_case,
    world_place_text,
)
from worldprobe.datasets.schema import RANGES, refuse_repeated_columns
from worldprobe.errors import WorldprobeError
from worldprobe.http import fetch_file
from worldprobe.workspace import cache_dir

SOURCE = "paper"
RELEASE_COMMIT = "a572f162948ee185e9c842eb5fa15e23aad3d218"
RELEASE_URL = f"https://raw.githubusercontent.com/wesg52/world-models/{RELEASE_COMMIT}/data/entity_datasets/{{name}}.csv"
RELEASE_SHA256: dict[str, str] = {
    "world_place": "b1608f9410b48fe4ca71836d81baa5aa20d34d319cd7f98a725fd8545bdce040",
    "us_place": "95af51d5b80ba1a0085c431583294f4917b95628869130d65762a7e8bf6eff6e",
    "nyc_place": "72558b55c86e0f113fdb35f3cd7ef0dfb439820e36b47e654e5169cb094445cf",
    "art": "37ef497d0c2871c074c166a0c4f229c460aca092a90ecc83bd6f9d0f12bc3b41",
}
"""sha256 pins of the release files at ``RELEASE_COMMIT``; the other two are recorded on their first download (next
to the cached file) and every later use must match that record. Build reports keep the sha256 of every input."""
RELEASE_ROWS: dict[str, int] = {
    "world_place": 39_585, "us_place": 29_997, "nyc_place": 19_838, "historical_figure": 37_539, "art": 31_321,
    "headline": 28_389,
}  # fmt: skip
"""Rows of each release file (docs/explanation/datasets.md), e.g. for disk estimates before a download."""
RELEASE = "Gurnee & Tegmark (2024) release, github.com/wesg52/world-models (code MIT licence)"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class ReleaseFormat:
    """One release CSV: its exact columns (docs/explanation/datasets.md), licence, and converter to an entity table."""

    columns: tuple[str, ...]
    licence: str
    attribution: str
    convert: Callable[[ReleaseCsv], pd.DataFrame]


@dataclass(frozen=True)
class ReleaseCsv:
    """A release CSV read as strings, with parsers that name the file, row and column of a bad cell."""

    origin: str  # the URL or path shown in errors and recorded in the build report
    frame: pd.DataFrame

    def strings(self, column: str) -> pd.Series:
        """The column as stripped strings (missing cells are "")."""
        return self.frame[column].astype(str).str.strip()

    def numbers(
        self, column: str, *, required: bool = True, limits: tuple[float, float] | None = None, whole: bool = False
    ) -> pd.Series:
        """The column as floats; a non-number, a missing required value, a value outside ``limits`` or (``whole``)
        a fraction is an error."""
        raw = self.strings(column)
        values = pd.to_numeric(raw.where(raw != ""), errors="coerce").astype(float)
        self._raise_first(values.isna() & (raw != ""), column, raw, "is not a number")
        if required:
            self._raise_first(raw == "", column, raw, "is missing")
        if limits is not None:
            low, high = limits
            self._raise_first(~np.isfinite(values) & (raw != "") | (values < low) | (values > high), column, raw,
                              f"is outside [{low:g}, {high:g}]")  # fmt: skip
        if whole:
            self._raise_first(values.notna() & (values != np.floor(values)), column, raw, "is not a whole number")
        return values

    def dates(self, column: str, date_format: str) -> pd.Series:
        """The column as UTC datetimes (``date_format`` as in ``pd.to_datetime``); a bad or missing date is an error."""
        raw = self.strings(column)
        values = pd.to_datetime(raw.where(raw != ""), format=date_format, errors="coerce", utc=True)
        self._raise_first(values.isna(), column, raw, f"is not a date ({date_format})")
        return values

    def flags(self, column: str) -> pd.Series:
        """The column as booleans (True/False/1/0, any case); anything else is an error."""
        raw = self.strings(column).str.casefold()
        truth = raw.isin(["true", "1", "1.0"])
        self._raise_first(~truth & ~raw.isin(["false", "0", "0.0"]), column, self.strings(column), "is not True/False")
        return truth.astype(bool)

    def _raise_first(self, mask: pd.Series, column: str, raw: pd.Series, problem: str) -> None:
        if mask.any():
            row = int(np.flatnonzero(mask.to_numpy())[0])
            raise WorldprobeError(
                f"{column} {raw.iloc[row]!r} {problem} (line {row + 2} of the file)",
                file=self.origin, row=row, field=column,
            )  # fmt: skip


def _or_unknown(values: pd.Series) -> pd.Series:
    return values.where(values != "", UNKNOWN)


def _world(csv: ReleaseCsv) -> pd.DataFrame:
    name = csv.frame["name"].astype(str)
    return pd.DataFrame({
        "name": name,
        "text": name.map(world_place_text),
        "latitude": csv.numbers("latitude", limits=RANGES["latitude"]),
        "longitude": csv.numbers("longitude", limits=RANGES["longitude"]),
        "entity_type": csv.strings("entity_type"),
        "country": csv.strings("country").map(canonical_country),
        "country_label": csv.strings("country"),
        "entity_subtype": csv.strings("entity_subtype"),
        "population": csv.numbers("population", required=False),
        "total_area": csv.numbers("total_area", required=False),
        "page_views": csv.numbers("page_views", required=False),
        "is_test": csv.flags("is_test"),
    })  # fmt: skip


def _us(csv: ReleaseCsv) -> pd.DataFrame:
    name = csv.frame["name"].astype(str)
    entity_type = csv.strings("entity_type")
    is_zip = entity_type == "zip"
    text = name.map(clean_whitespace)
    text[is_zip] = text[is_zip].str.zfill(5)  # zips are 5-char zero-padded text ("01001")
    return pd.DataFrame({
        "name": name,
        "text": text,
        "latitude": csv.numbers("latitude", limits=RANGES["latitude"]),
        "longitude": csv.numbers("longitude", limits=RANGES["longitude"]),
        "entity_type": entity_type,
        "state_id": csv.strings("state_id"),
        "state_name": csv.strings("state_name"),
        "entity_subtype": csv.strings("entity_subtype"),
        "county_fips": csv.numbers("county_fips", required=False),
        "population": csv.numbers("population", required=False),
        "density": csv.numbers("density", required=False),
        "timezone": csv.strings("timezone"),
        "page_views": csv.numbers("page_views", required=False),
        "is_test": csv.flags("is_test"),
    })  # fmt: skip


def _nyc(csv: ReleaseCsv) -> pd.DataFrame:
    name = csv.frame["name"].astype(str)
    return pd.DataFrame({
        "name": name,
        "text": name.map(nyc_title_case),
        "latitude": csv.numbers("latitude", limits=RANGES["latitude"]),
        "longitude": csv.numbers("longitude", limits=RANGES["longitude"]),
        "entity_type": "point_of_interest",
        "borough": _or_unknown(csv.strings("borough_name")),
        "facility_type": _or_unknown(csv.strings("facility_t_name")),
        "complexid": csv.strings("complexid"),
        "borough_code": csv.strings("borough"),
        "facility_code": csv.strings("facility_t"),
        "nad83_x": csv.numbers("nad83_x", required=False),
        "nad83_y": csv.numbers("nad83_y", required=False),
        "poi_source": csv.strings("source"),
        "is_test": csv.flags("is_test"),
    })  # fmt: skip


def _figures(csv: ReleaseCsv) -> pd.DataFrame:
    name = csv.frame["name"].astype(str)
    death_year = csv.numbers("death_year", limits=RANGES["year"], whole=True)
    occupation = csv.strings("occupation").str.lower()
    return pd.DataFrame({
        "name": name,
        "text": name.map(clean_whitespace),
        "year": death_year,
        "entity_type": "person",
        "century": (death_year // 100).astype(int),  # as the release's death_century: floor(year / 100)
        "occupation": _or_unknown(occupation),
        "wiki_id": csv.strings("wiki_id"),
        "description": csv.strings("description"),
        "gender": csv.strings("gender"),
        "country": csv.strings("country"),
        "birth_year": csv.numbers("birth_year", required=False),
        "death_year": death_year,
        "age": csv.numbers("age", required=False),
        "cause_of_death": csv.strings("cause_of_death"),
        "is_test": csv.flags("is_test"),
    })  # fmt: skip


def _art(csv: ReleaseCsv) -> pd.DataFrame:
    title, creator = csv.strings("title"), csv.strings("creator")
    complete = (title != "") & (creator != "")
    text = pd.Series("", index=title.index, dtype=object)
    text[complete] = [art_text(c, t) for c, t in zip(creator[complete], title[complete], strict=True)]
    return pd.DataFrame({
        "name": csv.frame["title"].astype(str),
        "text": text,
        "year": fractional_year(csv.dates("release_date", "%Y-%m-%d")),
        "entity_type": csv.strings("entity_type"),
        "decade": csv.numbers("decade").astype(int),
        "creator": creator,
        "release_date": csv.strings("release_date"),
        "length": csv.numbers("length", required=False),
        "page_name": csv.strings("page_name"),
        "page_views": csv.numbers("page_views", required=False),
        "is_test": csv.flags("is_test"),
    })  # fmt: skip


HEADLINE_TOPICS = ("trump", "biden", "coronavirus", "covid", "obama", "clinton", "iraq", "afghanistan", "china", "iran")


def _headline(csv: ReleaseCsv) -> pd.DataFrame:
    headline = csv.frame["headline"].astype(str)
    table = pd.DataFrame({
        "name": headline,
        "text": headline.map(clean_whitespace),  # keeps the appended final period: the probed token
        "year": fractional_year(csv.dates("pub_date", "ISO8601")),
        "entity_type": "headline",
        "pub_year": csv.numbers("year", limits=RANGES["year"]).astype(int),
        "news_desk": csv.strings("news_desk"),
        "pub_date": csv.strings("pub_date"),
        "section": csv.strings("section"),
        "print_section": csv.strings("print_section"),
        "print_page": csv.numbers("print_page", required=False),
        "word_count": csv.numbers("word_count", required=False),
        "is_test": csv.flags("is_test"),
    })  # fmt: skip
    for topic in HEADLINE_TOPICS:
        table[f"is_{topic}"] = csv.flags(f"is_{topic}")
    return table


DBPEDIA = ("CC BY-SA 3.0", "DBpedia (dbpedia.org), from Wikipedia; page views from Wikimedia")
FORMATS: dict[str, ReleaseFormat] = {
    "world_place": ReleaseFormat(
        ("name", "entity_subtype", "country", "latitude", "longitude", "has_thumbnail", "page_views", "entity_type",
         "total_area", "population", "is_test"),
        *DBPEDIA, _world,
    ),
    "us_place": ReleaseFormat(
        ("name", "latitude", "longitude", "state_id", "state_name", "county_fips", "population", "density",
         "timezone", "entity_type", "entity_subtype", "page_views", "is_test"),
        "CC BY 4.0 (SimpleMaps US cities and zips); CC BY-SA 3.0 (DBpedia)",
        "SimpleMaps (simplemaps.com/data/us-cities, us-zips); DBpedia (dbpedia.org)", _us,
    ),
    "nyc_place": ReleaseFormat(
        ("name", "source", "complexid", "saftype", "pri_add", "modified", "faci_dom", "facility_t", "b7_sc", "placeid",
         "bin", "sos", "segmentid", "borough", "created", "latitude", "longitude", "nad83_x", "nad83_y",
         "borough_name", "facility_t_name", "is_test"),
        "NYC Open Data terms of use (public data)",
        "NYC Open Data, Points Of Interest (data.cityofnewyork.us, rxuy-2muj)", _nyc,
    ),
    "historical_figure": ReleaseFormat(
        ("wiki_id", "name", "description", "gender", "country", "occupation", "birth_year", "death_year",
         "cause_of_death", "age", "death_century", "death_decade", "is_test"),
        "CC BY 4.0",
        "Annamoradnejad & Annamoradnejad (2022), Age dataset (from Wikidata)", _figures,
    ),
    "art": ReleaseFormat(
        ("title", "creator", "release_date", "length", "page_name", "page_views", "entity_type", "is_test", "decade"),
        *DBPEDIA, _art,
    ),
    "headline": ReleaseFormat(
        ("headline", "word_count", "pub_date", "print_section", "print_page", "section", "news_desk", "year",
         *(f"is_{topic}" for topic in HEADLINE_TOPICS), "is_test"),
        "New York Times content: research use of headlines and metadata (NYT Archive API terms)",
        "The New York Times (via Kaggle, johnbandy/new-york-times-headlines)", _headline,
    ),
}  # fmt: skip


_BINARY_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\x1f\x8b": "a gzip archive",
    b"PK\x03\x04": "a zip archive",
    b"%PDF": "a PDF",
    b"BZh": "a bzip2 archive",
    b"\xfd7zXZ": "an xz archive",
    b"\xff\xd8\xff": "a JPEG image",
}


def read_release(path: Path, columns: tuple[str, ...], *, origin: str | None = None) -> ReleaseCsv:
    """Read a release CSV as strings; a non-CSV, an empty file or a missing column is a WorldprobeError."""
    origin = origin or str(path)
    with open(path, "rb") as handle:
        head = handle.read(8192)
    if not head.strip():
        raise WorldprobeError("the file is empty", file=origin, hint="re-download it or pass --from a good copy")
    kind = next((name for magic, name in _BINARY_SIGNATURES.items() if head.startswith(magic)), None)
    if kind or b"\x00" in head:
        raise WorldprobeError(f"not a CSV text file (it looks like {kind or 'binary data'})", file=origin,
                              hint="give the release CSV itself (uncompressed)")  # fmt: skip
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise WorldprobeError(f"not UTF-8 text ({error.reason} at byte {error.start})", file=origin) from None
    except pd.errors.ParserError as error:
        line = re.search(r"line (\d+)", str(error))
        row = int(line.group(1)) - 2 if line else None
        raise WorldprobeError(f"not a valid CSV: {str(error).strip()}", file=origin, row=row) from None
    refuse_repeated_columns(path, origin=origin)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise WorldprobeError(
            f"missing column(s) {missing}", file=origin, field=missing[0],
            hint=f"the release format has the columns {', '.join(columns)}",
        )  # fmt: skip
    if frame.empty:
        raise WorldprobeError("the file has a header but no data rows", file=origin)
    return ReleaseCsv(origin, frame)


def _is_url(location: str) -> bool:
    return urlparse(location).scheme in ("http", "https", "ftp")


def locate(dataset: str, from_path: str | None, sha256: str | None = None) -> tuple[Path, dict[str, object]]:
    """The local file to read and the build report's record of it (origin, how its sha256 was checked).

    The release file comes from the pinned commit and must match its sha256 pin (or, for the two files without a
    pin, the sha256 recorded at their first download); a cached copy is checked the same way on every use. A
    ``--from`` URL is re-validated with the server unless ``sha256`` is given; a ``--from`` file is checked against
    ``sha256`` when given.
    """
    if sha256 is not None and not is_sha256(sha256.lower()):
        raise WorldprobeError(f"--sha256 {sha256!r} is not a sha256 (64 hex digits)", field="sha256")
    sha256 = sha256.lower() if sha256 else None
    if from_path is None:
        url = RELEASE_URL.format(name=dataset)
        dest = cache_dir(SOURCE) / f"{dataset}.csv"
        pin = RELEASE_SHA256.get(dataset)
        if sha256 and pin and sha256 != pin:
            raise WorldprobeError(f"--sha256 {sha256} differs from the release pin {pin}", field="sha256")
        first = read_record(dest.with_name(dest.name + ".json")) or {}
        recorded = first.get("sha256") if first.get("url") == url else None
        fetched = fetch_file(url, dest, sha256=sha256 or pin or recorded, revalidate=False)
        how = ("pinned" if pin else "--sha256" if sha256 else "recorded at its first download" if recorded
               else "first download (recorded; later uses must match)")  # fmt: skip
        return fetched.path, {**fetched.record(), "sha256_check": how, "release_commit": RELEASE_COMMIT}
    if _is_url(from_path):
        tag = hashlib.sha256(from_path.encode()).hexdigest()[:12]
        dest = cache_dir(SOURCE) / f"{tag}-{Path(urlparse(from_path).path).name or dataset}"
        fetched = fetch_file(from_path, dest, sha256=sha256)
        how = "--sha256" if sha256 else "not pinned (re-validated with the server on every build)"
        return fetched.path, {**fetched.record(), "sha256_check": how}
    path = Path(from_path).expanduser()
    if not path.is_file():
        raise WorldprobeError("no such file", file=path, hint=f"give the path or URL of {dataset}.csv")
    if sha256 is not None:
        checked_sha256(path, sha256)
    return path, {"what": str(path.resolve()), "sha256_check": "--sha256" if sha256 else "not pinned (a local file)"}


def _digests(path: Path) -> dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            sha256.update(block)
            md5.update(block)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def build_release(dataset: str, context: BuildContext) -> pd.DataFrame:
    """``dataset``'s entity table from its release CSV (the registered ``paper`` builder)."""
    release_format = FORMATS[dataset]
    options = context.options
    path, fetched = locate(dataset, options.from_path, options.extra.get("sha256"))
    origin = str(fetched["what"])
    csv = read_release(path, release_format.columns, origin=origin)
    context.rows_in = len(csv.frame)
    pinned = RELEASE_SHA256.get(dataset) if options.from_path is None else None
    context.record_input(**{**fetched, **_digests(path), "pinned_sha256": pinned, "licence": release_format.licence,
                            "attribution": release_format.attribution, "release": RELEASE})  # fmt: skip
    table = release_format.convert(csv)
    table.insert(0, "entity_id", [f"{dataset}:{row}" for row in range(len(table))])
    table["source"] = SOURCE
    table = context.drop(table, table["text"] == "", "empty_text")
    table = context.keep_release_split(table, "the release's is_test column, kept as published (not re-drawn)")
    leaks = context.details["split_leaks"]
    if options.drop_split_leaks:
        leak_texts = {leak["text"] for leak in leaks}
        table = context.drop(table, table["is_test"] & table["text"].isin(leak_texts), "split_leak_test_side")
    context.notes.append(f"{len(leaks)} text(s) sit on both sides of the release split"
                         + ("; their test rows were dropped" if options.drop_split_leaks else " (kept; see details)"))
    context.details["columns_in"] = list(csv.frame.columns)
    return table


for _dataset in FORMATS:
    register_builder(_dataset, SOURCE)(partial(build_release, _dataset))
