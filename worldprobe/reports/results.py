"""Read every ``results/<run-key>/`` folder into one set of tables, noting what is missing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from worldprobe.datasets.registry import DATASETS
from worldprobe.errors import WorldprobeError

TABLES = ("metrics", "predictions", "holdouts", "neurons")
PRIMARY_PROMPTS = ("empty", "")
"""The prompt shown first when a dataset has several (the paper's bare entity name)."""
EXPECTED_CONTROLS = ("shuffled", "random_init", "lexical", "embedding", "group_oracle", "within_group", "alt_world")
"""The controls of science.md section 7; the report says which of them have no results yet."""


@dataclass
class Results:
    """All results of a workspace, concatenated over run folders (design.md, "Results")."""

    metrics: pd.DataFrame
    predictions: pd.DataFrame
    holdouts: pd.DataFrame
    neurons: pd.DataFrame
    summaries: list[dict[str, Any]]
    runs: list[Path]
    missing: list[str] = field(default_factory=list)

    @property
    def datasets(self) -> list[str]:
        """Datasets with any metric or prediction, in registry order, then others alphabetically."""
        found = set(self.metrics.get("dataset", pd.Series(dtype=str))) | set(
            self.predictions.get("dataset", pd.Series(dtype=str))
        )
        known = [name for name in DATASETS if name in found]
        return known + sorted(found - set(known))

    def kind(self, dataset: str) -> str:
        """``place`` or ``time``: from the registry, else from the prediction columns."""
        if dataset in DATASETS:
            return DATASETS[dataset].kind
        return "place" if "true_latitude" in self.predictions.columns else "time"


def _read_run(folder: Path, frames: dict[str, list[pd.DataFrame]], summaries: list[dict[str, Any]]) -> None:
    for table in TABLES:
        path = folder / f"{table}.parquet"
        if path.exists():
            try:
                frames[table].append(pd.read_parquet(path))
            except Exception as error:  # pyarrow raises several types for a damaged file
                raise WorldprobeError(f"cannot read results table: {error}", file=path) from error
    summary = folder / "summary.json"
    if summary.exists():
        try:
            summaries.append(json.loads(summary.read_text()) | {"run": folder.name})
        except json.JSONDecodeError as error:
            raise WorldprobeError(f"summary is not valid JSON: {error.msg}", file=summary, row=error.lineno) from error


def load_results(results_dir: Path) -> Results:
    """Concatenate the tables of every run folder under ``results_dir`` (missing tables become empty frames)."""
    runs = sorted(p for p in results_dir.glob("*") if p.is_dir() and any(p.glob("*.parquet")))
    if not runs:
        raise WorldprobeError(
            "no results found",
            file=results_dir,
            hint="run `worldprobe probe --dataset ... --model ...` first (or `worldprobe run`)",
        )
    frames: dict[str, list[pd.DataFrame]] = {table: [] for table in TABLES}
    summaries: list[dict[str, Any]] = []
    for folder in runs:
        _read_run(folder, frames, summaries)
    tables = {t: pd.concat(f, ignore_index=True) if f else pd.DataFrame() for t, f in frames.items()}
    results = Results(**tables, summaries=summaries, runs=runs)
    for table in TABLES:
        if tables[table].empty:
            results.missing.append(f"no {table}.parquet in any run: the report has no {table} section")
    if not results.metrics.empty:
        metrics = results.metrics
        metrics["control"] = metrics["control"].fillna("none")
        _note_missing_controls(results)
    return results


def _note_missing_controls(results: Results) -> None:
    metrics = results.metrics
    for dataset in results.datasets:
        if dataset not in set(metrics["dataset"]):
            results.missing.append(f"{dataset}: predictions only, no metrics (no layer curve or summary row)")
            continue
        present = set(metrics.loc[metrics["dataset"] == dataset, "control"])
        absent = [c for c in EXPECTED_CONTROLS if c not in present]
        if absent:
            results.missing.append(f"{dataset}: no results for control(s) {', '.join(absent)}")
    for name in DATASETS:
        if name not in results.datasets:
            results.missing.append(f"{name}: no results")


def primary_prompt(prompts: pd.Series | list[str]) -> str:
    """The prompt a dataset's figures use: ``empty`` when present, else the first one alphabetically."""
    values = sorted(set(prompts))
    for prompt in PRIMARY_PROMPTS:
        if prompt in values:
            return prompt
    return values[0]


def probe_curve(metrics: pd.DataFrame, metric: str = "r2", control: str = "none") -> pd.DataFrame:
    """Test-split values of ``metric`` (mean over targets) per dataset, model, prompt, probe and layer."""
    rows = metrics[
        (metrics["split"] == "test")
        & (metrics["target"] == "mean")
        & (metrics["metric"] == metric)
        & (metrics["control"] == control)
    ]
    keys = ["dataset", "model", "n_layers", "prompt", "probe", "layer", "rel_depth"]
    return rows.groupby(keys, as_index=False, dropna=False)["value"].mean()


def best_layers(metrics: pd.DataFrame) -> pd.DataFrame:
    """The layer with the highest test R² of the probe itself, per dataset, model, prompt and probe."""
    curve = probe_curve(metrics)
    if curve.empty:
        return curve
    index = curve.groupby(["dataset", "model", "prompt", "probe"])["value"].idxmax()
    return curve.loc[index].rename(columns={"value": "r2"}).reset_index(drop=True)
