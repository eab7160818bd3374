"""The question each dataset asks the model, how it is rendered (chat template or seeded few-shot prompt), how its
answer is parsed and what it is checked against.

Rendering keeps the character span of the entity inside the prompt, so the entity's tokens (and the last one, where
steering acts) are found from the tokenizer's offset mapping, as extraction finds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from worldprobe.datasets.registry import get_spec
from worldprobe.errors import WorldprobeError
from worldprobe.extract.tokens import EncodedEntity
from worldprobe.interventions.parse import GroupVocabulary, parse_coordinates, parse_year

FORMATS = ("auto", "chat", "fewshot")


@dataclass(frozen=True)
class Question:
    """One question about an entity: its wording, answer kind, truth columns and token budget."""

    name: str
    kind: str  # "year" | "coordinates" | "group"
    template: str  # "{entity}" marks the entity text
    instruction: str  # appended to the question in the chat format
    truth: tuple[str, ...]  # entity-table columns the answer is checked against
    max_new_tokens: int
    cue: str | None = None  # regex of words after which a year answer is expected
    avoid: str | None = None  # regex of words whose following year is another one (birth for a death year)
    range_rule: str = "midpoint"  # how a year range is read: midpoint, or end (lifespans)

    def text(self, entity: str) -> str:
        return self.template.format(entity=entity)


def _coords(place: str) -> Question:
    return Question("coordinates", "coordinates", f"What are the latitude and longitude of {place}?",
                    "Answer with the coordinates in decimal degrees only.", ("latitude", "longitude"), 32)  # fmt: skip


QUESTIONS: dict[str, dict[str, Question]] = {
    "historical_figure": {
        "death_year": Question("death_year", "year", "In what year did {entity} die?", "Answer with the year only.",
                               ("year",), 24, cue=r"\b(?:died|death|passed away|killed|executed)\b",
                               avoid=r"\bborn\b", range_rule="end"),
    },
    "art": {
        "release_year": Question("release_year", "year", "In what year was {entity} released?",
                                 "Answer with the year only.", ("year",), 24, cue=r"\breleased?\b"),
    },
    "headline": {
        "publication_year": Question("publication_year", "year", 'In what year was the headline "{entity}" published?',
                                     "Answer with the year only.", ("year",), 24, cue=r"\bpublished\b"),
    },
    "world_place": {
        "country": Question("country", "group", "In which country is {entity}?", "Answer with the country only.",
                            ("country",), 12),
        "coordinates": _coords("{entity}"),
    },
    "us_place": {
        "state": Question("state", "group", "In which US state is {entity}?", "Answer with the state only.",
                          ("state_id",), 12),
        "coordinates": _coords("{entity}"),
    },
    "nyc_place": {
        "borough": Question("borough", "group", "In which borough of New York City is {entity}?",
                            "Answer with the borough only.", ("borough",), 12),
        "coordinates": _coords("{entity}"),
    },
}  # fmt: skip
"""Dataset -> question name -> question; the first one of a dataset is its default."""


def get_question(dataset: str, name: str | None = None) -> Question:
    """A dataset's question by name (default: its first), or an error listing its questions."""
    get_spec(dataset)
    known = QUESTIONS[dataset]
    if name is None:
        return next(iter(known.values()))
    if name not in known:
        raise WorldprobeError(f"dataset {dataset!r} has no question {name!r}", field="question",
                              hint=f"its questions: {', '.join(known)}")  # fmt: skip
    return known[name]


# --- group vocabularies -------------------------------------------------------------------------------------------

_NOT_NAMES = ("Flag", "De jure", "Hopi")
"""Country aliases of the release data that are ordinary words in an answer, never read as a country."""
_EXTRA_COUNTRY_NAMES = {
    "USA": "United States", "U.S.A.": "United States", "U.S.": "United States", "America": "United States",
    "United States of America": "United States", "Britain": "United Kingdom", "U.K.": "United Kingdom",
    "Holland": "Netherlands", "Czechia": "Czech Republic", "South Korea": "South Korea", "North Korea": "North Korea",
}  # fmt: skip
_BOROUGH_ALIASES = {
    "Bronx": "Bronx", "The Bronx": "Bronx", "Brooklyn": "Brooklyn", "Kings County": "Brooklyn",
    "Manhattan": "Manhattan", "New York County": "Manhattan", "Queens": "Queens", "Queens County": "Queens",
    "Staten Island": "Staten Island", "Richmond County": "Staten Island",
}  # fmt: skip


def vocabulary(dataset: str, groups: Sequence[str]) -> GroupVocabulary:
    """The names an answer may give for the groups of ``dataset``, mapped to the table's canonical group values
    (``groups``: the truth column's values, which are always included)."""
    from worldprobe import geodata
    from worldprobe.countries import COUNTRY_ALIASES, canonical_country

    own = {str(g): str(g) for g in pd.unique(pd.Series(list(groups), dtype=object).dropna())}
    if dataset == "world_place":
        names = {str(n): canonical_country(n) for n in geodata.countries()["name"]}
        for canonical, aliases in COUNTRY_ALIASES.items():
            names.update({a: canonical for a in aliases if a not in _NOT_NAMES and ":" not in a})
        names.update({a: canonical_country(c) for a, c in _EXTRA_COUNTRY_NAMES.items()})
        return GroupVocabulary({**names, **own})
    if dataset == "us_place":
        states = geodata.us_states(contiguous=False)
        return GroupVocabulary({**dict(zip(states["name"], states["state_id"], strict=True)), **own})
    if dataset == "nyc_place":
        return GroupVocabulary({**{a: b for a, b in _BOROUGH_ALIASES.items() if b in own or not own}, **own})
    raise WorldprobeError(f"dataset {dataset!r} has no group question")


# --- answers -----------------------------------------------------------------------------------------------------


def format_answer(question: Question, row: pd.Series) -> str:
    """The reference answer of a train entity, as a few-shot example shows it."""
    if question.kind == "year":
        year = int(round(float(row[question.truth[0]])))
        return f"{-year} BC" if year < 0 else str(year)
    if question.kind == "coordinates":
        return f"{float(row['latitude']):.2f}, {float(row['longitude']):.2f}"
    return str(row[question.truth[0]])


def parse_answer(question: Question, text: str, entity: str, groups: GroupVocabulary | None = None) -> dict[str, Any]:
    """Parsed columns of one answer: ``answer_status`` and ``answer_year`` / ``answer_latitude``+``answer_longitude``
    / ``answer_group``."""
    if question.kind == "year":
        found = parse_year(text, entity=entity, cue=question.cue, avoid=question.avoid, range_rule=question.range_rule)
        return {"answer_status": found.status, "answer_year": found.year}
    if question.kind == "coordinates":
        coords = parse_coordinates(text, entity=entity)
        return {"answer_status": coords.status, "answer_latitude": coords.latitude,
                "answer_longitude": coords.longitude}  # fmt: skip
    if groups is None:
        raise ValueError("a group question needs a vocabulary")
    group = groups.parse(text, entity=entity)
    return {"answer_status": group.status, "answer_group": group.group}


# --- rendering ---------------------------------------------------------------------------------------------------


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_format(tokenizer: Any, fmt: str = "auto") -> str:
    """``auto`` -> ``chat`` when the tokenizer has a chat template, else ``fewshot``."""
    if fmt not in FORMATS:
        raise WorldprobeError(f"unknown prompt format {fmt!r}", field="format", hint=f"one of {', '.join(FORMATS)}")
    if fmt == "auto":
        return "chat" if has_chat_template(tokenizer) else "fewshot"
    if fmt == "chat" and not has_chat_template(tokenizer):
        raise WorldprobeError("the tokenizer has no chat template", field="format", hint="use --format fewshot")
    return fmt


def fewshot_examples(train: pd.DataFrame, question: Question, shots: int, seed: int) -> list[tuple[str, str]]:
    """``shots`` seeded (entity text, reference answer) pairs drawn from train entities with a truth value."""
    usable = train.dropna(subset=list(question.truth))
    if len(usable) < shots:
        raise WorldprobeError(f"only {len(usable)} train entities with an answer for {shots} few-shot examples",
                              field="shots")  # fmt: skip
    rows = usable.iloc[np.sort(np.random.default_rng(seed).choice(len(usable), size=shots, replace=False))]
    return [(str(r["text"]), format_answer(question, r)) for _, r in rows.iterrows()]


def render(
    tokenizer: Any, question: Question, entity: str, fmt: str, examples: Sequence[tuple[str, str]] = (),
    preface: str = "",
) -> tuple[str, tuple[int, int]]:  # fmt: skip
    """The prompt text and the character span of ``entity`` in its question (``fmt``: ``chat`` or ``fewshot``);
    ``preface`` (a statement, ``worldprobe context``) comes right before the question, after any examples."""
    asked = question.text(entity)
    lead = f"{preface} " if preface else ""
    if fmt == "chat":
        content = f"{lead}{asked} {question.instruction}".strip()
        text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
        where = text.rfind(content)
        if where < 0:
            raise WorldprobeError("the chat template does not contain the question verbatim", field="format",
                                  hint="use --format fewshot")  # fmt: skip
        where += len(lead)
    else:
        shots = "".join(f"Q: {question.text(e)}\nA: {a}\n\n" for e, a in examples)
        text = f"{shots}{lead}Q: {asked}\nA:"
        where = len(shots) + len(lead) + len("Q: ")
    start = where + question.template.index("{entity}")
    return text, (start, start + len(entity))


def encode_prompts(tokenizer: Any, texts: Sequence[str], spans: Sequence[tuple[int, int]]) -> list[EncodedEntity]:
    """Token ids of each prompt (special-token text such as chat markers read as special tokens; BOS prepended when
    the tokenizer has one and the prompt does not start with it) and the positions of the entity's tokens."""
    if not getattr(tokenizer, "is_fast", False):
        raise WorldprobeError(f"{type(tokenizer).__name__} is not a fast tokenizer: offsets are needed")
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                        return_attention_mask=False)  # fmt: skip
    bos = tokenizer.bos_token_id
    out = []
    for i, (ids, offsets) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)):
        start, end = spans[i]
        inside = [j for j, (a, b) in enumerate(offsets) if b > a and b > start and a < end]
        if not inside:
            raise WorldprobeError(f"no token covers the entity in prompt {texts[i]!r}", row=i, field="text")
        head = [bos] if bos is not None and (not ids or ids[0] != bos) else []
        out.append(EncodedEntity(tuple(head + list(ids)), tuple(j + len(head) for j in inside)))
    return out
