"""Name normalisation (world names, NYC title case, art text, fractional years) and canonical countries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import paper_csv

from worldprobe.countries import COUNTRY_ALIASES, UNKNOWN_COUNTRY, UNKNOWN_COUNTRY_LABELS, canonical_country
from worldprobe.datasets.normalize import (
    art_text,
    clean_whitespace,
    fractional_year,
    nyc_title_case,
    world_place_text,
)


@pytest.mark.parametrize(
    "name,text",
    [
        ("Under (restaurant)", "restaurant's Under"),  # the paper left a trailing space here
        ("Landmark Theatre (Syracuse, New York)", "Syracuse, New York's Landmark Theatre"),  # parentheses win
        ("Kensington (Olympia) station", "Olympia's Kensington station"),  # no double space
        ("Chapel Street, Melbourne", "Melbourne's Chapel Street"),
        ("St Mary's Church, Mary Street, Dublin", "Dublin's St Mary's Church, Mary Street"),  # last part moves
        ("7, Lok Kalyan Marg", "Lok Kalyan Marg's 7"),
        ("San Giorgio Maggiore (church), Venice", "church's San Giorgio Maggiore, Venice"),
        ("Afsluitdijk ", "Afsluitdijk"),
        ("Fort (unclosed, comma", "comma's Fort (unclosed"),  # no closing parenthesis: the comma rule applies
        ("Zürich", "Zürich"),
    ],
)
def test_world_place_text(name, text):
    assert world_place_text(name) == text


@pytest.mark.parametrize(
    "name,text",
    [
        ("THE MUSEUM OF THE CITY OF NEW YORK", "The Museum of the City of New York"),
        ("PS 123 MAHALIA JACKSON", "PS 123 Mahalia Jackson"),
        ("IS 61 WILLIAM A MORRIS", "IS 61 William a Morris"),  # the paper's rule: "A" is a stop word (not first)
        ("FDNY ENGINE 10 AND LADDER 10", "FDNY Engine 10 and Ladder 10"),
        ("NYPD 1ST PRECINCT", "NYPD 1st Precinct"),
        ("YMCA OF GREATER NEW YORK", "YMCA of Greater New York"),
        ("MARINE PY-GIL HODGES MEMORIAL", "Marine Py-Gil Hodges Memorial"),
        ("A PHILIP RANDOLPH  CAMPUS HS ", "A Philip Randolph Campus Hs"),
        ("BARNES & NOBLE AT UNION SQ", "Barnes & Noble at Union Sq"),
    ],
)
def test_nyc_title_case(name, text):
    assert nyc_title_case(name) == text


@pytest.mark.parametrize(
    "creator,title,text",
    [
        ("Stephen King", "It", "Stephen King's It"),
        ("Pablo Fenjves", "If I Did It", "Pablo Fenjves' If I Did It"),
        ("The Beatles", "Help!", "The Beatles' Help!"),
        (" Ridley  Scott", "Blade Runner ", "Ridley Scott's Blade Runner"),
    ],
)
def test_art_text(creator, title, text):
    assert art_text(creator, title) == text


def test_clean_whitespace():
    assert clean_whitespace("  a \t b\n") == "a b"


@pytest.mark.parametrize(
    "label,country",
    [
        ("United_Kingdom", "United Kingdom"),
        ("England", "United Kingdom"),
        ("Scotland", "United Kingdom"),
        ("Wales", "United Kingdom"),
        ("Northern_Ireland", "United Kingdom"),
        ("Derbyshire", "United Kingdom"),
        ("England,_United_Kingdom", "United Kingdom"),
        ("China", "China"),
        ("People's_Republic_of_China", "China"),
        ("Republic_of_China", "Taiwan"),
        ("United_States", "United States"),
        ("United_States_of_America", "United States"),
        ("United_States_", "United States"),
        ("USA", "United States"),
        ("Republic_of_Ireland", "Ireland"),
        ("Bosnia_&_Herzegovina", "Bosnia and Herzegovina"),
        ("india", "India"),
        ("Georgia_(country)", "Georgia"),
        ("Sri_Lanka", "Sri Lanka"),  # not an alias: underscores become spaces
        ("Puerto_Rico", "Puerto Rico"),  # a territory with its own geography stays separate
        ("Caribbean", UNKNOWN_COUNTRY),
        ("", UNKNOWN_COUNTRY),
        (None, UNKNOWN_COUNTRY),
    ],
)
def test_canonical_country(label, country):
    assert canonical_country(label) == country


def test_alias_table_is_consistent():
    for canonical, aliases in COUNTRY_ALIASES.items():
        assert canonical_country(canonical) == canonical
        for alias in aliases:
            assert canonical_country(alias) == canonical, alias
            assert canonical_country(alias.replace(" ", "_")) == canonical, alias
    canonicals = set(COUNTRY_ALIASES)
    aliases = [a for group in COUNTRY_ALIASES.values() for a in group]
    assert len(aliases) == len(set(aliases)) and not canonicals & set(aliases)


def test_aliases_come_from_the_release_and_cover_its_constituent_countries():
    countries = pd.read_csv(paper_csv("world_place"), usecols=["country"], dtype=str)["country"]
    labels = {clean_whitespace(c.replace("_", " ")).casefold() for c in countries.unique()}
    listed = [a for group in COUNTRY_ALIASES.values() for a in group] + sorted(UNKNOWN_COUNTRY_LABELS)
    assert [a for a in listed if a.casefold() not in labels] == []  # every alias is a real release value
    canonical = countries.map(canonical_country)
    by_label = dict(zip(countries, canonical, strict=True))
    for label in ("England", "Scotland", "Wales", "Northern_Ireland", "UK", "United_Kingdom"):
        assert by_label[label] == "United Kingdom"
    assert by_label["People's_Republic_of_China"] == by_label["China"] == "China"
    assert by_label["United_States_of_America"] == by_label["United_States"] == "United States"
    assert countries.nunique() == 365 and canonical.nunique() == 225
    assert (canonical == "United Kingdom").sum() == 5667  # 4,096 United_Kingdom + England, Scotland, counties ...


def test_fractional_year_calendar():
    dates = pd.Series(pd.to_datetime(["2000-01-01", "2000-12-31", "2001-07-02", "1999-12-31", None]))
    expected = [2000.0, 2000 + 365 / 366, 2001 + 182 / 365, 1999 + 364 / 365, np.nan]
    np.testing.assert_allclose(fractional_year(dates).to_numpy(), expected)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_fractional_year_does_not_depend_on_datetime_unit(unit):
    dates = pd.Series(pd.to_datetime(["1986-09-15", "2020-02-29"])).astype(f"datetime64[{unit}]")
    np.testing.assert_allclose(fractional_year(dates).to_numpy(), [1986 + 257 / 365, 2020 + 59 / 366])


def test_fractional_year_timezone_aware():
    dates = pd.to_datetime(pd.Series(["2010-03-24T04:00:00+0000"]), utc=True)
    assert fractional_year(dates).iloc[0] == pytest.approx(2010 + 82 / 365)
