"""Name normalisation shared by all dataset sources: the text the model reads and fractional years.

The rules follow the paper's release code (docs/explanation/datasets.md) with its mistakes fixed: no text ends in
whitespace, runs of spaces left by removed parentheses collapse to one, and country labels are canonicalised so
that a country hold-out cannot leak through an alias (:mod:`worldprobe.countries`).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_SPACES = re.compile(r"\s+")
_PARENTHESES = re.compile(r"\s*\((.*?)\)")


def clean_whitespace(text: str) -> str:
    """Collapse runs of whitespace to one space and strip both ends."""
    return _SPACES.sub(" ", text).strip()


def world_place_text(name: str) -> str:
    """The world place name as the paper showed it to the model.

    "X (Y)" becomes "Y's X" (every parenthesised part is removed, the first one moves to the front);
    otherwise "A, B" becomes "B's A" (the last comma-separated part moves to the front).
    """
    match = _PARENTHESES.search(name)
    if match:
        rest = _PARENTHESES.sub("", name)
        return clean_whitespace(f"{match.group(1).strip()}'s {rest}")
    if "," in name:
        *head, last = name.split(",")
        return clean_whitespace(f"{last.strip()}'s {','.join(head)}")
    return clean_whitespace(name)


NYC_STOP_WORDS = frozenset({"AND", "OR", "OF", "THE", "A", "AT", "&", "IN", "TO"})
"""Words the paper writes in lower case in NYC names."""
NYC_ABBREVIATIONS = frozenset(
    {"FDNY", "NYCT", "YMCA", "LGA", "US", "NYC", "PS", "IS", "NYS", "UN", "NY", "EMS", "JCC", "NYU", "CC", "NYPD",
     "NYPA", "DHS"}
)  # fmt: skip
"""Abbreviations the paper keeps in upper case in NYC names (PS = public school, IS = intermediate school)."""


def nyc_title_case(name: str) -> str:
    """An ALL CAPS NYC point-of-interest name in Title Case with the paper's exceptions.

    Stop words are lower case (except as the first word), the paper's abbreviations stay upper case, every other
    word is capitalised, including each part of a hyphenated word ("PY-GIL" -> "Py-Gil").
    """
    words = []
    for position, word in enumerate(name.split()):
        if word in NYC_ABBREVIATIONS:
            words.append(word)
        elif word in NYC_STOP_WORDS and position > 0:
            words.append(word.lower())
        else:
            words.append("-".join(part.capitalize() for part in word.split("-")))
    return " ".join(words)


def art_text(creator: str, title: str) -> str:
    """ "<creator>'s <title>", or "<creator>' <title>" when the creator ends in "s"."""
    creator, title = clean_whitespace(creator), clean_whitespace(title)
    apostrophe = "'" if creator.endswith("s") else "'s"
    return f"{creator}{apostrophe} {title}"


def fractional_year(dates: pd.Series) -> pd.Series:
    """year + (day_of_year - 1) / days_in_year for a datetime Series (NaT stays NaN).

    Uses calendar fields, not integer timestamps, so it is right whatever the datetime unit (pandas 2 may store
    seconds or microseconds, where ``astype("int64")`` tricks are off by factors of 1000).
    """
    values = pd.to_datetime(dates)
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_localize(None)
    days_in_year = np.where(values.dt.is_leap_year, 366.0, 365.0)
    result = values.dt.year + (values.dt.dayofyear - 1) / days_in_year
    return result.astype(float)
