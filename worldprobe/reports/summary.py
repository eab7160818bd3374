"""The verdict table: per dataset and model, the probe at its train-selected layer beside every control, each number
with its interval and n, and the verdict sentence (all read from the runs' ``summary.json`` headlines)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from worldprobe.datasets.registry import DATASETS
from worldprobe.probes.verdict import short
from worldprobe.reports.results import primary_prompt

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


def chosen_runs(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per dataset and model: the primary prompt, ridge when there are several probes, then the run with the
    most controls, then the newest (summaries come oldest first); in registry order of the datasets, then by model."""
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for summary in summaries:
        if "headline" in summary:
            by_dataset.setdefault(summary["dataset"], []).append(summary)
    order = {name: i for i, name in enumerate(DATASETS)}
    chosen = []
    for dataset in sorted(by_dataset, key=lambda d: (order.get(d, len(order)), d)):
        runs = by_dataset[dataset]
        prompt = primary_prompt([r["prompt"] for r in runs])
        best: dict[str, tuple[tuple[bool, int, int], dict[str, Any]]] = {}
        for age, run in enumerate(r for r in runs if r["prompt"] == prompt):
            rank = (run["probe"] == "ridge", len(run["headline"].get("controls", {})), age)
            if run["model"] not in best or rank > best[run["model"]][0]:
                best[run["model"]] = (rank, run)
        chosen += [best[model][1] for model in sorted(best)]
    return chosen


def left_out_runs(summaries: list[dict[str, Any]]) -> list[str]:
    """A line per finished run that :func:`chosen_runs` did not pick for the verdict table, saying why."""
    chosen = {run.get("run_key") for run in chosen_runs(summaries)}
    return [
        f"{run['dataset']} x {run['model']} (prompt {run['prompt']}, {run['probe']}, "
        f"{len(run['headline'].get('controls', {}))} control(s), run {run.get('run_key')}): not in the verdict table, "
        "which shows one run per dataset and model (the primary prompt, ridge, the most controls, the newest)"
        for run in summaries
        if "headline" in run and run.get("run_key") not in chosen
    ]


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
