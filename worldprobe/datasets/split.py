"""Seeded train/test splits that keep whole groups on one side."""

from __future__ import annotations

import numpy as np
import pandas as pd

from worldprobe.config import TEST_FRACTION


def grouped_split(keys: pd.Series, *, seed: int, test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """Boolean ``is_test`` per row; rows sharing a key (e.g. the same text, complex or creator) share a side.

    Groups are shuffled with ``seed`` and taken into the test side until it holds ``test_fraction`` of the rows.
    """
    codes, uniques = pd.factorize(keys.astype(str), sort=True)
    sizes = np.bincount(codes, minlength=len(uniques))
    order = np.random.default_rng(seed).permutation(len(uniques))
    cumulative = np.cumsum(sizes[order])
    n_test_groups = int(np.searchsorted(cumulative, test_fraction * len(keys), side="left")) + 1
    test_groups = np.zeros(len(uniques), dtype=bool)
    test_groups[order[: min(n_test_groups, len(uniques))]] = True
    return test_groups[codes]


def text_leaks(table: pd.DataFrame) -> pd.DataFrame:
    """Rows whose ``text`` appears on both sides of the split (sorted by text)."""
    sides = table.groupby("text")["is_test"].nunique()
    leaking = sides[sides > 1].index
    return table[table["text"].isin(leaking)].sort_values(["text", "is_test"])


def split_leaks(table: pd.DataFrame) -> list[dict[str, object]]:
    """Texts found on both sides of the split, with the entity_ids on each side (sorted by text); for build reports."""
    leaks = text_leaks(table)
    return [
        {
            "text": text,
            "train": rows.loc[~rows["is_test"], "entity_id"].tolist(),
            "test": rows.loc[rows["is_test"], "entity_id"].tolist(),
        }
        for text, rows in leaks.groupby("text", sort=True)
    ]
