"""The verdict table: per dataset and model, the probe at its train-selected layer beside every control, each number
with its interval and n, each comparison's outcome under Holm's correction over the whole table (one family: every
label test of every run in it), the label, and whether the label holds under the correction (all read from the runs'
``summary.json`` headlines; docs/verdicts.md states the rules)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from worldprobe.datasets.registry import all_specs
from worldprobe.probes.inference import FamilyResult
from worldprobe.probes.verdict import short, table_verdicts
from worldprobe.reports.choice import chosen_runs

COLUMNS = {
    "dataset": "dataset",
    "model": "model",
    "n_test": "n test",
    "layer": "layer (chosen on train)",
    "r2": "test R² [95% CI]",
    "spearman": "Spearman ρ [95% CI]",
    "error": "median error",
    "vs_lexical": "ΔR² vs lexical",
    "vs_random_init": "ΔR² vs random init",
    "vs_embedding": "ΔR² vs embedding",
    "within_group": "within-group Δr vs spelling",
    "alt_world": "alt-world gap (matched)",
    "verdict": "verdict (Holm)",
    "holds": "unadjusted",
}
"""The table's columns and headings; a Δ is probe minus control, paired over the same test entities, followed by its
outcome under Holm's correction (above, below, equivalent within the margin, inconclusive)."""
SHORT_OUTCOMES = {"above": "above", "below": "below", "equivalent": "equiv.", "inconclusive": "inconcl."}


@dataclass
class VerdictTable:
    """The verdict table as text cells, the verdict sentences, and the family they were decided in."""

    table: pd.DataFrame
    sentences: list[tuple[str, str, str]] = field(default_factory=list)
    family: FamilyResult | None = None

    @property
    def note(self) -> str:
        """The line under the table: what a Δ is and which correction decided the outcomes."""
        if self.family is None:
            return ""
        return (f"Δ = probe minus control on the same test entities (paired bootstrap, 95% interval); each control at "
                f"its own layer chosen on train rows. Outcomes and labels: {self.family.describe()}; the last column "
                f"gives the label without the correction where it differs.")  # fmt: skip


def verdict_table(summaries: list[dict[str, Any]]) -> VerdictTable:
    """The verdict table of the chosen runs, decided as one Holm family."""
    runs = chosen_runs(summaries)
    if not runs:
        return VerdictTable(pd.DataFrame(columns=list(COLUMNS.values())))
    names = {_run_name(r): r for r in runs}
    verdicts, decided = table_verdicts(
        {name: r["headline"] for name, r in names.items()},
        settings={name: _settings(r) for name, r in names.items()},
    )
    rows, sentences = [], []
    for name, run in names.items():
        head, said = run["headline"], verdicts[name]
        outcomes = said["outcomes"]
        controls = head.get("controls", {})
        unit = head.get("error_unit", "")
        error = head["probe"]["median_error"]
        rows.append({
            "dataset": run["dataset"], "model": run["model"], "n_test": head["n_test"],
            "layer": f"{head['selected_layer']}/{run['n_layers']}",
            "r2": short(head["probe"]["r2"]), "spearman": short(head["probe"]["spearman"]),
            "error": f"{amount(error['value'])} [{amount(error['low'])}, {amount(error['high'])}] {unit}",
            "vs_lexical": _diff(controls, "lexical", outcomes),
            "vs_random_init": _diff(controls, "random_init", outcomes),
            "vs_embedding": _diff(controls, "embedding", {}),
            "within_group": _within(head, outcomes), "alt_world": _alt_world(head, outcomes),
            "verdict": said["label"], "holds": "same" if said["holds"] else said["unadjusted_label"],
        })  # fmt: skip
        sentences.append((run["dataset"], run["model"], said["sentence"]))
    table = pd.DataFrame(rows, columns=list(COLUMNS)).rename(columns=COLUMNS)
    return VerdictTable(table, sentences, decided)


def _run_name(run: Mapping[str, Any]) -> str:
    return f"{run['dataset']} x {run['model']}"


def _settings(run: Mapping[str, Any]) -> dict[str, Any]:
    spec = all_specs().get(run["dataset"])
    return {"kind": run.get("kind", spec.kind if spec else "numeric"),
            "group_column": spec.oracle_column if spec else "group", "n_layers": int(run["n_layers"])}  # fmt: skip


def amount(value: float) -> str:
    """An error in km or years: whole numbers from 10 up (``2,832``), one decimal below (``1.3``)."""
    return f"{value:,.1f}" if abs(value) < 10 else f"{value:,.0f}"


def _with_outcome(text: str, outcome: str | None) -> str:
    return f"{text} {SHORT_OUTCOMES[outcome]}" if outcome else text


def _diff(controls: Mapping[str, Any], name: str, outcomes: Mapping[str, str]) -> str:
    """Probe minus control at the control's own layer, ``+.12 [.07, .17] above`` (with the number of seeds when
    several; without an outcome for a control outside the family)."""
    entry = controls.get(name)
    if not entry:
        return "not run"
    text = _with_outcome(short(entry["own"]["diff_r2"], signed=True), outcomes.get(name))
    return f"{text} ({len(entry['seeds'])} seeds)" if len(entry.get("seeds", [])) > 1 else text


def _within(head: Mapping[str, Any], outcomes: Mapping[str, str]) -> str:
    entry = head.get("within_group")
    if entry is None:
        return "not run"
    if "diff_r" not in entry:
        return "not tested"
    return _with_outcome(short(entry["diff_r"], signed=True), outcomes.get("within_group"))


def _alt_world(head: Mapping[str, Any], outcomes: Mapping[str, str]) -> str:
    entry = head.get("alt_world")
    if entry is None:
        return "not run"
    if "not_applicable" in entry:
        return "not applicable"
    return _with_outcome(short(entry["gap"], signed=True), outcomes.get("alt_world"))


def verdict_sentences(summaries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(dataset, model, sentence) of every chosen run, decided in the table's family."""
    return verdict_table(summaries).sentences


def as_text(summaries: list[dict[str, Any]]) -> str:
    """The verdict table and the sentences as plain text (the end of ``worldprobe run``)."""
    view = verdict_table(summaries)
    if view.table.empty:
        return "no probe results yet"
    lines = [view.table.to_string(index=False), ""]
    lines += [f"{dataset} x {model}: {sentence}" for dataset, model, sentence in view.sentences]
    lines.append(view.note)
    return "\n".join(lines)


def as_markdown(view: VerdictTable) -> str:
    """The verdict table, its sentences and its note as Markdown (``reports/verdicts.md``, quoted by the README)."""
    if view.table.empty:
        return "no probe results yet\n"
    cells = [list(map(str, view.table.columns)), *view.table.astype(str).values.tolist()]
    rows = ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    rows.insert(1, "|" + "---|" * len(view.table.columns))
    lines = [*rows, "", *(f"- **{dataset} x {model}**: {sentence}" for dataset, model, sentence in view.sentences)]
    return "\n".join([*lines, "", view.note, ""])
