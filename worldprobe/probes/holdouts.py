"""Held-out blocks: the probe refitted with each of a column's largest groups (a country, an entity type) left out
of its fit rows and scored on that group, at the train-selected layer (the paper's block hold-out). Every block's
fit comes from one pass over the rows: its Gram matrix is the pool's minus the block's rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from worldprobe.probes import metrics
from worldprobe.probes.sweep import PROBE_SETTINGS, probe_settings, score

HOLDOUT_MAX_BLOCKS = 20
"""Held-out blocks per column: the largest ``HOLDOUT_MAX_BLOCKS`` groups (paper: the 20 largest countries)."""
HOLDOUT_MIN_ROWS = 10
MEAN_BLOCK = "(mean)"
"""The ``block`` of the row with the mean over blocks in holdouts.parquet (the report draws it as a line)."""
SKIPPED = "skipped"
"""The ``setting`` of a block with too few rows outside it to fit (its ``value``: those rows)."""


def holdout_blocks(
    x,
    targets: pd.DataFrame,
    groups: pd.Series,
    is_test: np.ndarray,
    nominal_pred: np.ndarray,
    make_probe: Callable[[], BaseEstimator],
    *,
    kind: str,
    max_blocks: int = HOLDOUT_MAX_BLOCKS,
    min_rows: int = HOLDOUT_MIN_ROWS,
    progress: bool = True,
) -> pd.DataFrame:
    """Held-out blocks (paper Tables 3/4) for one grouping column at one layer.

    For each of the largest ``max_blocks`` groups (at least ``min_rows`` rows; "unknown"/missing skipped): train on
    every row outside the block and score the block's rows ("held_out"), next to the random-split probe's predictions
    ``nominal_pred`` on the block's test rows ("nominal"). The proximity error of a block row counts the
    predictions of all rows by the same probe. Also the mean over blocks (block ``(mean)``), each held-out probe's
    penalty (metric ``alpha``) and, for a block with fewer than ``min_rows`` rows outside it, one ``skipped`` row
    (metric ``rows_outside``). Columns: block, n_rows, setting, target, metric, value.
    """
    y = targets.to_numpy(dtype=np.float64)
    valid = np.isfinite(y).all(axis=1)
    inside, skipped = holdout_masks(groups, valid, max_blocks=max_blocks, min_rows=min_rows)
    blocks = [b for b in inside if b not in skipped]
    fitted = _fit_outside_blocks(make_probe, x, y, valid, [inside[b] for b in blocks], progress=progress,
                                 desc=f"held-out blocks of {groups.name}")  # fmt: skip
    nominal_df = pd.DataFrame(nominal_pred, columns=targets.columns)
    outside = {b: int((valid & ~inside[b]).sum()) for b in skipped}
    rows = [(str(b), outside[b], SKIPPED, "mean", "rows_outside", float(outside[b])) for b in skipped]
    for block, probe in zip(blocks, fitted, strict=True):
        held_df = pd.DataFrame(
            np.asarray(probe.predict(x), dtype=np.float64).reshape(len(y), -1), columns=targets.columns
        )
        for setting, pred_df, scored in (
            ("held_out", held_df, inside[block]),
            ("nominal", nominal_df, inside[block] & np.asarray(is_test, dtype=bool)),
        ):
            idx = np.flatnonzero(scored)
            if len(idx) < 2:
                continue
            values = score(targets.iloc[idx].reset_index(drop=True), pred_df.iloc[idx].reset_index(drop=True), kind,
                           proximity=False)  # fmt: skip
            values.append(("mean", "proximity", _block_proximity(targets, pred_df, idx, valid, kind)))
            values += [("mean", m, v) for m, v in probe_settings(probe)] if setting == "held_out" else []
            rows += [(str(block), len(idx), setting, t, m, v) for t, m, v in values]
    table = pd.DataFrame(rows, columns=["block", "n_rows", "setting", "target", "metric", "value"])
    scored = table[(table["setting"] != SKIPPED) & ~table["metric"].isin(PROBE_SETTINGS)]
    if len(scored):
        mean = scored.groupby(["setting", "target", "metric"], as_index=False).agg(
            n_rows=("n_rows", "sum"), value=("value", "mean")
        )
        mean["block"] = MEAN_BLOCK
        table = pd.concat([table, mean[table.columns]], ignore_index=True)
    return table


def holdout_masks(
    groups: pd.Series, valid: np.ndarray, *, max_blocks: int = HOLDOUT_MAX_BLOCKS, min_rows: int = HOLDOUT_MIN_ROWS
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The held-out blocks of one grouping column, largest first: each block's mask over all rows (valid rows of the
    group), for the ``max_blocks`` largest groups with at least ``min_rows`` rows ("unknown"/missing never a block),
    and the blocks that leave fewer than ``min_rows`` valid rows outside them to train on."""
    labels = groups.astype("string").reset_index(drop=True)
    counts = labels[valid & labels.notna().to_numpy() & (labels != "unknown").to_numpy()].value_counts()
    blocks = [b for b, c in counts.items() if c >= min_rows][:max_blocks]
    inside = {str(b): valid & (labels == b).fillna(False).to_numpy() for b in blocks}
    return inside, [b for b, mask in inside.items() if (valid & ~mask).sum() < min_rows]


def _fit_outside_blocks(
    make_probe: Callable[[], BaseEstimator],
    x,
    y: np.ndarray,
    valid: np.ndarray,
    blocks: list[np.ndarray],
    *,
    progress: bool,
    desc: str,
) -> list[BaseEstimator]:
    """One probe per block (a mask over all rows) fitted on the valid rows outside it: all from one pass over the
    rows when the probe has ``fit_without_blocks`` (the ridge: the pool's Gram matrix minus each block's rows)."""
    pool = np.flatnonzero(valid)
    probe = make_probe()
    if hasattr(probe, "iter_without_blocks") and blocks:
        fits = probe.iter_without_blocks(x[pool], y[pool], [mask[pool] for mask in blocks])
        return list(tqdm(fits, total=len(blocks), desc=desc, unit="block", disable=not progress))
    out = []
    for mask in tqdm(blocks, desc=desc, unit="block", disable=not progress):
        train = np.flatnonzero(valid & ~mask)
        out.append(make_probe().fit(x[train], y[train]))
    return out


def _block_proximity(targets: pd.DataFrame, pred: pd.DataFrame, idx: np.ndarray, valid: np.ndarray, kind: str) -> float:
    """Mean proximity error of rows ``idx`` against every valid row's prediction."""
    pool = np.flatnonzero(valid)
    position = np.searchsorted(pool, idx)
    if kind == "place":
        true, prd = targets.iloc[pool], pred.iloc[pool]
        return float(metrics.proximity_error(true, prd, kind="place", rows=position).mean())
    col = targets.columns[0]
    values = metrics.proximity_error(
        targets[col].to_numpy()[pool], pred[col].to_numpy()[pool], kind="time", rows=position
    )
    return float(values.mean())
