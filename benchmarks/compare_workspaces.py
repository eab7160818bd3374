"""Are two workspaces' results the same? For a change that should not move any number (a refactor), run the same
study into two empty workspaces, before and after the change, and compare them:

    python benchmarks/compare_workspaces.py BEFORE/workspace AFTER/workspace

Compares the dataset tables (bytes) and build reports (minus the version), the cache folder names (their identity
keys), every results folder by name (same run key) table by table and summary by summary (minus timings and the
version), and the report's text. Numbers count as equal within ``--rtol`` (default 1e-9: float64 arithmetic done in
another order moves the last digits); text, keys and missing values must match exactly. Prints one line per
difference, the largest relative difference of any number compared, and a count; exits
1 when anything differs.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

VOLATILE = {"cost", "time", "worldprobe_version", "created", "path", "summary_sha256"}
"""Summary and report keys that record when, how long or where, not what (the summary's checksum of itself covers its
timings)."""


def _strip(value: object) -> object:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _json(path: Path) -> object:
    return _strip(json.loads(path.read_text()))


class Numbers:
    """Compares numbers within a relative tolerance and keeps the largest relative difference seen."""

    def __init__(self, rtol: float) -> None:
        self.rtol, self.largest = rtol, 0.0

    def close(self, a: np.ndarray, b: np.ndarray) -> bool:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
            return False
        both = ~np.isnan(a)
        if both.any():
            scale = np.maximum(np.abs(a[both]), np.abs(b[both]))
            rel = np.abs(a[both] - b[both]) / np.where(scale > 0, scale, 1.0)
            self.largest = max(self.largest, float(rel.max()))
            return bool((rel <= self.rtol).all())
        return True

    def frames(self, a: pd.DataFrame, b: pd.DataFrame) -> bool:
        if list(a.columns) != list(b.columns) or len(a) != len(b):
            return False
        for column in a.columns:
            x, y = a[column], b[column]
            if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y) and x.dtype != bool:
                if not self.close(x.to_numpy(), y.to_numpy()):
                    return False
            elif not x.equals(y):
                return False
        return True

    def json(self, a: object, b: object) -> bool:
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(self.json(a[k], b[k]) for k in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(self.json(x, y) for x, y in zip(a, b, strict=True))
        numbers = (int, float)
        if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
            return self.close(np.array([a]), np.array([b]))
        return a == b


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def compare(before: Path, after: Path, numbers: Numbers) -> list[str]:
    """Every difference between the two workspaces, one line each."""
    out = []
    for name in sorted(_names(before / "datasets") | _names(after / "datasets")):
        a, b = before / "datasets" / name, after / "datasets" / name
        if not (a.exists() and b.exists()):
            out.append(f"datasets/{name}: only in {'before' if a.exists() else 'after'}")
        elif name.endswith(".parquet") and a.read_bytes() != b.read_bytes():
            out.append(f"datasets/{name}: bytes differ")
        elif name.endswith(".json") and _json(a) != _json(b):
            out.append(f"datasets/{name}: build report differs")
    only = _names(before / "activations") ^ _names(after / "activations")
    out += [f"activations/{name}: only in one workspace (identity key changed?)" for name in sorted(only)]
    for name in sorted(_names(before / "results") | _names(after / "results")):
        a, b = before / "results" / name, after / "results" / name
        if not (a.exists() and b.exists()):
            out.append(f"results/{name}: only in {'before' if a.exists() else 'after'}")
            continue
        for file in sorted(_names(a) | _names(b)):
            fa, fb = a / file, b / file
            if not (fa.exists() and fb.exists()):
                out.append(f"results/{name}/{file}: only in {'before' if fa.exists() else 'after'}")
            elif file.endswith(".parquet"):
                if not numbers.frames(pd.read_parquet(fa), pd.read_parquet(fb)):
                    out.append(f"results/{name}/{file}: values differ")
            elif file.endswith(".json") and not numbers.json(_json(fa), _json(fb)):
                out.append(f"results/{name}/{file}: differs beyond timings")
    ha, hb = before / "reports" / "index.html", after / "reports" / "index.html"
    if ha.exists() and hb.exists():
        text = [re.sub(r"<[^>]+>", " ", h.read_text()) for h in (ha, hb)]
        text = [re.sub(r"\s+", " ", re.sub(r"/\S+/workspace", "WS", t)) for t in text]
        if text[0] != text[1]:
            words = [t.split(" ") for t in text]
            steps = difflib.SequenceMatcher(None, *words, autojunk=False).get_opcodes()
            changed = [f"{' '.join(words[0][i1:i2])!r} -> {' '.join(words[1][j1:j2])!r}"
                       for tag, i1, i2, j1, j2 in steps if tag != "equal"]  # fmt: skip
            out.append(f"reports/index.html: text differs in {len(changed)} place(s): " + "; ".join(changed[:5]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance of numbers (default 1e-9)")
    args = parser.parse_args()
    numbers = Numbers(args.rtol)
    found = compare(args.before, args.after, numbers)
    print("\n".join(found))
    print(f"largest relative difference of any number compared: {numbers.largest:.2g}")
    print(f"{len(found)} difference(s)")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
