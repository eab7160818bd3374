"""Canonical country names: every source's country label (DBpedia, GeoNames, Wikidata, the Smithsonian's volcano
list) -> one name, so that grouping and holding out by country mean the same thing in every dataset, probe and
question. A ground-floor module: datasets, probes, interventions and geodata all read it."""

from __future__ import annotations

import re

import numpy as np

_SPACES = re.compile(r"\s+")


def _clean(text: str) -> str:
    """Collapse runs of whitespace to one space and strip both ends."""
    return _SPACES.sub(" ", text).strip()


# Canonical country -> the labels that mean it in the release data (DBpedia country labels of world_place.csv,
# underscores shown as spaces). Sub-national labels (English counties, US regions, Chinese districts ...) map to
# their country so that holding a country out also holds out everything inside it. Overseas territories with
# their own geography (Puerto Rico, Greenland, Gibraltar ...) stay separate.
COUNTRY_ALIASES: dict[str, tuple[str, ...]] = {
    "United Kingdom": (
        "UK", "Great Britain", "England", "Scotland", "Wales", "Northern Ireland", "England, United Kingdom",
        "Kingdom of England", "Kingdom of Great Britain", "United Kingdom of Great Britain and Ireland",
        "England national rugby union team", "England Rugby", "Church in Wales",
        "Cambridgeshire", "Conrwall", "County Durham", "Cumbria", "Derbyshire", "Devon", "Dorset", "East Sussex",
        "Essex", "Gloucestershire", "Hampshire", "Hertfordshire", "Kent", "Lancashire", "Leicestershire",
        "Lincolnshire", "Norfolk", "North Yorkshire", "Northamptonshire", "Nottinghamshire", "Oxfordshire", "Rutland",
        "Somerset", "Staffordshire", "Suffolk", "Surrey", "Warwickshire", "West Sussex", "Worcestershire",
    ),
    "United States": (
        "United States of America", "USA", "US", "Hawaii", "Southwestern United States",
        "Northwestern United States", "Judith Basin County, Montana", "Hudson County", "Newark Basin",
        "List of Great Basin watersheds", "Crow Nation", "Hopi", "Rosebud Sioux Tribe",
    ),
    "China": ("People's Republic of China",),
    "Hong Kong": ("Hong Kong Special Administrative Region of the People's Republic of China", "Kwun Tong",
                  "Ngau Tau Kok"),
    "Taiwan": ("Republic of China", "Republic of China (Taiwan)"),
    "Ireland": ("Republic of Ireland", "Ireland (state)"),
    "Denmark": ("Kingdom of Denmark", "Danish Realm"),
    "Netherlands": ("Kingdom of the Netherlands",),
    "Russia": ("Russian Federation", "Russian Empire", "Kabardino-Balkaria"),
    "France": ("French Republic",),
    "Germany": ("German Democratic Republic", "East Germany", "Nazi Germany"),
    "Italy": ("Kingdom of Italy", "Papal States"),
    "Spain": ("Kingdom of Spain",),
    "Romania": ("Kingdom of Romania",),
    "India": ("Republic of India", "British Raj"),
    "Mexico": ("United Mexican States",),
    "South Korea": ("Republic of Korea",),
    "Myanmar": ("Burma", "Myanmar (Burma)"),
    "Palestine": ("State of Palestine", "Palestinian Territories"),
    "Bosnia and Herzegovina": ("Bosnia & Herzegovina",),
    "Democratic Republic of the Congo": ("DR Congo", "Democratic Republic of Congo"),
    "Ivory Coast": ("Côte d'Ivoire",),
    "Gambia": ("The Gambia",),
    "Bahamas": ("The Bahamas",),
    "East Timor": ("Timor-Leste",),
    "Georgia": ("Georgia (country)",),
    "Malta": ("Malta (island)", "Malta Colony"),
    "Solomon Islands": ("Solomon Islands (archipelago)",),
    "Kiribati": ("Republic of Kiribati",),
    "Antigua and Barbuda": ("Antigua", "Antigua & Barbuda"),
    "Saint Kitts and Nevis": ("Saint Kitts", "Nevis"),
    "Guernsey": ("Bailiwick of Guernsey",),
    "Western Sahara": ("Sahrawi Arab Democratic Republic",),
    "Somalia": ("Puntland",),
    "Azerbaijan": ("Republic of Artsakh", "Artsakh"),
    "Cameroon": ("Ambazonia",),
    "Japan": ("Hokkaido", "Nippon Sei Ko Kai"),
    "Belarus": ("Mogilev Region", "Minsk Raion"),
    "Chile": ("Aysén del General Carlos Ibáñez del Campo Region", "Los Ríos Region"),
    "Uganda": ("Otuke", "Buganda"),
    "Egypt": ("Old Cairo",),
    "Canada": ("Canada (New France)", "North Rustico, Prince Edward Island", "Newfoundland and Labrador",
               "Kainai Nation"),
    "South Africa": ("Cape Town, South Africa",),
    "Philippines": ("List of World Heritage Sites in the Philippines",),
    "Australia": ("Lake Eyre Basin",),
    "Antarctica": ("Ross Dependency", "British Antarctic Territory"),
    "Ethiopia": ("Ethiopian Empire",),
    "Indonesia": ("Dutch East Indies",),
    "Singapore": ("Straits Settlements",),
    "Iran": ("Achaemenid Empire",),
    "Sudan": ("ملف:Flag of Sudan.svg",),
    "Afghanistan": ("Flag",),
    "Cyprus": ("De jure",),
    "Israel": ("Mandatory Palestine",),
}  # fmt: skip
"""Notes on judgement calls: "Mandatory Palestine" rows lie in today's Israel; "De jure" rows are castles in
northern Cyprus; "Flag" is one Kabul palace; "Straits Settlements" rows are Singapore palaces."""

UNKNOWN_COUNTRY_LABELS = frozenset(
    {"De facto", "Caribbean", "Terra nullius", "List of countries and territories bordering the Atlantic Ocean",
     "Kashmir", "Golan Heights", "Channel Islands"}
)  # fmt: skip
"""Labels that name no single country (regions spanning several, disputed land, parsing debris) -> "unknown"."""

UNKNOWN_COUNTRY = "unknown"


def _country_key(label: str) -> str:
    return _clean(label.replace("_", " ")).casefold()


_COUNTRY_LOOKUP: dict[str, str] = {
    _country_key(alias): canonical for canonical, aliases in COUNTRY_ALIASES.items() for alias in (canonical, *aliases)
}
_UNKNOWN_KEYS = frozenset(_country_key(label) for label in UNKNOWN_COUNTRY_LABELS)


def canonical_country(name: str | None) -> str:
    """The canonical country of a DBpedia country label ("People's_Republic_of_China" -> "China").

    Underscores become spaces and surrounding whitespace/underscores go; known aliases and sub-national labels map
    to their country; labels that name no single country become "unknown"; any other label is returned cleaned,
    with its first letter upper case ("india" -> "India").
    """
    if name is None or (isinstance(name, float) and np.isnan(name)):
        return UNKNOWN_COUNTRY
    key = _country_key(str(name))
    if not key or key in _UNKNOWN_KEYS:
        return UNKNOWN_COUNTRY
    if key in _COUNTRY_LOOKUP:
        return _COUNTRY_LOOKUP[key]
    cleaned = _clean(str(name).replace("_", " "))
    return cleaned[0].upper() + cleaned[1:]
