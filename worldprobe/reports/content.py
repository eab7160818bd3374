"""What a report holds: its sections (one per dataset), each model's block of figures, tables and text, and the
report as written. ``build.py`` fills these; ``html.py`` renders them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from worldprobe.reports.figure import FigureFile


@dataclass
class Block:
    """One model's part of a dataset section: a heading, figures and tables (HTML strings come from html.py)."""

    heading: str

    @property
    def anchor(self) -> str:
        """The block's id in the page, unique within its section: its heading in lower case, spaces as dashes."""
        return "-".join(self.heading.lower().split())
    figures: list[FigureFile] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    folded: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # shown closed: they repeat a figure's numbers
    text: list[str] = field(default_factory=list)  # paragraphs above the figures (the verdict sentence)
    notes: list[str] = field(default_factory=list)  # plain remarks under them (e.g. entity types too small to show)


@dataclass
class Section:
    """Everything the report shows about one dataset."""

    dataset: str
    kind: str
    blocks: list[Block] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    """A written report: where it is, its verdict table and sentences, sections, what was missing and which runs were
    left out as stale."""

    index: Path
    summary: pd.DataFrame
    sections: list[Section]
    missing: list[str]
    verdicts: list[tuple[str, str, str]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    note: str = ""  # under the verdict table: what a Δ is and which correction decided the labels

    @property
    def figures(self) -> list[FigureFile]:
        return [f for s in self.sections for b in s.blocks for f in b.figures]
