"""Seeded, vectorised bootstrap intervals over test entities (docs/verdicts.md).

The probe is fixed; what varies is which test entities were drawn. A resample is a vector of COUNT weights over the
n entities (how often each one was drawn; the counts sum to n), so every statistic here takes the per-entity arrays
once and a weight matrix ``w`` of shape (B, n), and returns one value per resample: no array is copied per resample,
and statistics of the same resample are paired (probe minus control on the same entities) by using the same ``w``.
The point estimate is the same statistic with all weights 1 (``ones_like``), so value and interval come from one
function. Intervals are percentile intervals of the resampled statistic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from worldprobe.config import DEFAULT_RESAMPLES

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A statistic on the sample (``value``), its bootstrap interval ``[low, high]`` and the rows it used (``n``)."""

    value: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """The whole interval lies on one side of 0 (a difference that the resampling does not explain away)."""
        return bool(self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}

    def text(self, digits: int = 2, *, signed: bool = False) -> str:
        """``.36 [.30, .41]`` (R²-like numbers lose the leading zero, as in papers; ``signed`` adds a + sign)."""
        return f"{fmt(self.value, digits, signed=signed)} [{fmt(self.low, digits)}, {fmt(self.high, digits)}]"


def fmt(value: float, digits: int = 2, *, signed: bool = False) -> str:
    """A number with ``digits`` decimals, without the leading zero of |value| < 1 ("-.05", "+.12", "1.20")."""
    if not np.isfinite(value):
        return "–"
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("0.", ".", 1) if abs(value) < 1 else text


def resample_counts(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) int32 counts: row b says how often each of the n entities was drawn in resample b."""
    if n < 1:
        raise ValueError("cannot resample an empty set of rows")
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    offsets = (np.arange(resamples) * n)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.int32)


def ones_like(w: np.ndarray) -> np.ndarray:
    """The weights of the sample itself (every entity once), shaped (1, n) like one resample."""
    return np.ones((1, w.shape[-1]))


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of resampled values (NaN resamples ignored; NaN when all are)."""
    samples = np.asarray(samples, dtype=np.float64).ravel()
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def estimate(statistic: Callable[[np.ndarray], np.ndarray], w: np.ndarray, level: float = LEVEL) -> Estimate:
    """Point value (all weights 1) and percentile interval (over the rows of ``w``) of ``statistic(weights) -> (B,)``.

    For a paired difference pass ``lambda w: stat_a(w) - stat_b(w)``.
    """
    value = float(np.asarray(statistic(ones_like(w)), dtype=np.float64).ravel()[0])
    low, high = percentile_interval(statistic(w), level)
    return Estimate(value, low, high, int(w.shape[-1]))


# --- weighted statistics: arrays of n entities, weights (B, n) -> one value per resample --------------------------


def _cols(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(len(values), -1)


def weighted_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B,) for x (n,), (B, k) for x (n, k): the mean of each resample."""
    x = np.asarray(x, dtype=np.float64)
    return (w @ x) / w.sum(axis=1).reshape((-1,) + (1,) * (x.ndim - 1))


def weighted_r2(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, k) R² per target column (1 - SS_res/SS_tot, sklearn's definition) of each resample."""
    y, pred = _cols(y), _cols(pred)
    shift = y.mean(axis=0)  # the same shift of both leaves R² unchanged and keeps SS_tot free of cancellation
    y, pred = y - shift, pred - shift
    total = w.sum(axis=1, keepdims=True)
    ss_res = w @ (y - pred) ** 2
    mean = (w @ y) / total
    ss_tot = w @ (y * y) - total * mean * mean
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 1e-12 * np.maximum(w @ (y * y), 1e-300), 1.0 - ss_res / ss_tot, np.nan)


def weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, k) Pearson r per column of each resample (NaN where a column is constant in the resample)."""
    a, b = _cols(a), _cols(b)
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    total = w.sum(axis=1, keepdims=True)
    ma, mb = (w @ a) / total, (w @ b) / total
    cov = (w @ (a * b)) / total - ma * mb
    va = (w @ (a * a)) / total - ma * ma
    vb = (w @ (b * b)) / total - mb * mb
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cov / np.sqrt(va * vb)
    return np.where((va > 1e-15) & (vb > 1e-15), np.clip(r, -1.0, 1.0), np.nan)


def rowwise_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B,) Pearson r of (B, n) arrays ``a`` and ``b`` under weights (B, n), row by row."""
    total = w.sum(axis=1)
    ma, mb = (w * a).sum(axis=1) / total, (w * b).sum(axis=1) / total
    da, db = a - ma[:, None], b - mb[:, None]
    cov, va, vb = (w * da * db).sum(axis=1), (w * da * da).sum(axis=1), (w * db * db).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cov / np.sqrt(va * vb)
    return np.where((va > 0) & (vb > 0), np.clip(r, -1.0, 1.0), np.nan)


def weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, n) average ranks (1-based, ties share their mean rank) of x (n,) within each resample: the rank a drawn
    copy of entity i would get in the resampled data. One sort of x, then cumulative counts per resample."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    tie_of_sorted = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(x)]))
    group = np.add.reduceat(w[:, order], starts, axis=1).astype(np.float64)  # (B, U) drawn copies per value
    below = np.cumsum(group, axis=1) - group
    rank_of_value = below + (group + 1) / 2
    ranks = np.empty_like(w, dtype=np.float64)
    ranks[:, order] = rank_of_value[:, tie_of_sorted]
    return ranks


def weighted_spearman(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, k) Spearman ρ per column of each resample: Pearson of the resample's average ranks (as scipy)."""
    a, b = _cols(a), _cols(b)
    w = np.asarray(w, dtype=np.float64)
    out = np.empty((w.shape[0], a.shape[1]))
    for j in range(a.shape[1]):
        out[:, j] = rowwise_pearson(weighted_ranks(a[:, j], w), weighted_ranks(b[:, j], w), w)
    return out


def weighted_median(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B,) median of x (n,) in each resample (the mean of the two middle values when the resample size is even)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(w[:, order], axis=1)
    total = cum[:, -1]
    lower = np.argmax(cum >= np.ceil(total / 2)[:, None], axis=1)
    upper = np.argmax(cum >= (np.floor(total / 2) + 1)[:, None], axis=1)
    return (x[order][lower] + x[order][upper]) / 2


def group_indicator(groups: np.ndarray) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """A sparse (n, G) one-hot matrix of the groups and each row's group index."""
    codes, uniques = _factorize(groups)
    matrix = scipy.sparse.csr_matrix(
        (np.ones(len(codes)), (np.arange(len(codes)), codes)), shape=(len(codes), len(uniques))
    )
    return matrix, codes


def _factorize(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniques, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    return codes, uniques


def weighted_within_group_r(
    groups: np.ndarray, y: np.ndarray, pred: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """(B, k) Pearson r of ``pred - group mean(pred)`` with ``y - group mean(y)`` per column of each resample, the
    group means taken over the same resample. Groups with a single entity in the sample carry no within-group
    information and are left out (as ``controls.within_group_metrics``)."""
    y, pred = _cols(y), _cols(pred)
    w = np.asarray(w, dtype=np.float64)
    onehot, codes = group_indicator(groups)
    sizes = np.bincount(codes)
    shared = sizes[codes] > 1
    if shared.sum() < 3:
        return np.full((w.shape[0], y.shape[1]), np.nan)
    w = w * shared[None, :]
    counts = np.asarray((onehot.T @ w.T).T)  # (B, G) drawn rows per group
    out = np.empty((w.shape[0], y.shape[1]))
    for j in range(y.shape[1]):
        dev = []
        for values in (y[:, j], pred[:, j]):
            centred = values - values.mean()
            sums = np.asarray((onehot.T @ (w * centred[None, :]).T).T)  # (B, G)
            with np.errstate(divide="ignore", invalid="ignore"):
                means = np.where(counts > 0, sums / counts, 0.0)
            dev.append(centred[None, :] - means[:, codes])
        out[:, j] = rowwise_pearson(dev[0], dev[1], w)
    return out
