"""Validation of entity tables: every stage after the builders can trust what passes here."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from worldprobe.datasets.registry import DatasetSpec
from worldprobe.errors import WorldprobeError

YEAR_RANGE = (-3000.0, 2100.0)
RANGES = {"latitude": (-90.0, 90.0), "longitude": (-180.0, 180.0), "year": YEAR_RANGE}


def validate(table: pd.DataFrame, spec: DatasetSpec, *, origin: str | None = None) -> pd.DataFrame:
    """Check an entity table against the contract and return it unchanged.

    Raises :class:`WorldprobeError` naming the dataset (or ``origin``, e.g. a file), the first bad row
    (0-based position in the table) and the field.
    """
    where = origin or spec.name
    missing = [c for c in spec.required_columns if c not in table.columns]
    if missing:
        raise WorldprobeError(f"missing column(s) {missing}", file=where, field=missing[0])
    if table.empty:
        raise WorldprobeError("the table has no rows", file=where)
    for column in spec.targets:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        low, high = RANGES[column]
        bad = ~np.isfinite(values) | (values < low) | (values > high)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise WorldprobeError(
                f"{column} {_shown(table[column].iloc[row])} is not a number in [{low:g}, {high:g}]",
                file=where, row=row, field=column,
            )  # fmt: skip
    text = table["text"]
    bad_text = text.isna().to_numpy() | ~text.map(lambda t: isinstance(t, str) and t.strip() != "").to_numpy()
    _raise_first(bad_text, table, where, "text", "is empty")
    stripped = text.map(lambda t: t != t.rstrip()).to_numpy()
    _raise_first(stripped, table, where, "text", "ends in whitespace")
    _raise_first(table["name"].isna().to_numpy(), table, where, "name", "is missing")
    no_source = ~table["source"].map(lambda s: isinstance(s, str) and s.strip() != "").to_numpy(dtype=bool)
    _raise_first(no_source, table, where, "source", "is not a source name")
    duplicated = table["entity_id"].duplicated().to_numpy()
    _raise_first(duplicated, table, where, "entity_id", "is not unique")
    if table["is_test"].dtype != bool:
        raise WorldprobeError(f"is_test must be boolean, not {table['is_test'].dtype}", file=where, field="is_test")
    return table


def _raise_first(mask: np.ndarray, table: pd.DataFrame, where: str, field: str, problem: str) -> None:
    if mask.any():
        row = int(np.flatnonzero(mask)[0])
        raise WorldprobeError(f"{field} {_shown(table[field].iloc[row])} {problem}", file=where, row=row, field=field)


def _shown(value: object) -> str:
    """A cell as a reader knows it: 123.0, 'Paris', nan (not numpy's np.float64(123.0))."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def refuse_repeated_columns(path: Path, *, origin: str | None = None) -> None:
    """Refuse a CSV whose header names a column twice: pandas reads the second as ``name.1`` and every reader would
    take the first without a word. Call it after the file has been read as text once (it decodes as UTF-8)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle), [])
    repeated = [name for name, count in Counter(header).items() if count > 1]
    if repeated:
        raise WorldprobeError(f"the header names the column {repeated[0]!r} twice", file=origin or str(path), row=1,
                              field=repeated[0], hint="keep one of them")  # fmt: skip
