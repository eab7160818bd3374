"""Writing and reading entity tables and their build reports (the contract between stages)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import worldprobe
from worldprobe.datasets.registry import get_spec
from worldprobe.datasets.schema import validate
from worldprobe.errors import WorldprobeError
from worldprobe.jsonable import json_default
from worldprobe.workspace import Workspace, as_workspace


@dataclass
class BuildReport:
    """Provenance of one built table, written next to it as ``<name>.build.json``."""

    dataset: str
    source: str  # "paper", "packaged", "live"
    inputs: list[dict[str, Any]]  # each: what (url or package==version or path), sha256, licence, attribution
    rows_in: int
    rows_out: int
    dropped: dict[str, int]  # reason -> number of rows dropped for it
    split_rule: str
    seed: int | None
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # builder-specific extras (e.g. split leaks)
    worldprobe_version: str = worldprobe.__version__

    def to_json(self) -> str:
        """The report as ``<name>.build.json`` holds it (:meth:`from_json` reads it back)."""
        return json.dumps(asdict(self), indent=2, default=json_default)

    @classmethod
    def from_json(cls, text: str) -> BuildReport:
        """A report read back from :meth:`to_json`'s text (keys of a newer worldprobe are left out; a missing one
        without a default raises ``TypeError``)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def fingerprint(table: pd.DataFrame) -> str:
    """A content hash of the table (columns, order and values); later stages record it in their manifests."""
    digest = hashlib.sha256()
    digest.update(json.dumps(list(map(str, table.columns))).encode())
    digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def checked_fingerprint(
    name: str, workspace: Workspace | str | Path | None = None, table: pd.DataFrame | None = None
) -> str | None:
    """The fingerprint the build report of ``name`` records, after checking that the stored table (or ``table``, the
    same table already read) still has it; None when the dataset is not built in the workspace.

    A table edited or swapped after its build is refused: every cache and result made from the build would be read
    as if they described the new table. The stored table is hashed once per file version (path, size, mtime)."""
    ws = as_workspace(workspace)
    report, path = ws.dataset_report(name), ws.dataset_table(name)
    if not report.exists():
        return None
    recorded = recorded_fingerprint(report)
    if recorded is None or (table is None and not path.exists()):
        return recorded
    actual = fingerprint(table) if table is not None else _stored_fingerprint(path)
    if actual != recorded:
        raise WorldprobeError(
            f"the table does not match its build report (fingerprint {actual}, recorded {recorded}): it changed "
            "after it was built, or an older worldprobe built it", file=path,
            hint=f"build it again: `worldprobe datasets build {name}` (with the options you used)",
        )  # fmt: skip
    return recorded


def recorded_fingerprint(report: Path) -> str | None:
    """The table fingerprint a build report (``<name>.build.json``) records, None when it records none, read through
    :meth:`BuildReport.from_json` (the one reader of the file): what every stage asks to know whether a cache or result
    comes from the current build. An unreadable report is a :class:`WorldprobeError` naming it."""
    try:
        recorded = BuildReport.from_json(report.read_text()).fingerprint
    except (OSError, ValueError, TypeError):
        name = report.name.removesuffix(".build.json")
        raise WorldprobeError("unreadable build report", file=report,
                              hint=f"build it again: `worldprobe datasets build {name}`") from None  # fmt: skip
    return str(recorded) if recorded else None


_STORED: dict[tuple[str, int, int], str] = {}


def _stored_fingerprint(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _STORED:
        try:
            _STORED[key] = fingerprint(pd.read_parquet(path))
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise WorldprobeError(f"damaged dataset table: {str(error).splitlines()[0]}", file=path,
                                  hint="build it again: `worldprobe datasets build ...`") from None  # fmt: skip
    return _STORED[key]


def sample_rows(table: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """A seeded random sample of ``limit`` rows, kept in table order (the whole table when it is not larger).

    What ``--limit`` means in every command: a sample, not the first rows, because tables are ordered by source and
    size (the paper's world_place CSV starts with 3,000 structures).
    """
    if limit < 1:
        raise WorldprobeError(f"limit must be positive, not {limit}", field="limit")
    if len(table) <= limit:
        return table.reset_index(drop=True)
    rows = np.sort(np.random.default_rng(seed).choice(len(table), size=limit, replace=False))
    return table.iloc[rows].reset_index(drop=True)


def write_table(table: pd.DataFrame, report: BuildReport, workspace: Workspace | str | Path | None = None) -> Path:
    """Validate ``table`` and write ``<name>.parquet`` and ``<name>.build.json``; return the parquet path."""
    spec = get_spec(report.dataset)
    table = table.reset_index(drop=True)
    validate(table, spec)
    ws = as_workspace(workspace)
    report.rows_out = len(table)
    path = ws.dataset_table(spec.name)
    tmp = path.with_name(path.name + ".tmp")
    table.to_parquet(tmp, index=False)
    report.fingerprint = fingerprint(pd.read_parquet(tmp))  # of the table as stored, which every later stage reads
    tmp.replace(path)
    ws.dataset_report(spec.name).write_text(report.to_json())
    return path


def load(name: str, workspace: Workspace | str | Path | None = None) -> pd.DataFrame:
    """The validated entity table ``name`` from the workspace (build it first with ``worldprobe datasets build``)."""
    spec = get_spec(name)
    path = as_workspace(workspace).dataset_table(spec.name)
    if not path.exists():
        raise WorldprobeError("dataset not built yet", file=path, hint=f"run `worldprobe datasets build {name}` first")
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise WorldprobeError(f"damaged dataset table: {str(error).splitlines()[0]}", file=path,
                              hint=f"build it again: `worldprobe datasets build {name}`") from None  # fmt: skip
    return validate(table, spec, origin=str(path))


def load_report(name: str, workspace: Workspace | str | Path | None = None) -> BuildReport:
    """The build report of a built dataset, as written by :func:`write_table`."""
    path = as_workspace(workspace).dataset_report(get_spec(name).name)
    if not path.exists():
        raise WorldprobeError("build report missing", file=path, hint=f"run `worldprobe datasets build {name}`")
    try:
        return BuildReport.from_json(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as error:
        raise WorldprobeError(f"damaged build report: {error}", file=path,
                              hint=f"build it again: `worldprobe datasets build {name}`") from None  # fmt: skip
