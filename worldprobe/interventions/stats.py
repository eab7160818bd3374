"""Bootstrap estimates for asking and steering, on top of ``worldprobe.probes.bootstrap``: entities are resampled
(count weights ``w`` of shape (B, n_entities)); a statistic over pairs or doses of the same entities gives every pair
its entity's weight, so intervals are over entities, never over correlated pairs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from worldprobe.probes.bootstrap import Estimate, estimate, resample_counts, weighted_mean

__all__ = [
    "Estimate", "estimate", "maybe", "pairs_weights", "quiet_estimate", "rate", "resample_counts", "subset",
    "weighted_slope",
]  # fmt: skip


def weighted_slope(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B,) least-squares slope of y on x (with intercept) under weights (B, n); NaN when x does not vary."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    total = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx, my = (w @ x) / total, (w @ y) / total
        cov = (w @ (x * y)) / total - mx * my
        var = (w @ (x * x)) / total - mx * mx
        return np.where(var > 1e-12 * np.maximum((w @ (x * x)) / total, 1e-300), cov / var, np.nan)


def pairs_weights(w: np.ndarray, entity: np.ndarray) -> np.ndarray:
    """(B, P) weights of P pairs (doses, directions, ...) from the (B, n) entity weights: each pair gets the weight
    of its entity (``entity`` holds each pair's entity index)."""
    return np.asarray(w)[:, np.asarray(entity, dtype=np.int64)]


def subset(stat: Callable[[np.ndarray], np.ndarray], w: np.ndarray, keep: np.ndarray) -> Estimate | None:
    """:func:`estimate` of ``stat`` on the kept columns of ``w`` (None when fewer than 2 are kept)."""
    keep = np.asarray(keep, dtype=bool)
    if keep.sum() < 2:
        return None
    return quiet_estimate(stat, w[:, keep])


def rate(flags: np.ndarray, w: np.ndarray) -> Estimate:
    """The share of True among ``flags`` (n,) with its bootstrap interval."""
    values = np.asarray(flags, dtype=np.float64)
    return quiet_estimate(lambda v: weighted_mean(values, v), w)


def quiet_estimate(stat: Callable[[np.ndarray], np.ndarray], w: np.ndarray) -> Estimate:
    """:func:`estimate` where a resample that draws none of the rows (possible for a subset of the entities) counts
    as NaN, which the percentile interval ignores, whatever the statistic would return for zero weights (a weighted
    median returns a value), and without numpy's warnings for it."""

    def guarded(v: np.ndarray) -> np.ndarray:
        out = np.asarray(stat(v), dtype=np.float64)
        empty = np.asarray(v).sum(axis=1) == 0
        return np.where(empty.reshape((-1,) + (1,) * (out.ndim - 1)), np.nan, out)

    with np.errstate(invalid="ignore", divide="ignore"):
        return estimate(guarded, w)


def maybe(found: Estimate | None) -> dict[str, float | int] | None:
    """An estimate as a JSON-ready dict (None stays None)."""
    return None if found is None else found.to_dict()
