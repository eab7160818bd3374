"""What a steering run measures, per direction x layer x position: the antisymmetric shift and the ordered share,
with bootstrap intervals over entities (docs/how-to/behaviour.md).

Any perturbation pushes a small model's answers one way (usually later), so a slope or a mean shift mixes the
direction's effect with that push. For an entity answered at doses ±k (multiples of |Δμ|, the same edit norm both
ways) the **antisymmetric shift** is (answer(+k) − answer(−k)) / 2: the push cancels, what follows the direction's
sign remains (target units; positive = the answer moves the way the direction raises the target). The **ordered
share** is the share of entities whose answers at every dose, the unsteered one included, are in the dose's order
(non-decreasing, and the largest dose's above the smallest's); an unparsed answer counts as not ordered. Intervals
resample entities (``stats.resample_counts``); a difference between two directions is paired over the same
entities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from worldprobe.interventions.stats import quiet_estimate, resample_counts
from worldprobe.probes.bootstrap import Estimate

MAP_COLUMNS = (
    "split", "direction", "method", "kind", "layer", "position", "dose", "edit_norm", "relative_norm",
    "dose_target_units", "n", "antisymmetric_shift", "antisymmetric_shift_ci_low", "antisymmetric_shift_ci_high",
    "antisymmetric_shift_per_dmu", "ordered_share", "ordered_share_ci_low", "ordered_share_ci_high", "parse_rate",
)  # fmt: skip
"""``steering_map.parquet``: one row per split x direction x layer x position x positive dose k (the statistics at
±k; ``ordered_share`` is over all doses of the cell, repeated on its rows)."""


def answers_by_dose(items: pd.DataFrame, baseline: pd.Series, doses: list[float]) -> np.ndarray:
    """(n_entities, len(doses) + 1) readings of one cell's items, columns: the doses in order with 0 (the unsteered
    answer, ``baseline`` indexed by entity) inserted; NaN where unparsed."""
    entities = baseline.index.to_numpy()
    grid = sorted({0.0, *doses})
    out = np.full((len(entities), len(grid)), np.nan)
    position = {e: i for i, e in enumerate(entities)}
    for j, dose in enumerate(grid):
        if dose == 0:
            out[:, j] = baseline.to_numpy(dtype=np.float64)
            continue
        part = items[items["dose"] == dose]
        rows = part["entity"].map(position).to_numpy()
        out[rows, j] = part["reading"].to_numpy(dtype=np.float64)
    return out


def antisymmetric(table: np.ndarray, grid: list[float], k: float) -> np.ndarray:
    """(n,) (answer(+k) − answer(−k)) / 2 per entity (NaN unless both are parsed)."""
    return (table[:, grid.index(k)] - table[:, grid.index(-k)]) / 2


def ordered(table: np.ndarray) -> np.ndarray:
    """(n,) 1.0 where every dose's answer is parsed, non-decreasing in the dose, and the last above the first."""
    finite = np.isfinite(table).all(axis=1)
    with np.errstate(invalid="ignore"):
        rising = (np.diff(table, axis=1) >= 0).all(axis=1) & (table[:, -1] > table[:, 0])
    return (finite & rising).astype(np.float64)


def mean_estimate(values: np.ndarray, w: np.ndarray) -> Estimate:
    """The mean over entities with a finite value, its interval over resampled entities; n = those entities."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    if keep.sum() < 2:
        return Estimate(float("nan"), float("nan"), float("nan"), int(keep.sum()))
    v, wk = values[keep], w[:, keep]
    found = quiet_estimate(lambda weights: (weights @ v) / weights.sum(axis=1), wk)
    return Estimate(found.value, found.low, found.high, int(keep.sum()))


def cell_rows(items: pd.DataFrame, baseline: pd.Series, doses: list[float], w: np.ndarray, ids: dict[str, Any]
              ) -> list[dict[str, Any]]:  # fmt: skip
    """The map rows of one cell (``ids``: split, direction, method, kind, layer, position): per positive dose the
    antisymmetric shift and, repeated, the cell's ordered share."""
    grid = sorted({0.0, *doses})
    table = answers_by_dose(items, baseline, doses)
    share = mean_estimate(ordered(table), w)
    rows = []
    for k in sorted(d for d in doses if d > 0 and -d in doses):
        at = items[items["dose"] == k]
        shift = mean_estimate(antisymmetric(table, grid, k), w)
        rows.append({
            **ids, "dose": k, "edit_norm": float(at["edit_norm"].iloc[0]),
            "relative_norm": float(at["relative_norm"].iloc[0]),
            "dose_target_units": float(at["dose_target_units"].iloc[0]), "n": shift.n,
            "antisymmetric_shift": shift.value, "antisymmetric_shift_ci_low": shift.low,
            "antisymmetric_shift_ci_high": shift.high, "antisymmetric_shift_per_dmu": shift.value / k,
            "ordered_share": share.value, "ordered_share_ci_low": share.low, "ordered_share_ci_high": share.high,
            "parse_rate": float(items.loc[items["dose"].abs() == k, "parsed"].mean()),
        })  # fmt: skip
    return rows


def steering_map(items: pd.DataFrame, baselines: dict[str, pd.Series], doses: list[float], *, resamples: int,
                 seed: int) -> pd.DataFrame:  # fmt: skip
    """The map table of every split x direction x layer x position in ``items`` (``baselines``: per split the
    unsteered reading of each entity)."""
    rows = []
    keys = ["split", "direction", "method", "kind", "layer", "position"]
    for split, part in items.groupby("split", sort=False):
        baseline = baselines[split]
        w = resample_counts(len(baseline), resamples, seed)
        for values, cell in part.groupby(keys, sort=False):
            rows += cell_rows(cell, baseline, doses, w, dict(zip(keys, values, strict=True)))
    return pd.DataFrame(rows, columns=list(MAP_COLUMNS))


def paired_antisymmetric(items_a: pd.DataFrame, items_b: pd.DataFrame, baseline: pd.Series, doses: list[float],
                         k: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per entity the antisymmetric shift at ±k of cell a and of cell b (b: the mean over its directions, e.g. the
    random ones), NaN where unparsed: the two sides of a paired comparison."""
    grid = sorted({0.0, *doses})
    a = antisymmetric(answers_by_dose(items_a, baseline, doses), grid, k)
    per_direction = [antisymmetric(answers_by_dose(group, baseline, doses), grid, k)
                     for _, group in items_b.groupby("direction")]  # fmt: skip
    with np.errstate(invalid="ignore"):
        b = np.nanmean(np.vstack(per_direction), axis=0) if per_direction else np.full(len(a), np.nan)
    return a, b


def weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """Resample counts over ``n`` entities (float)."""
    return resample_counts(n, resamples, seed).astype(np.float64)
