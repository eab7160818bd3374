"""Your own entities from a CSV file: ``worldprobe datasets build NAME --from FILE.csv --kind place|time``.

The file needs a ``name`` column and the targets of its kind: ``latitude`` and ``longitude`` (place) or ``year``
(time); optional columns are ``entity_type`` and any group column named by ``--group-by`` (kept, and used by the
controls that need groups: the group oracle, the within-group probe, the alternative worlds, held-out blocks). Without
``--group-by`` a place's group is its 10° latitude x longitude cell and a time's its century (or decade, when the years
span less than 300); the spec says which. A bad row is an error naming the file, the row (1-based, as a spreadsheet
shows it, the header being row 1) and the field; nothing is dropped silently. The split is seeded and grouped by the
text (``--test-size``, default 0.2). The file is recorded with its sha256 (no licence is asked of your own file).
The dataset's spec is written beside its table (``datasets/<name>.spec.json``), so every later stage knows it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from worldprobe.checksums import sha256_of
from worldprobe.datasets.builder import BuildContext, BuildOptions, build, register_builder
from worldprobe.datasets.registry import (
    PLACE_TARGETS,
    TIME_TARGETS,
    USER_SPEC_SUFFIX,
    DatasetSpec,
    check_user_name,
    register_user_dataset,
    spec_dict,
)
from worldprobe.datasets.schema import RANGES, refuse_repeated_columns
from worldprobe.errors import WorldprobeError
from worldprobe.workspace import Workspace, as_workspace

SOURCE = "csv"
KINDS = ("place", "time")
CELL_DEGREES = 10.0
"""A place's default group: its cell of CELL_DEGREES x CELL_DEGREES degrees."""


def build_own(
    name: str,
    path: str | Path,
    kind: str,
    *,
    group_by: str | None = None,
    test_size: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
    workspace: Workspace | str | Path | None = None,
) -> tuple[Path, object]:
    """Build a dataset of your own from a CSV file (module docstring); return the table path and its build report."""
    check_user_name(name)
    if kind not in KINDS:
        raise WorldprobeError(f"unknown kind {kind!r}", field="kind", hint="place (latitude, longitude) or time (year)")
    if not 0 < test_size < 1:
        raise WorldprobeError(f"--test-size must lie between 0 and 1, not {test_size}", field="test_size",
                              hint="e.g. 0.2")  # fmt: skip
    file = Path(path).expanduser()
    raw = read_csv(file, kind, group_by)
    group = group_by or ("cell" if kind == "place" else _time_group(raw["year"]))
    spec = DatasetSpec(
        name, kind, f"your own {kind}s from {file.name}", group_columns=(group,), holdout_columns=(group,),
        oracle_column=group, prompts=("empty",),
    )  # fmt: skip
    register_user_dataset(spec)
    register_builder(name, SOURCE)(lambda context: _rows(context, raw, file, kind, group, test_size))
    options = BuildOptions(from_path=str(file), seed=seed, limit=limit)
    table_path, report = build(name, SOURCE, options, workspace)
    ws = as_workspace(workspace)
    (ws.datasets / f"{name}{USER_SPEC_SUFFIX}").write_text(json.dumps(spec_dict(spec), indent=2))
    return table_path, report


def read_csv(file: Path, kind: str, group_by: str | None) -> pd.DataFrame:
    """The CSV's rows, with every needed column present and every target a number in range (errors name the row)."""
    if not file.is_file():
        raise WorldprobeError("no such file", file=file, hint="a CSV with a header row")
    try:
        raw = pd.read_csv(file, encoding="utf-8-sig", dtype={"name": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise WorldprobeError(f"cannot read the CSV: {str(error).splitlines()[0]}", file=file) from None
    refuse_repeated_columns(file)
    targets = PLACE_TARGETS if kind == "place" else TIME_TARGETS
    needed = ["name", *targets, *([group_by] if group_by else [])]
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise WorldprobeError(f"no column {missing[0]!r}", file=file, row=1, field=missing[0],
                              hint=f"a {kind} file needs the columns {', '.join(needed)}")  # fmt: skip
    if raw.empty:
        raise WorldprobeError("the file has no rows", file=file)
    names = raw["name"].astype("string")
    empty = names.isna() | (names.str.strip() == "")
    _refuse(empty.to_numpy(), file, "name", "is empty")
    for column in targets:
        values = pd.to_numeric(raw[column], errors="coerce")
        low, high = RANGES[column]
        bad = (values.isna() | (values < low) | (values > high)).to_numpy()
        _refuse(bad, file, column, f"is not a number in [{low:g}, {high:g}]", raw[column])
        raw[column] = values.astype(float)
    return raw


def _refuse(bad: np.ndarray, file: Path, field: str, problem: str, values: pd.Series | None = None) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = values.iloc[i] if values is not None else None
        shown = "" if values is None else f" {value.item() if isinstance(value, np.generic) else value!r}"
        raise WorldprobeError(f"{field}{shown} {problem}", file=file, row=i + 2, field=field,
                              hint=f"{int(bad.sum())} row(s) like it; fix or remove them")  # fmt: skip


def _time_group(years: pd.Series) -> str:
    return "century" if years.max() - years.min() >= 300 else "decade"


def _rows(context: BuildContext, raw: pd.DataFrame, file: Path, kind: str, group: str, test_size: float
          ) -> pd.DataFrame:  # fmt: skip
    """The entity table of the CSV's rows: ids, text, entity type, group, split."""
    context.record_input(what=file.name, sha256=sha256_of(file), licence="your own file",
                         attribution="you", path=str(file.resolve()))  # fmt: skip
    context.rows_in = len(raw)
    table = raw.copy()
    table["name"] = table["name"].astype(str)
    table["text"] = table["name"].str.strip()
    table["entity_id"] = [f"{context.dataset}:{i}" for i in range(len(table))]
    table["entity_type"] = table["entity_type"].fillna("entity").astype(str) if "entity_type" in table else "entity"
    table["source"] = SOURCE
    if group == "cell":
        lat = (np.floor(table["latitude"] / CELL_DEGREES) * CELL_DEGREES).astype(int)
        lon = (np.floor(table["longitude"] / CELL_DEGREES) * CELL_DEGREES).astype(int)
        table["cell"] = lat.astype(str) + "," + lon.astype(str)
    elif group in ("century", "decade") and group not in raw.columns:
        step = 100 if group == "century" else 10
        table[group] = (np.floor(table["year"] / step) * step).astype(int)
    table[group] = table[group].astype("string").fillna("<missing>").astype(str)
    context.notes.append(f"groups: {group}" + (" (derived)" if group not in raw.columns else " (from the file)"))
    return context.split(table, table["text"], f"seeded split grouped by text, {test_size:.0%} test",
                         test_fraction=test_size)  # fmt: skip
