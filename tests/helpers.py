"""Helpers the tests share (fixtures are in conftest.py): paths to the fixtures and the paper's release data, and a
small valid entity table."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAPER_DATA = PROJECT_ROOT.parent / "shared" / "paper-data"


def paper_csv(name: str) -> Path:
    """A release CSV from ../shared/paper-data, or skip the test with a visible reason."""
    path = PAPER_DATA / f"{name}.csv"
    if not path.exists():
        pytest.skip(f"paper release data not found at {path}")
    return path


def write_entity_table(workspace, texts: list[str], dataset: str = "world_place"):
    """Write a small valid world_place table with these entity texts into ``workspace``; return the table."""
    import numpy as np
    import pandas as pd

    from worldprobe.datasets.table import BuildReport, write_table

    rng = np.random.default_rng(0)
    n = len(texts)
    table = pd.DataFrame(
        {
            "entity_id": [f"e{i}" for i in range(n)], "name": texts, "text": texts,
            "latitude": rng.uniform(-60, 60, n), "longitude": rng.uniform(-170, 170, n),
            "entity_type": "city", "country": rng.choice(["A", "B", "C"], n), "is_test": np.arange(n) % 5 == 0,
            "source": "test",
        }
    )  # fmt: skip
    report = BuildReport(dataset, "test", [], n, n, {}, "every 5th row", 0)
    write_table(table, report, workspace)
    return table


def die_abruptly(unit: object) -> None:
    """A study unit whose worker process ends at once, as when the kernel's out-of-memory killer takes it."""
    import os

    os._exit(9)
