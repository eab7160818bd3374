"""Are two workspaces' results the same? For a change that should not move any number (a refactor), run the same
study into two empty workspaces, before and after the change, and compare them:

    python benchmarks/compare_workspaces.py BEFORE/workspace AFTER/workspace

Compares the dataset tables (bytes) and build reports (minus the version), the cache folder names (their identity
keys), every results folder by name (same run key) table by table (values exactly; NaN equals NaN) and summary by
summary (minus timings and the version), and the report's verdict table and sentences. Prints one line per
difference and a count; exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

VOLATILE = {"cost", "time", "worldprobe_version", "created", "path"}
"""Summary and report keys that record when, how long or where, not what."""


def _strip(value: object) -> object:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _json(path: Path) -> object:
    return _strip(json.loads(path.read_text()))


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def compare(before: Path, after: Path) -> list[str]:
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
                ta, tb = pd.read_parquet(fa), pd.read_parquet(fb)
                if not ta.equals(tb):
                    out.append(f"results/{name}/{file}: values differ")
            elif file.endswith(".json") and _json(fa) != _json(fb):
                out.append(f"results/{name}/{file}: differs beyond timings")
    ha, hb = before / "reports" / "index.html", after / "reports" / "index.html"
    if ha.exists() and hb.exists():
        text = [re.sub(r"<[^>]+>", " ", h.read_text()) for h in (ha, hb)]
        text = [re.sub(r"\s+", " ", re.sub(r"/\S+/workspace", "WS", t)) for t in text]
        if text[0] != text[1]:
            out.append("reports/index.html: text differs")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    found = compare(args.before, args.after)
    print("\n".join(found))
    print(f"{len(found)} difference(s)")
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
