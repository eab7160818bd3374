"""Prompt templates per dataset (docs/explanation/datasets.md): a prefix plus a transformed entity text.

Rendering with a tokenizer (BOS, random prefix tokens, last-token position) lives in
``worldprobe.extract.tokens``; this module only says what each prompt is.
"""

from __future__ import annotations

from dataclasses import dataclass

from worldprobe.datasets.registry import get_spec
from worldprobe.errors import WorldprobeError


@dataclass(frozen=True)
class Prompt:
    """How the entity text is shown to the model. The probed token is the last token of the entity text."""

    name: str
    prefix: str = ""
    upper: bool = False  # ALL CAPS entity text
    random_tokens: int = 0  # number of seeded random vocabulary tokens before the entity
    strip_final_period: bool = False  # headlines without their appended "."

    def entity_text(self, text: str) -> str:
        """The entity text as the model sees it under this prompt (without prefix)."""
        if self.strip_final_period and text.endswith("."):
            text = text[:-1].rstrip()
        return text.upper() if self.upper else text


PROMPTS: dict[str, Prompt] = {
    p.name: p
    for p in (
        Prompt("empty"),
        Prompt("all_caps", upper=True),
        Prompt("random", random_tokens=10),
        Prompt("coords", prefix="What are the lat/lon coordinates of "),
        Prompt("where_us", prefix="Where in the United States is "),
        Prompt("where_is", prefix="Where is "),
        Prompt("where_nyc", prefix="Where in New York City is "),
        Prompt("when", prefix="When did "),
        Prompt("release", prefix="When was the release date of "),
        Prompt("empty_no_period", strip_final_period=True),
    )
}

HEADLINE_WHEN = Prompt("when", prefix="Publication date of: ")
"""Headlines use their own wording for the "when" prompt."""


def get_prompt(dataset: str, name: str) -> Prompt:
    """The prompt ``name`` of ``dataset``; a clear error when the dataset does not have it."""
    spec = get_spec(dataset)
    if name not in spec.prompts:
        raise WorldprobeError(
            f"dataset {dataset!r} has no prompt {name!r}", hint=f"its prompts: {', '.join(spec.prompts)}"
        )
    if dataset == "headline" and name == "when":
        return HEADLINE_WHEN
    return PROMPTS[name]
