"""Parsers of generated answers: years, coordinates and group names (countries, states, boroughs).

Every parser returns a value and a status; an answer it cannot read is ``unparsed`` (counted, never dropped).
The entity's own text is masked before parsing, so "Panama City is in the United States" is not read as Panama and
a year inside a headline is not read as the answer.

Years (:func:`parse_year`): the first year expression of the answer, or the first after a cue word of the question
("died", "released", ...) when there is one. Read: "1865", "AD 79", "79 AD", "483 BC" (negative), "c. 1850",
"the 1850s" (decade: midpoint 1855, status ``decade``), "the 19th century" (midpoint 1850, status ``century``), and
ranges "1850-1860" / "1850 to 1860" / "563-483 BC": by default the midpoint (status ``range``; a range wider than
:data:`MAX_RANGE_YEARS` is ``unparsed``), or the end for lifespans (``range_rule="end"``, the death-year question).
Bare numbers need three or four digits ("in 20" is unparsed) and are not ages ("aged 100"); a question may name
words whose year is another one ("born in 1743" for a death year), which are skipped.

Coordinates (:func:`parse_coordinates`): two coordinates with a decimal point, a degree sign, minutes or a
hemisphere letter ("40.71° N, 74.01° W", "40°42′46″N 74°0′21″W", "-33.87, 151.21"; N/S/E/W set the signs and which
is which, otherwise latitude comes first); out-of-range values are unparsed.

Groups (:class:`GroupVocabulary`): the earliest name or alias of a known group, longest alias first at a position;
short upper-case aliases ("US", "UK") only in upper case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_RANGE_YEARS = 100
"""Widest year range read as its midpoint; wider ranges are unparsed."""

UNPARSED = "unparsed"

_DASHES = str.maketrans({"–": "-", "—": "-", "‑": "-", "−": "-", "’": "'", "′": "'", "″": '"'})
_BC = r"(?:B\.?\s?C\.?(?:E\.?)?|BCE)"
_AD = r"(?:A\.?\s?D\.?|C\.?E\.?)"
_ERA = rf"(?P<era>{_BC}|{_AD})(?![A-Za-z])"
_NUM_A = r"(?<![\d.,])(?P<a>\d{1,4})(?!\d|[.,]\d)"
_NUM_B = r"(?<![\d.,])(?P<b>\d{1,4})(?!\d|[.,]\d)"
_YEAR_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("range", re.compile(_NUM_A + r"\s*(?:" + _ERA.replace("era", "era_a") + r")?\s*(?:-|to|until)\s*(?:c\.\s*)?"
                         + _NUM_B + r"(?:\s*" + _ERA + ")?", re.I)),
    ("century", re.compile(r"(?P<a>\d{1,2})(?:st|nd|rd|th)[\s-]+century(?:\s*" + _ERA + ")?", re.I)),
    ("decade", re.compile(r"(?<![\d.,])(?P<a>\d{2,3}0)'?s\b(?:\s*" + _ERA + ")?", re.I)),
    ("year", re.compile(r"\b(?P<pre>A\.?\s?D\.?)\s*(?P<a>\d{1,4})(?!\d)", re.I)),
    ("year", re.compile(_NUM_A + r"\s*" + _ERA, re.I)),
    ("year", re.compile(r"(?<!\bage )(?<!\baged )(?<![\d.,])(?P<a>\d{3,4})(?!\d|[.,]\d)", re.I)),
)  # fmt: skip


@dataclass(frozen=True)
class YearAnswer:
    """A parsed year (negative = BC) and how it was read: year, decade, century, range or unparsed."""

    year: float | None
    status: str


def mask(text: str, entity: str | None) -> str:
    """``text`` with every occurrence of ``entity`` (case-insensitive) replaced by spaces of the same length."""
    if not entity:
        return text
    return re.sub(re.escape(entity), lambda m: " " * len(m.group(0)), text, flags=re.I)


def _is_bc(match: re.Match[str], group: str = "era") -> bool:
    era = match.groupdict().get(group)
    return bool(era) and re.fullmatch(_BC, era.strip(), flags=re.I) is not None


def _read(kind: str, match: re.Match[str], range_rule: str) -> YearAnswer:
    a = int(match.group("a"))
    bc = _is_bc(match)
    if kind == "year":
        return YearAnswer(float(-a if bc else a), "year")
    if kind == "decade":
        return YearAnswer(float(-(a + 5) if bc else a + 5), "decade")
    if kind == "century":
        middle = (a - 1) * 100 + 50
        return YearAnswer(float(-middle if bc else middle), "century") if a >= 1 else YearAnswer(None, UNPARSED)
    text_b = match.group("b")
    b = int(text_b)
    if len(text_b) < len(match.group("a")) and not bc:  # "1850-60" -> 1860
        b = int(match.group("a")[: len(match.group("a")) - len(text_b)] + text_b)
    bc_a = _is_bc(match, "era_a") or (bc and not match.groupdict().get("era_a"))
    start, end = (-a if bc_a else a), (-b if bc else b)
    if range_rule == "end":
        return YearAnswer(float(end), "range")
    if abs(end - start) > MAX_RANGE_YEARS:
        return YearAnswer(None, UNPARSED)
    return YearAnswer((start + end) / 2.0, "range")


def parse_year(
    text: str, *, entity: str | None = None, cue: str | None = None, avoid: str | None = None,
    range_rule: str = "midpoint",
) -> YearAnswer:  # fmt: skip
    """The year an answer gives (see the module docstring for the rules). ``cue``: a regex of words after which the
    answer's year is expected (e.g. ``died|death``); ``avoid``: a regex of words whose year is another one (e.g.
    ``born``): a year right after it (within a few words) is skipped."""
    if range_rule not in ("midpoint", "end"):
        raise ValueError(f"range_rule must be midpoint or end, not {range_rule!r}")
    body = mask(str(text).translate(_DASHES), entity)
    start = 0
    if cue:
        found = re.search(cue, body, flags=re.I)
        start = found.end() if found else 0
    for offset in (start, 0) if start else (0,):
        while (best := _first_year(body, offset)) is not None:
            kind, match = best
            before = body[max(0, match.start() - 24) : match.start()]
            if avoid and re.search(rf"(?:{avoid})\W*(?:\w+\W+)?$", before, flags=re.I):
                offset = match.end()
                continue
            return _read(kind, match, range_rule)
    return YearAnswer(None, UNPARSED)


def _first_year(body: str, offset: int) -> tuple[str, re.Match[str]] | None:
    """The earliest year expression at or after ``offset`` (at one position, the pattern listed first)."""
    best: tuple[int, int, str, re.Match[str]] | None = None
    for rank, (kind, pattern) in enumerate(_YEAR_PATTERNS):
        match = pattern.search(body, offset)
        if match and (best is None or (match.start(), rank) < (best[0], best[1])):
            best = (match.start(), rank, kind, match)
    return None if best is None else (best[2], best[3])


# --- coordinates -------------------------------------------------------------------------------------------------

_COORD = re.compile(
    r"(?P<label>\b(?:lat(?:itude)?|lon(?:gitude)?|long|lng)\b\s*[:=]?\s*)?"
    r"(?P<sign>[-+])?\s*(?P<deg>\d{1,3}(?:\.\d+)?)(?![\d])\s*(?P<degsym>°|º|˚|\bdegrees?\b|\bdeg\b)?\s*"
    r"(?:(?P<min>\d{1,2}(?:\.\d+)?)\s*(?:'|\bminutes?\b|\bmin\b)\s*)?"
    r"(?:(?P<sec>\d{1,2}(?:\.\d+)?)\s*(?:\"|''|\bseconds?\b|\bsec\b)\s*)?"
    r"(?P<hemi>(?:north|south|east|west|[NSEW])(?![A-Za-z]))?",
    re.I,
)


@dataclass(frozen=True)
class CoordinateAnswer:
    """Parsed latitude and longitude (degrees, S and W negative) and the status ``coordinates`` or unparsed."""

    latitude: float | None
    longitude: float | None
    status: str


@dataclass(frozen=True)
class _Coord:
    value: float
    axis: str | None  # "lat" | "lon" | None (from the hemisphere or a label)
    marked: bool  # decimal point, degree sign, minutes or hemisphere: looks like a coordinate


def _coordinates(body: str) -> list[_Coord]:
    found = []
    for m in _COORD.finditer(body):
        value = float(m.group("deg")) + float(m.group("min") or 0) / 60 + float(m.group("sec") or 0) / 3600
        hemi = (m.group("hemi") or "")[:1].upper()
        label = (m.group("label") or "").strip().lower()
        if m.group("sign") == "-" or hemi in ("S", "W"):
            value = -value
        axis = "lat" if hemi in ("N", "S") else "lon" if hemi in ("E", "W") else None
        if axis is None and label:
            axis = "lat" if label.startswith("lat") else "lon"
        marked = bool("." in m.group("deg") or m.group("degsym") or m.group("min") or hemi or label)
        found.append(_Coord(value, axis, marked))
    return found


def parse_coordinates(text: str, *, entity: str | None = None) -> CoordinateAnswer:
    """Latitude and longitude from an answer (see the module docstring); unparsed unless two are found."""
    found = [c for c in _coordinates(mask(str(text).translate(_DASHES), entity)) if c.marked]
    lat = next((c for c in found if c.axis == "lat"), None)
    lon = next((c for c in found if c.axis == "lon"), None)
    rest = [c for c in found if c.axis is None]
    if lat is None and rest:
        lat = rest.pop(0)
    if lon is None and rest:
        lon = rest.pop(0)
    if lat is None or lon is None or abs(lat.value) > 90 or abs(lon.value) > 180:
        return CoordinateAnswer(None, None, UNPARSED)
    return CoordinateAnswer(lat.value, lon.value, "coordinates")


# --- group names -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupAnswer:
    """The canonical group an answer names, or None (status ``group`` or unparsed)."""

    group: str | None
    status: str


class GroupVocabulary:
    """Names and aliases of the groups of a dataset (countries, states, boroughs) -> canonical group."""

    def __init__(self, aliases: dict[str, str]) -> None:
        if not aliases:
            raise ValueError("a group vocabulary needs at least one name")
        self.aliases = dict(aliases)
        exact = {a for a in aliases if a.replace(".", "").isupper() and len(a.replace(".", "")) <= 3}
        folded = {a.casefold(): c for a, c in aliases.items() if a not in exact}
        self._canonical = {**folded, **{a: aliases[a] for a in exact}}
        parts = [(a, False) for a in folded] + [(a, True) for a in exact]
        parts.sort(key=lambda p: -len(p[0]))
        alternatives = "|".join(re.escape(a) if sensitive else f"(?i:{re.escape(a)})" for a, sensitive in parts)
        self._pattern = re.compile(rf"(?<![\w.])(?:{alternatives})(?![\w])")

    @property
    def groups(self) -> set[str]:
        """The canonical groups."""
        return set(self.aliases.values())

    def parse(self, text: str, *, entity: str | None = None) -> GroupAnswer:
        """The earliest group named in ``text``; the entity's own text is masked unless it is itself a group name
        (a country asked about as a place: "Japan" is in Japan)."""
        own_name = entity is not None and self._pattern.fullmatch(entity.strip()) is not None
        match = self._pattern.search(str(text) if own_name else mask(str(text), entity))
        if match is None:
            return GroupAnswer(None, UNPARSED)
        name = match.group(0)
        return GroupAnswer(self._canonical.get(name, self._canonical.get(name.casefold())), "group")
