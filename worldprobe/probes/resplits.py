"""Training variance: the probe and the controls its label reads, refitted on re-drawn train/test splits.

The bootstrap interval holds the fitted probe fixed and resamples the test entities; it does not say how much the
answer would move with another draw of the train rows. :func:`resplit_spread` redraws the split K times (seeded,
grouped like the dataset's own split: ``DatasetSpec.split_column``), and on each draw re-runs the layer sweep (the
layer chosen again on the new train rows), the lexical control and each random-init twin (its own layer chosen
again), and records test R², Spearman and the differences. The spread over draws is printed beside the bootstrap
interval (``headline.resplits``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from worldprobe.datasets.split import grouped_split
from worldprobe.probes.lexical import lexical_fit
from worldprobe.probes.metrics import r2_columns, spearman_columns
from worldprobe.probes.sweep import layer_sweep

SEED_OFFSET = 1000
"""Re-split k draws its split with seed ``seed + SEED_OFFSET + k`` (never the dataset's own split seed)."""


def resplit_spread(
    layer_of: Callable[[int], np.ndarray],
    twins: Mapping[int, Callable[[int], np.ndarray]],
    texts: pd.Series,
    split_keys: pd.Series,
    y: np.ndarray,
    layers: Sequence[int],
    make_probe: Callable[[], BaseEstimator],
    *,
    resplits: int,
    seed: int,
    lexical: bool,
    progress: bool = True,
) -> dict[str, Any]:
    """Per re-drawn split (``resplits`` of them): the probe's test R² and Spearman at its train-chosen layer, and the
    differences probe minus lexical control and probe minus the random-init twins (``twins``: seed -> layer reader;
    the mean over seeds), with the mean, sd, min and max of each over the draws."""
    y = np.asarray(y, dtype=np.float64).reshape(len(texts), -1)
    frame = pd.DataFrame(y)
    draws: list[dict[str, float]] = []
    for k in tqdm(range(1, resplits + 1), desc="re-splits", unit="split", disable=not progress):
        is_test = grouped_split(split_keys, seed=seed + SEED_OFFSET + k)
        test = np.flatnonzero(is_test)
        sweep = layer_sweep(layer_of, frame, is_test, layers, make_probe, progress=False)
        probe = sweep.predictions[sweep.selected_layer][test]
        draw = {"layer": float(sweep.selected_layer), "r2": _r2(y[test], probe), "spearman": _rho(y[test], probe)}
        if lexical:
            guess = lexical_fit(texts, [y], ~is_test, seed=seed + k).predictions[0][test]
            draw["diff_r2_lexical"] = draw["r2"] - _r2(y[test], guess)
        if twins:
            twin_r2 = []
            for reader in twins.values():
                twin = layer_sweep(reader, frame, is_test, layers, make_probe, progress=False)
                twin_r2.append(_r2(y[test], twin.predictions[twin.selected_layer][test]))
            draw["diff_r2_random_init"] = draw["r2"] - float(np.mean(twin_r2))
        draws.append(draw)
    table = pd.DataFrame(draws)
    summary: dict[str, Any] = {"resplits": resplits, "draws": draws}
    for column in table.columns:
        if column == "layer":
            continue
        values = table[column].to_numpy(dtype=np.float64)
        summary[column] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                           "min": float(values.min()), "max": float(values.max())}  # fmt: skip
    return summary


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(r2_columns(y, pred.reshape(y.shape))))


def _rho(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(spearman_columns(y, pred.reshape(y.shape))))
