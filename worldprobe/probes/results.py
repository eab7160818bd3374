"""Writing and reading a probe run's results folder (docs/design.md "Results") and the run key that lets
``worldprobe probe`` skip work whose results already exist for the same inputs."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

import worldprobe
from worldprobe.errors import WorldprobeError
from worldprobe.extract.cache import IDENTITY_FIELDS

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
SUMMARY = "summary.json"
RESULT_FILES = ("metrics.parquet", "predictions.parquet", "holdouts.parquet", SUMMARY)

_MANIFEST_KEYS = (*IDENTITY_FIELDS, "files")
"""What a cache contributes to a run key: its identity (model weights checksum or hub commit, prompt template, ...)
and its files' checksums, so a rebuilt cache whose bytes differ gets new results."""


def run_key(manifests: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """A hash of the caches' identities and file checksums, and the probe settings."""
    payload = {
        "caches": [{k: m.get(k) for k in _MANIFEST_KEYS} for m in manifests],
        "settings": settings,
        "results_format": 2,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=_json_default).encode()).hexdigest()[:16]


def run_dir(results_root: Path, dataset: str, model: str, prompt: str, probe: str, key: str) -> Path:
    """``results/<dataset>__<model>__<prompt>__<probe>__<key>`` with unsafe characters of the model replaced."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dataset}__{model}__{prompt}__{probe}")
    return results_root / f"{safe}__{key}"


def is_complete(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a finished run with this key whose files can all be read (else it is redone)."""
    return not results_problems(folder, key)


def results_problems(folder: Path, key: str | None = None) -> list[str]:
    """What keeps ``folder`` from being a finished, readable run (with ``key``, when given): empty when none."""
    path = folder / SUMMARY
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        return [f"no {SUMMARY} (the run did not finish)"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return [f"{SUMMARY} is unreadable ({type(error).__name__})"]
    if not isinstance(summary, dict) or summary.get("complete") is not True:
        return [f"{SUMMARY} does not mark the run complete"]
    if key is not None and summary.get("run_key") != key:
        return [f"{SUMMARY} has run key {summary.get('run_key')!r}, expected {key!r}"]
    problems = []
    for name in RESULT_FILES[:-1]:
        try:
            pq.read_table(folder / name)
        except FileNotFoundError:
            problems.append(f"{name} is missing")
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            problems.append(f"{name} is unreadable ({str(error).splitlines()[0][:120]})")
    return problems


def write_results(
    folder: Path,
    *,
    metrics: pd.DataFrame,
    predictions: pd.DataFrame,
    holdouts: pd.DataFrame,
    summary: dict[str, Any],
) -> Path:
    """Write the four result files; the summary goes last (it marks the run complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [c for c in METRIC_COLUMNS if c not in metrics.columns]
    if missing:
        raise ValueError(f"metrics lack columns {missing}")
    for frame, name in ((metrics[list(METRIC_COLUMNS)], "metrics"), (predictions, "predictions"),
                        (holdouts.reindex(columns=list(HOLDOUT_COLUMNS)), "holdouts")):  # fmt: skip
        tmp = folder / f"{name}.parquet.tmp"
        frame.reset_index(drop=True).to_parquet(tmp, index=False)
        tmp.replace(folder / f"{name}.parquet")
    summary = {**summary, "complete": True, "worldprobe_version": worldprobe.__version__}
    tmp = folder / f"{SUMMARY}.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=_json_default))
    tmp.replace(folder / SUMMARY)
    return folder


def read_metrics(folder: Path) -> pd.DataFrame:
    """The metrics table of a results folder."""
    path = Path(folder) / "metrics.parquet"
    if not path.exists():
        raise WorldprobeError("no metrics in this results folder", file=path, hint="run `worldprobe probe` first")
    return pd.read_parquet(path)


def read_summary(folder: Path) -> dict[str, Any]:
    """The summary.json of a results folder."""
    path = Path(folder) / SUMMARY
    if not path.exists():
        raise WorldprobeError("no summary in this results folder", file=path, hint="run `worldprobe probe` first")
    return json.loads(path.read_text())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, tuple, set)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
