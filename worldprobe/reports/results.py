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
    """All current results of a workspace, concatenated over run folders (design.md, "Results").

    ``metrics`` holds the rows over every test entity (``subset == "all"``), ``breakdown`` the per-entity-type rows;
    ``summaries`` the summary.json of each probe run; ``stale`` the folders left out because they were computed from
    another build of their dataset (or by an older worldprobe), each with the reason.
    """

    metrics: pd.DataFrame
    predictions: pd.DataFrame
    holdouts: pd.DataFrame
    neurons: pd.DataFrame
    summaries: list[dict[str, Any]]
    runs: list[Path]
    missing: list[str] = field(default_factory=list)
    breakdown: pd.DataFrame = field(default_factory=pd.DataFrame)
    stale: list[str] = field(default_factory=list)

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


def _custom_targets(metrics: pd.DataFrame) -> list[str]:
    """Targets of a run that are not its dataset's own (e.g. ``--target population``); [] for a standard run."""
    dataset = str(metrics["dataset"].iat[0]) if len(metrics) else ""
    if dataset not in DATASETS:
        return []
    own = set(DATASETS[dataset].targets)
    probed = set(metrics.loc[metrics["control"].fillna("none") == "none", "target"]) - {"mean"}
    return sorted(probed) if probed and probed != own else []


def _read_run(folder: Path, frames: dict[str, list[pd.DataFrame]], missing: list[str]) -> dict[str, Any] | None:
    """Append the run's tables to ``frames`` (unless it probes other targets); return its summary (with ``run``), or
    None for a neuron search or a run of other targets."""
    summary_path = folder / "summary.json"
    try:
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    except json.JSONDecodeError as error:
        raise WorldprobeError(f"summary is not valid JSON: {error.msg}", file=summary_path, row=error.lineno) from error
    summary["run"] = folder.name
    tables = {}
    for table in TABLES:
        path = folder / f"{table}.parquet"
        if path.exists():
            try:
                tables[table] = pd.read_parquet(path).assign(run=folder.name)
            except Exception as error:  # pyarrow raises several types for a damaged file
                raise WorldprobeError(f"cannot read results table: {error}", file=path) from error
    custom = _custom_targets(tables["metrics"]) if "metrics" in tables else []
    if custom:
        missing.append(f"run {folder.name} probes other targets ({', '.join(custom)}): not drawn")
        return None
    for table, frame in tables.items():
        frames[table].append(frame)
    return summary if "run_key" in summary or "headline" in summary else None


def load_results(results_dir: Path, datasets_dir: Path | None = None) -> Results:
    """Concatenate the tables of every finished, current run folder under ``results_dir``.

    A probe run without ``summary.json`` (or with ``"complete": false``) is still being written: it is skipped and
    named in ``missing``. With ``datasets_dir`` (the workspace's ``datasets/``), a run computed from another build of
    its dataset than the one there now (its recorded fingerprint differs), or written by an older worldprobe without
    a headline, is left out and named in ``stale``: results of two builds are never drawn or tabulated together. When
    two runs hold the same row key (a re-run), the newer run's value is kept. Missing tables become empty frames,
    each named in ``missing``.
    """
    folders = [p for p in results_dir.glob("*") if p.is_dir() and any(p.glob("*.parquet")) and not _intervention(p)]
    runs, missing, stale = [], [], []
    for folder in sorted(folders, key=_age):
        if _unfinished(folder):
            missing.append(f"run {folder.name} has no finished summary.json (still running or interrupted): skipped")
            continue
        reason = stale_reason(folder, datasets_dir) if datasets_dir is not None else None
        if reason:
            stale.append(f"{folder.name}: {reason}")
        else:
            runs.append(folder)
    if not runs:
        raise WorldprobeError(
            "no finished results of the current dataset builds" if stale else "no finished results found",
            file=results_dir,
            hint="run `worldprobe probe --dataset ... --model ...` first (or `worldprobe run`)"
            + (f"; {len(stale)} stale run(s): {stale[0]}" if stale else ""),
        )
    frames: dict[str, list[pd.DataFrame]] = {table: [] for table in TABLES}
    summaries = [_read_run(folder, frames, missing) for folder in runs]
    tables = {t: _latest(pd.concat(f, ignore_index=True)) if f else pd.DataFrame() for t, f in frames.items()}
    metrics = tables.pop("metrics")
    breakdown = pd.DataFrame()
    if "subset" in metrics.columns:
        breakdown = metrics[metrics["subset"] != "all"].reset_index(drop=True)
        metrics = metrics[metrics["subset"] == "all"].reset_index(drop=True)
    results = Results(metrics=metrics, **tables, summaries=[s for s in summaries if s], runs=runs, missing=missing,
                      breakdown=breakdown, stale=stale)  # fmt: skip
    for table in TABLES:
        if getattr(results, table).empty:
            results.missing.append(f"no {table} in any run: the report has no {table} section")
    if not results.metrics.empty:
        results.metrics["control"] = results.metrics["control"].fillna("none")
        _note_missing_controls(results)
    if not results.predictions.empty and "control" in results.predictions:
        results.predictions["control"] = results.predictions["control"].fillna("none")
    return results


def stale_reason(folder: Path, datasets_dir: Path) -> str | None:
    """Why a finished run folder is not from the current build of its dataset (None when it is).

    A probe run records its cache's dataset fingerprint in ``summary.json``, a neuron search in ``neurons.json``;
    the current build's is in ``datasets/<dataset>.build.json``.
    """
    record = folder / ("summary.json" if (folder / "summary.json").exists() else "neurons.json")
    if not record.exists():
        return "no record of the dataset build it used (written by an older worldprobe): re-run it"
    try:
        summary = json.loads(record.read_text())
    except json.JSONDecodeError:
        return f"{record.name} is not valid JSON: re-run it"
    if record.name == "summary.json" and "headline" not in summary:
        return "written by an older worldprobe (no train-selected layer or intervals): re-run `worldprobe probe`"
    dataset = summary.get("dataset")
    build = datasets_dir / f"{dataset}.build.json"
    if not build.exists():
        return f"dataset {dataset} is no longer built in this workspace"
    try:
        current = json.loads(build.read_text()).get("fingerprint")
    except json.JSONDecodeError:
        return f"{build} is not valid JSON"
    used = (summary.get("cache") or {}).get("dataset_fingerprint")
    if used != current:
        return f"computed from another build of {dataset} (fingerprint {str(used)[:12]}, now {str(current)[:12]})"
    return None


def _intervention(folder: Path) -> bool:
    """An ``ask`` or ``steer`` run (``worldprobe.reports.interventions`` draws those)."""
    return any((folder / name).exists() for name in ("answers.parquet", "steering.parquet"))


def _age(folder: Path) -> tuple[int, str]:
    """Older runs first, so a re-run's rows replace them."""
    files = [p for p in (folder / "summary.json", folder / "neurons.parquet") if p.exists()]
    return (max(p.stat().st_mtime_ns for p in files) if files else 0, folder.name)


def _unfinished(folder: Path) -> bool:
    """A probe run (metrics or predictions) is finished once its summary says so; a neurons-only folder always is."""
    if not any((folder / f"{t}.parquet").exists() for t in ("metrics", "predictions")):
        return False
    path = folder / "summary.json"
    try:
        return not path.exists() or json.loads(path.read_text()).get("complete", True) is False
    except json.JSONDecodeError:
        return True


def _latest(table: pd.DataFrame) -> pd.DataFrame:
    """Drop rows a newer run repeats (same values in every column but ``value``-like ones and ``run``)."""
    measured = {"value", "run", "n_rows", "train_pearson", "test_spearman", "test_r2", "cos_in", "cos_out"}
    measured |= {c for c in table.columns if c.startswith("pred_")}
    keys = [c for c in table.columns if c not in measured]
    return table.drop_duplicates(subset=keys, keep="last").drop(columns="run").reset_index(drop=True)


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
