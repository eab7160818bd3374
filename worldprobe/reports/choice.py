"""What the report draws from the results (their format is ``worldprobe.probes.results``): which runs, which prompt
first, which run per dataset and model goes in the verdict table, and what it says is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from worldprobe.datasets.registry import DATASETS, all_specs
from worldprobe.probes.results import (
    CONTROLS,
    METRICS,
    READ_TABLES,
    SUMMARY,
    Results,
    load_results,
    stale_reason,
    summaries,
)

PRIMARY_PROMPTS = ("empty", "")
"""The prompt shown first when a dataset has several (the paper's bare entity name)."""


def report_results(results_dir: Path, datasets_dir: Path | None = None) -> Results:
    """The workspace's current results as the report draws them: runs that probe other targets than their dataset's
    own (e.g. ``--target population``) left out, and every absent table, control and dataset named in ``missing``."""
    replaced = superseded_runs(results_dir, datasets_dir)

    def leave_out(folder: Path, tables: dict[str, pd.DataFrame]) -> str | None:
        return replaced.get(folder.name) or _other_targets(folder, tables)

    results = load_results(results_dir, datasets_dir, leave_out=leave_out)
    for table in READ_TABLES:
        if getattr(results, table).empty:
            results.missing.append(f"no {table} in any run: the report has no {table} section")
    if not results.metrics.empty:
        _note_missing_controls(results)
    return results


def primary_prompt(prompts: pd.Series | list[str]) -> str:
    """The prompt a dataset's figures use: ``empty`` when present, else the first one alphabetically."""
    values = sorted(set(prompts))
    for prompt in PRIMARY_PROMPTS:
        if prompt in values:
            return prompt
    return values[0]


def chosen_runs(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run per dataset and model: the primary prompt, ridge when there are several probes, then the run with the
    most controls, then the newest (summaries come oldest first); in registry order of the datasets, then by model."""
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for summary in summaries:
        if "headline" in summary:
            by_dataset.setdefault(summary["dataset"], []).append(summary)
    order = {name: i for i, name in enumerate(all_specs())}
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


def superseded_runs(results_dir: Path, datasets_dir: Path | None = None) -> dict[str, str]:
    """Probe runs another run of the same dataset, model, prompt, probe and targets replaces in the report, each with
    the sentence that says so. Rows of two runs are never mixed in one curve or map (a run on a 100-entity cache and
    one on the full cache, or a run of a few layers, drew one curve with two chosen layers): the report draws the run
    with the most controls, then the newest. Stale and unfinished runs take no part (load_results names them)."""
    groups: dict[tuple[Any, ...], list[tuple[tuple[int, int], str]]] = {}
    for folder, summary in summaries(results_dir):
        if "headline" not in summary or not summary.get("complete", True):
            continue
        if datasets_dir is not None and stale_reason(folder, datasets_dir):
            continue
        key = (summary.get("dataset"), summary.get("model"), summary.get("prompt"), summary.get("probe"),
               tuple(summary.get("targets", [])))  # fmt: skip
        rank = (len(summary["headline"].get("controls", {})), (folder / SUMMARY).stat().st_mtime_ns, folder.name)
        groups.setdefault(key, []).append((rank, folder.name))
    _, passed_over = one_per_group(groups)
    return {name: (f"is not drawn: run {kept} of the same dataset, model, prompt and probe replaces it (the report "
                   "draws one run each: the most controls, then the newest)")
            for name, kept in passed_over}  # fmt: skip


def one_per_group(groups: dict[Any, list[tuple[tuple, Any]]]) -> tuple[list[Any], list[tuple[Any, Any]]]:
    """The run the report draws from each group of ``(rank, run)`` pairs (the largest rank), and each run passed
    over with the one drawn in its place: the one rule for probe runs and for ask, context and steer runs."""
    kept, passed_over = [], []
    for members in groups.values():
        ranked = sorted(members, key=lambda member: member[0])
        best = ranked[-1][1]
        kept.append(best)
        passed_over += [(run, best) for _, run in ranked[:-1]]
    return kept, passed_over


def _other_targets(folder: Path, tables: dict[str, pd.DataFrame]) -> str | None:
    """Why a run is not drawn: it probes targets that are not its dataset's own (None for a standard run)."""
    metrics = tables.get(METRICS)
    if metrics is None or metrics.empty:
        return None
    dataset = str(metrics["dataset"].iat[0])
    specs = all_specs()
    if dataset not in specs:
        return None
    own = set(specs[dataset].targets)
    probed = set(metrics.loc[metrics["control"].fillna("none") == "none", "target"]) - {"mean"}
    if probed and probed != own:
        return f"probes other targets ({', '.join(sorted(probed))}): not drawn"
    return None


def _note_missing_controls(results: Results) -> None:
    metrics = results.metrics
    datasets = results.datasets  # (a property that scans every table)
    for dataset in datasets:
        if dataset not in set(metrics["dataset"]):
            results.missing.append(f"{dataset}: predictions only, no metrics (no layer curve or summary row)")
            continue
        present = set(metrics.loc[metrics["dataset"] == dataset, "control"])
        inapplicable = _inapplicable_controls(results.summaries, dataset)
        for control in sorted(inapplicable):
            results.missing.append(f"{dataset}: control {control} not applicable (its verdict says why)")
        absent = [c for c in CONTROLS if c not in present and c not in inapplicable]
        if absent:
            results.missing.append(f"{dataset}: no results for control(s) {', '.join(absent)}")
    for name in DATASETS:
        if name not in datasets:
            results.missing.append(f"{name}: no results")


def _inapplicable_controls(summaries: list[dict[str, Any]], dataset: str) -> set[str]:
    """Controls a run of ``dataset`` declared not applicable in its headline (e.g. an alternative world when no
    permutation is as learnable from the spelling as the true one)."""
    return {control for summary in summaries if summary.get("dataset") == dataset
            for control, entry in summary.get("headline", {}).items()
            if control in CONTROLS and isinstance(entry, dict) and "not_applicable" in entry}  # fmt: skip
