"""The results contract (docs/design.md "Results"): the one place that names the tables of a ``results/<run>/``
folder and their columns, the control names, the run key and folder name, and that writes and reads them.

Three kinds of run share the folder layout: a probe run (``metrics``, ``predictions``, ``holdouts`` and
``summary.json``, written last: it marks the run complete), a neuron search (``neurons.json`` first, then
``neurons.parquet``, which marks it finished) and an ask or steer run (``answers`` or ``steering`` and
``summary.json``). What the report draws from them is ``worldprobe.reports.choice``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

import worldprobe
from worldprobe.checksums import files_record, recorded_problems, remember, sha256_of
from worldprobe.datasets.registry import all_specs
from worldprobe.datasets.table import recorded_fingerprint
from worldprobe.errors import WorldprobeError
from worldprobe.extract.cache import CacheIdentity
from worldprobe.jsonable import json_default

METRICS, PREDICTIONS, HOLDOUTS, NEURONS = "metrics", "predictions", "holdouts", "neurons"
ANSWERS, STEERING, STEERING_MAP, CONTEXT, CONTEXT_ANSWERS = (
    "answers", "steering", "steering_map", "context", "context_answers")
"""Table names: each is ``<name>.parquet`` in a run folder."""
PROBE_TABLES = (METRICS, PREDICTIONS, HOLDOUTS)
"""The tables of a probe run."""
READ_TABLES = (*PROBE_TABLES, NEURONS)
"""The tables :func:`load_results` gathers (ask and steer runs are read by ``worldprobe.reports.interventions``)."""
SUMMARY = "summary.json"
NEURONS_FILE = f"{NEURONS}.parquet"
NEURON_RECORD = "neurons.json"
"""Beside ``neurons.parquet``: the search's dataset build (fingerprint) and settings, for stale-result checks."""

CONTROLS = ("random_init", "shuffled", "lexical", "embedding", "group_oracle", "within_group", "alt_world")
"""Every control (docs/explanation/probes.md), in the order ``worldprobe.probes.controls`` runs them; the ``control`` of
the probe's own rows is ``none``."""

LAYER_ROW_COLUMNS = (
    "dataset", "model", "n_layers", "prompt", "layer", "rel_depth", "probe", "control",
    "standardize", "split", "target", "metric", "value", "seed",
)  # fmt: skip
"""The columns of a per-layer metric row as the layer sweep and the controls produce it."""
METRIC_COLUMNS = (*LAYER_ROW_COLUMNS, "subset", "n", "ci_low", "ci_high", "selected_layer")
"""metrics.parquet: a per-layer row plus the rows it was computed on (``n``), the 95% bootstrap interval where the
headline computed one (``ci_low``, ``ci_high``; NaN elsewhere), ``subset`` (``all`` or ``entity_type=<type>``) and
the layer the row's curve selected on train rows (``selected_layer``)."""
HOLDOUT_COLUMNS = (
    "dataset", "model", "prompt", "layer", "probe", "column", "block", "n_rows", "setting", "target", "metric", "value",
)  # fmt: skip
NEURON_COLUMNS = (
    "dataset", "model", "layer", "kind", "neuron", "target", "rank",
    "train_pearson", "test_spearman", "test_r2", "cos_in", "cos_out",
)  # fmt: skip
"""neurons.parquet: one ranked neuron or residual coordinate per row. (predictions.parquet holds the entity's key
columns, ``control``, ``layer`` and ``true_<target>`` / ``pred_<target>`` per target.)"""

_MEASURED = {"value", "run", "n_rows", "train_pearson", "test_spearman", "test_r2", "cos_in", "cos_out"}
"""Columns that hold what a run measured (the rest of a row is its key, for replacing a re-run's rows)."""


def run_key(manifests: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """A hash of the caches' identities (model weights checksum or hub commit, prompt template, ...) and file
    checksums, so a rebuilt cache whose bytes differ gets new results, and the run's settings."""
    payload = {
        "caches": [{**CacheIdentity.of(m).as_dict(), "files": m.get("files")} for m in manifests],
        "settings": settings,
        "results_format": 3,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=json_default).encode()).hexdigest()[:16]


class RunFolder(type(Path())):  # type: ignore[misc]
    """A finished run's folder: a ``pathlib.Path`` (so ``folder / "summary.json"`` works) that also reads what the run
    wrote. ``run_probe``, ``run_ask``, ``run_steer``, ``run_context`` and ``find_neurons`` return one.

    >>> run = run_probe("world_place", "smollm2-135m", controls=["all"])   # doctest: +SKIP
    >>> run.verdict, run.comparisons, run.metrics.head()   # doctest: +SKIP
    """

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json`` (the headline estimates, the verdict, settings, cost)."""
        return read_summary(self)

    @property
    def tables(self) -> list[str]:
        """The names of the run's tables (``metrics``, ``predictions``, ``steering``, ...)."""
        return sorted(p.name.removesuffix(".parquet") for p in self.glob("*.parquet"))

    def table(self, name: str) -> pd.DataFrame:
        """One of the run's tables as a DataFrame."""
        path = self / f"{name}.parquet"
        if not path.exists():
            raise WorldprobeError(f"this run has no {name} table", file=path, hint=f"its tables: {self.tables}")
        return pd.read_parquet(path)

    @property
    def metrics(self) -> pd.DataFrame:
        return self.table(METRICS)

    @property
    def predictions(self) -> pd.DataFrame:
        return self.table(PREDICTIONS)

    @property
    def holdouts(self) -> pd.DataFrame:
        return self.table(HOLDOUTS)

    @property
    def comparisons(self) -> pd.DataFrame:
        """A probe run's tested comparisons, one row each: the paired estimate with its interval and n, the declared
        margin, the unadjusted p-values of the difference and equivalence tests, and the outcome in the run's family."""
        summary = self.summary
        found = summary.get("headline", {}).get("comparisons")
        if found is None:
            raise WorldprobeError("this run has no tested comparisons (not a probe run, or an older worldprobe)",
                                  file=self / "summary.json", hint="re-run the probe stage")  # fmt: skip
        verdict = summary.get("verdict", {})
        outcomes = verdict.get("outcomes", {}) if isinstance(verdict, dict) else {}
        rows = [{"comparison": c["key"], "statistic": c["statistic"], **{k: c["estimate"][k] for k in ("value", "low",
                 "high", "n")}, "margin": c["margin"], "p_difference": c["p"]["difference"],
                 "p_equivalence": c["p"]["equivalence"], "in_family": c["in_family"],
                 "outcome": _outcome(outcomes.get(c["key"]), c["in_family"])} for c in found]  # fmt: skip
        return pd.DataFrame(rows)

    @property
    def verdict(self) -> str:
        """The run's verdict sentence (a probe run's is decided in the family of its own comparisons)."""
        found = self.summary.get("verdict", "")
        return found.get("sentence", "") if isinstance(found, dict) else str(found)


def _outcome(outcome: str | None, in_family: bool) -> str:
    if outcome is None:
        return "not decided"
    return outcome if in_family else f"{outcome} (unadjusted; not a label test)"


def run_dir(results_root: Path, dataset: str, model: str, prompt: str, probe: str, key: str) -> RunFolder:
    """``results/<dataset>__<model>__<prompt>__<probe>__<key>`` with unsafe characters of the model replaced."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dataset}__{model}__{prompt}__{probe}")
    return RunFolder(results_root / f"{safe}__{key}")


# --- one run: write, check, read -----------------------------------------------------------------------------------


def write_run(folder: Path, tables: dict[str, pd.DataFrame], summary: dict[str, Any]) -> RunFolder:
    """Write ``<name>.parquet`` per table, then ``summary.json`` (last: it marks the run complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        tmp = folder / f"{name}.parquet.tmp"
        frame.reset_index(drop=True).to_parquet(tmp, index=False)
        tmp.replace(folder / f"{name}.parquet")
    files = files_record(folder, [f"{name}.parquet" for name in tables])
    summary = {**summary, "files": files, "complete": True, "worldprobe_version": worldprobe.__version__}
    content = json.loads(json.dumps(summary, default=json_default))  # as a reader will see it
    tmp = folder / f"{SUMMARY}.tmp"
    tmp.write_text(json.dumps({**content, SELF_CHECKSUM: summary_digest(content)}, indent=2))
    tmp.replace(folder / SUMMARY)
    return RunFolder(folder)


SELF_CHECKSUM = "summary_sha256"
"""The summary's own checksum (over its content without this field): an edited summary.json is caught like an
edited table."""


def summary_digest(content: dict[str, Any]) -> str:
    """The sha256 of a summary's content (without :data:`SELF_CHECKSUM`), independent of its layout."""
    body = {k: v for k, v in content.items() if k != SELF_CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_results(
    folder: Path,
    *,
    metrics: pd.DataFrame,
    predictions: pd.DataFrame,
    holdouts: pd.DataFrame,
    summary: dict[str, Any],
) -> RunFolder:
    """Write a probe run: its three tables in the contract's columns, then the summary."""
    missing = [c for c in METRIC_COLUMNS if c not in metrics.columns]
    if missing:
        raise ValueError(f"metrics lack columns {missing}")
    tables = {METRICS: metrics[list(METRIC_COLUMNS)], PREDICTIONS: predictions,
              HOLDOUTS: holdouts.reindex(columns=list(HOLDOUT_COLUMNS))}  # fmt: skip
    return write_run(folder, tables, summary)


def write_neurons(folder: Path, table: pd.DataFrame, record: dict[str, Any]) -> Path:
    """Write a neuron search: ``neurons.json`` first, then ``neurons.parquet`` (which marks it finished)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{NEURONS_FILE}.tmp"
    table[list(NEURON_COLUMNS)].to_parquet(tmp, index=False)
    digest = sha256_of(tmp)
    files = {NEURONS_FILE: {"bytes": tmp.stat().st_size, "sha256": digest}}
    (folder / NEURON_RECORD).write_text(json.dumps({**record, "files": files}, indent=2, default=json_default))
    tmp.replace(folder / NEURONS_FILE)
    remember(folder / NEURONS_FILE, digest)
    return folder


def file_problems(folder: Path, record: dict[str, Any], *, full: bool = False) -> list[str]:
    """Files of a finished run whose size or sha256 is not the one its summary (or neurons.json) records: an edited
    or damaged table. Runs written before results carried checksums record none and pass."""
    return recorded_problems(folder, record.get("files") or {}, full=full)


def run_problems(
    folder: Path, key: str | None = None, tables: Iterable[str] = PROBE_TABLES, *, full: bool = False
) -> list[str]:
    """What keeps ``folder`` from being a finished, readable run (with ``key``, when given) holding ``tables`` with
    the checksums its summary records: empty when none. ``full`` re-reads every file for its sha256."""
    try:
        summary = load_summary(folder)
    except FileNotFoundError:
        return [f"no {SUMMARY} (the run did not finish)"]
    except WorldprobeError as error:
        return [error.message]
    if summary.get("complete") is not True:
        return [f"{SUMMARY} does not mark the run complete"]
    if key is not None and summary.get("run_key") != key:
        return [f"{SUMMARY} has run key {summary.get('run_key')!r}, expected {key!r}"]
    if SELF_CHECKSUM in summary and summary[SELF_CHECKSUM] != summary_digest(summary):
        return [f"{SUMMARY} changed since the run wrote it (its content no longer has its recorded sha256)"]
    problems = []
    for name in tables:
        try:
            pq.read_table(folder / f"{name}.parquet")
        except FileNotFoundError:
            problems.append(f"{name}.parquet is missing")
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            problems.append(f"{name}.parquet is unreadable ({str(error).splitlines()[0][:120]})")
    return problems or file_problems(folder, summary, full=full)


def is_complete(folder: Path, key: str, tables: Iterable[str] = PROBE_TABLES) -> bool:
    """Whether ``folder`` holds a finished run with this key whose tables all read back (else it is redone)."""
    return not run_problems(folder, key, tables)


def read_metrics(folder: Path) -> pd.DataFrame:
    """The metrics table of a results folder."""
    path = Path(folder) / f"{METRICS}.parquet"
    if not path.exists():
        raise WorldprobeError("no metrics in this results folder", file=path, hint="run `worldprobe probe` first")
    return pd.read_parquet(path)


def load_summary(folder: Path) -> dict[str, Any]:
    """The one reader of a run's ``summary.json``: its content. A missing file raises ``FileNotFoundError``; one that
    does not read back as a JSON object raises a WorldprobeError naming it (and the line, for bad JSON)."""
    path = Path(folder) / SUMMARY
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except json.JSONDecodeError as error:
        raise WorldprobeError(f"{SUMMARY} is not valid JSON: {error.msg}", file=path, row=error.lineno) from None
    except (OSError, UnicodeDecodeError) as error:
        raise WorldprobeError(f"{SUMMARY} is unreadable ({type(error).__name__})", file=path) from None
    if not isinstance(summary, dict):
        raise WorldprobeError(f"{SUMMARY} is not a JSON object", file=path)
    return summary


def read_summary(folder: Path) -> dict[str, Any]:
    """The summary.json of a results folder (a missing one is an error saying how to make it)."""
    try:
        return load_summary(folder)
    except FileNotFoundError:
        raise WorldprobeError("no summary in this results folder", file=Path(folder) / SUMMARY,
                              hint="run `worldprobe probe` first") from None  # fmt: skip


def summaries(results_dir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(folder, summary) of every run under ``results_dir`` whose summary reads back, in folder-name order; the
    others are passed over (:func:`run_problems` and ``worldprobe verify`` say what is wrong with them)."""
    for folder in sorted(p.parent for p in Path(results_dir).glob(f"*/{SUMMARY}")):
        try:
            yield folder, load_summary(folder)
        except (FileNotFoundError, WorldprobeError):
            continue


# --- every run of a workspace --------------------------------------------------------------------------------------


@dataclass
class Results:
    """All current results of a workspace, concatenated over run folders (design.md, "Results").

    ``metrics`` holds the rows over every test entity (``subset == "all"``), ``breakdown`` the per-entity-type rows;
    ``summaries`` the summary.json of each probe run; ``stale`` the folders left out because they were computed from
    another build of their dataset (or by an older worldprobe), each with the reason; ``missing`` what was skipped
    or not found.
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
        known = [name for name in all_specs() if name in found]
        return known + sorted(found - set(known))

    def kind(self, dataset: str) -> str:
        """``place`` or ``time``: from the registry, else from the prediction columns."""
        specs = all_specs()
        if dataset in specs:
            return specs[dataset].kind
        return "place" if "true_latitude" in self.predictions.columns else "time"


RunFilter = Callable[[Path, dict[str, pd.DataFrame]], "str | None"]
"""Given a run folder and its tables, why to leave the run out (a sentence for ``missing``), or None to keep it."""


def load_results(results_dir: Path, datasets_dir: Path | None = None, *, leave_out: RunFilter | None = None) -> Results:
    """Concatenate the tables of every finished, current run folder under ``results_dir``.

    A probe run without ``summary.json`` (or with ``"complete": false``) is still being written: it is skipped and
    named in ``missing``. With ``datasets_dir`` (the workspace's ``datasets/``), a run computed from another build of
    its dataset than the one there now (its recorded fingerprint differs), or written by an older worldprobe without
    a headline, is left out and named in ``stale``: results of two builds are never drawn or tabulated together. A
    run ``leave_out`` gives a reason for is named in ``missing``. When two runs hold the same row key (a re-run), the
    newer run's value is kept. Missing tables become empty frames.
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
    frames: dict[str, list[pd.DataFrame]] = {table: [] for table in READ_TABLES}
    summaries = [_read_run(folder, frames, missing, leave_out) for folder in runs]
    tables = {t: _latest(pd.concat(f, ignore_index=True)) if f else pd.DataFrame() for t, f in frames.items()}
    metrics = tables.pop(METRICS)
    breakdown = pd.DataFrame()
    if "subset" in metrics.columns:
        breakdown = metrics[metrics["subset"] != "all"].reset_index(drop=True)
        metrics = metrics[metrics["subset"] == "all"].reset_index(drop=True)
    if not metrics.empty:
        metrics["control"] = metrics["control"].fillna("none")
    if not tables[PREDICTIONS].empty and "control" in tables[PREDICTIONS]:
        tables[PREDICTIONS]["control"] = tables[PREDICTIONS]["control"].fillna("none")
    return Results(metrics=metrics, **tables, summaries=[s for s in summaries if s], runs=runs, missing=missing,
                   breakdown=breakdown, stale=stale)  # fmt: skip


def stale_reason(folder: Path, datasets_dir: Path) -> str | None:
    """Why a finished run folder is not from the current build of its dataset (None when it is): the one stale
    check of every reader of results (the report's probe runs, its ask/steer/context sections, ``verify``).

    A probe run records its cache's dataset fingerprint in ``summary.json`` (``cache``), an ask/steer/context run in
    ``summary.json`` too (``probe.cache``), a neuron search in ``neurons.json``; the current build's is in
    ``datasets/<dataset>.build.json``.
    """
    record = folder / (SUMMARY if (folder / SUMMARY).exists() else NEURON_RECORD)
    if not record.exists():
        return "no record of the dataset build it used (written by an older worldprobe): re-run it"
    try:
        summary = load_summary(folder) if record.name == SUMMARY else json.loads(record.read_text())
    except (json.JSONDecodeError, WorldprobeError):
        return f"{record.name} is not valid JSON: re-run it"
    probe_run = record.name == SUMMARY and "stage" not in summary
    if probe_run and "headline" not in summary:
        return "written by an older worldprobe (no train-selected layer or intervals): re-run `worldprobe probe`"
    if probe_run and "comparisons" not in summary["headline"]:
        return ("written by an older worldprobe (its verdict has no tested comparisons, docs/verdicts.md): re-run "
                "`worldprobe probe`")  # fmt: skip
    dataset = summary.get("dataset")
    build = datasets_dir / f"{dataset}.build.json"
    if not build.exists():
        return f"dataset {dataset} is no longer built in this workspace"
    try:
        current = recorded_fingerprint(build)
    except WorldprobeError:
        return f"{build} is unreadable"
    used = (summary.get("cache") or (summary.get("probe") or {}).get("cache") or {}).get("dataset_fingerprint")
    if used != current:
        return f"computed from another build of {dataset} (fingerprint {str(used)[:12]}, now {str(current)[:12]})"
    return None


def find_runs(results_dir: Path, *, stage: str, dataset: str, datasets_dir: Path | None = None
              ) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:  # fmt: skip
    """The finished ``stage`` runs (``ask``, ``steer``, ``context``) of ``dataset`` with their summaries, and notes on
    the runs left out: an unreadable summary, or (with ``datasets_dir``) a run from another build
    (:func:`stale_reason`)."""
    found, notes = [], []
    for folder in sorted(p for p in Path(results_dir).iterdir() if (p / SUMMARY).is_file()):
        try:
            summary = load_summary(folder)
        except WorldprobeError:
            notes.append(f"{folder / SUMMARY} is not valid JSON: left out")
            continue
        if summary.get("stage") != stage or summary.get("dataset") != dataset or not summary.get("complete"):
            continue
        reason = stale_reason(folder, Path(datasets_dir)) if datasets_dir is not None else None
        if reason:
            notes.append(f"{stage} run {folder.name} {reason}: left out (re-run it)")
            continue
        found.append((folder, summary))
    return found, notes


def _read_run(
    folder: Path, frames: dict[str, list[pd.DataFrame]], missing: list[str], leave_out: RunFilter | None
) -> dict[str, Any] | None:
    """Append the run's tables to ``frames`` (unless ``leave_out`` names a reason); return its summary (with
    ``run``), or None for a neuron search or a run left out."""
    try:
        summary = load_summary(folder)
    except FileNotFoundError:
        summary = {}
    summary["run"] = folder.name
    tables = {}
    for table in READ_TABLES:
        path = folder / f"{table}.parquet"
        if path.exists():
            try:
                tables[table] = pd.read_parquet(path).assign(run=folder.name)
            except Exception as error:  # pyarrow raises several types for a damaged file
                raise WorldprobeError(f"cannot read results table: {error}", file=path) from error
    reason = leave_out(folder, tables) if leave_out is not None else None
    if reason:
        missing.append(f"run {folder.name} {reason}")
        return None
    for table, frame in tables.items():
        frames[table].append(frame)
    return summary if "run_key" in summary or "headline" in summary else None


def _intervention(folder: Path) -> bool:
    """An ``ask`` or ``steer`` run (``worldprobe.reports.interventions`` draws those)."""
    return any((folder / f"{name}.parquet").exists() for name in (ANSWERS, STEERING, CONTEXT))


def _age(folder: Path) -> tuple[int, str]:
    """Older runs first, so a re-run's rows replace them."""
    files = [p for p in (folder / SUMMARY, folder / NEURONS_FILE) if p.exists()]
    return (max(p.stat().st_mtime_ns for p in files) if files else 0, folder.name)


def _unfinished(folder: Path) -> bool:
    """A probe run (metrics or predictions) is finished once its summary says so; a neurons-only folder always is."""
    if not any((folder / f"{t}.parquet").exists() for t in (METRICS, PREDICTIONS)):
        return False
    try:
        return load_summary(folder).get("complete", True) is False
    except (FileNotFoundError, WorldprobeError):
        return True


def _latest(table: pd.DataFrame) -> pd.DataFrame:
    """Drop rows a newer run repeats (same values in every column but the measured ones and ``run``)."""
    measured = _MEASURED | {c for c in table.columns if c.startswith("pred_")}
    keys = [c for c in table.columns if c not in measured]
    return table.drop_duplicates(subset=keys, keep="last").drop(columns="run").reset_index(drop=True)
