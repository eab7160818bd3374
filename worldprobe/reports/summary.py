"""The verdict table: per dataset and model, the probe at its train-selected layer beside every control, each number
with its interval and n, and the verdict sentence (all read from the runs' ``summary.json`` headlines)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from worldprobe.probes.verdict import short
from worldprobe.reports.choice import chosen_runs

COLUMNS = {
    "dataset": "dataset",
    "model": "model",
    "n_test": "n test",
    "layer": "layer (chosen on train)",
    "r2": "test R² [95% CI]",
    "error": "median error",
    "vs_lexical": "Δ vs lexical",
    "vs_random_init": "Δ vs random init",
    "vs_embedding": "Δ vs embedding",
    "within_group_r": "within-group r",
    "alt_beyond_lexical": "alt-world gap beyond lexical",
    "verdict": "verdict",
}
"""The table's columns and headings; a Δ is probe minus control, paired over the same test entities."""


def verdict_table(summaries: list[dict[str, Any]]) -> pd.DataFrame:
    """The verdict table as text cells (estimates as ``.36 [.30, .41]``), one row per chosen run."""
    rows = []
    for run in chosen_runs(summaries):
        head = run["headline"]
        controls = head.get("controls", {})
        unit = head.get("error_unit", "")

        alt = head.get("alt_world", {})
        error = head["probe"]["median_error"]
        rows.append({
            "dataset": run["dataset"], "model": run["model"], "n_test": head["n_test"],
            "layer": f"{head['selected_layer']}/{run['n_layers']}",
            "r2": short(head["probe"]["r2"]),
            "error": f"{amount(error['value'])} [{amount(error['low'])}, {amount(error['high'])}] {unit}",
            "vs_lexical": _diff(controls, "lexical"), "vs_random_init": _diff(controls, "random_init"),
            "vs_embedding": _diff(controls, "embedding"),
            "within_group_r": short(head["probe"].get("within_group_r")),
            "alt_beyond_lexical": short(alt.get("beyond_lexical"), signed=True) if alt else "not run",
            "verdict": run["verdict"]["label"],
        })  # fmt: skip
    return pd.DataFrame(rows, columns=list(COLUMNS)).rename(columns=COLUMNS)


def amount(value: float) -> str:
    """An error in km or years: whole numbers from 10 up (``2,832``), one decimal below (``1.3``)."""
    return f"{value:,.1f}" if abs(value) < 10 else f"{value:,.0f}"


def _diff(controls: dict[str, Any], name: str) -> str:
    """Probe minus control at the control's own layer, ``+.12 [.07, .17]`` (with the number of seeds when several)."""
    entry = controls.get(name)
    if not entry:
        return "not run"
    text = short(entry["own"]["diff_r2"], signed=True)
    return f"{text} ({len(entry['seeds'])} seeds)" if len(entry.get("seeds", [])) > 1 else text


def verdict_sentences(summaries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(dataset, model, sentence) of every chosen run."""
    return [(r["dataset"], r["model"], r["verdict"]["sentence"]) for r in chosen_runs(summaries)]


def as_text(summaries: list[dict[str, Any]]) -> str:
    """The verdict table and the sentences as plain text (the end of ``worldprobe run``)."""
    table = verdict_table(summaries)
    if table.empty:
        return "no probe results yet"
    lines = [table.to_string(index=False), ""]
    lines += [f"{dataset} x {model}: {sentence}" for dataset, model, sentence in verdict_sentences(summaries)]
    lines.append("Δ = probe minus control on the same test entities (paired bootstrap, 95% interval); each control at "
                 "its own layer chosen on train rows.")  # fmt: skip
    return "\n".join(lines)
