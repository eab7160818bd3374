"""Probe metrics (docs/explanation/probes.md). Targets are named: functions take DataFrames whose columns are target
names and never reorder or guess them; places need explicit ``latitude`` and ``longitude`` columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from worldprobe.errors import WorldprobeError

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), in km."""

LAT, LON = "latitude", "longitude"


def _aligned(true: pd.DataFrame, pred: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``pred`` with the columns of ``true`` (by name); raises when a target is missing or lengths differ."""
    for frame, what in ((true, "true"), (pred, "pred")):
        if not isinstance(frame, pd.DataFrame):
            raise WorldprobeError(f"{what} values must be a DataFrame with one named column per target")
    missing = [c for c in true.columns if c not in pred.columns]
    if missing:
        raise WorldprobeError(f"predictions lack target columns {missing}", field=missing[0])
    if len(true) != len(pred):
        raise WorldprobeError(f"true has {len(true)} rows but pred has {len(pred)}")
    return true, pred[list(true.columns)]


def r2_columns(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R² per column of two (n, k) arrays, sklearn's definition (a constant column scores 1.0 when predicted
    exactly, else 0.0), in plain numpy: probe runs compute thousands of these."""
    true, pred = _columns(true), _columns(pred)
    ss_res = ((true - pred) ** 2).sum(axis=0)
    ss_tot = ((true - true.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per column of two (n, k) arrays; NaN where a column is constant or n < 2."""
    a, b = _columns(a), _columns(b)
    da, db = a - a.mean(axis=0), b - b.mean(axis=0)
    denom = np.sqrt((da * da).sum(axis=0) * (db * db).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (da * db).sum(axis=0) / denom
    return np.where((denom > 0) & (len(a) > 1), np.clip(r, -1.0, 1.0), np.nan)


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per column (Pearson of average ranks, as scipy's ``spearmanr``)."""
    a, b = _columns(a), _columns(b)
    return pearson_columns(stats.rankdata(a, axis=0), stats.rankdata(b, axis=0))


def _columns(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(len(values), -1)


def r2_per_target(true: pd.DataFrame, pred: pd.DataFrame) -> pd.Series:
    """R² (sklearn definition, 1 - SS_res/SS_tot) per target column."""
    true, pred = _aligned(true, pred)
    return pd.Series(r2_columns(true.to_numpy(), pred.to_numpy()), index=true.columns, dtype=float)


def r2(true: pd.DataFrame, pred: pd.DataFrame) -> float:
    """Mean over targets of the per-target R²."""
    return float(r2_per_target(true, pred).mean())


def spearman_per_target(true: pd.DataFrame, pred: pd.DataFrame) -> pd.Series:
    """Spearman rank correlation per target column."""
    true, pred = _aligned(true, pred)
    return pd.Series(spearman_columns(true.to_numpy(), pred.to_numpy()), index=true.columns, dtype=float)


def pearson_per_target(true: pd.DataFrame, pred: pd.DataFrame) -> pd.Series:
    """Pearson correlation per target column."""
    true, pred = _aligned(true, pred)
    return pd.Series(pearson_columns(true.to_numpy(), pred.to_numpy()), index=true.columns, dtype=float)


def mae_per_target(true: pd.DataFrame, pred: pd.DataFrame) -> pd.Series:
    """Mean absolute error per target column (in the target's units; for years this is the mean error in years)."""
    true, pred = _aligned(true, pred)
    return (true - pred.to_numpy()).abs().mean().astype(float)


def abs_error_years(true: pd.Series | np.ndarray, pred: pd.Series | np.ndarray) -> np.ndarray:
    """Absolute error in years per entity."""
    return np.abs(np.asarray(pred, dtype=float) - np.asarray(true, dtype=float))


def latlon(points: pd.DataFrame | np.ndarray, *, what: str = "points", predicted: bool = False) -> np.ndarray:
    """An (n, 2) float array in (latitude, longitude) order, checked.

    A DataFrame must name its columns ``latitude`` and ``longitude`` (their order does not matter); an array must
    already be in (lat, lon) order. True points (``predicted=False``) raise when a latitude lies outside [-90, 90]
    (columns look swapped) or a longitude outside [-180, 180]. A probe's predictions are unbounded: their latitudes
    are clipped to [-90, 90] (the nearest pole) and their longitudes taken as they are (haversine is periodic).
    """
    if isinstance(points, pd.DataFrame):
        if LAT not in points.columns or LON not in points.columns:
            raise WorldprobeError(
                f"{what} need columns named '{LAT}' and '{LON}', got {list(points.columns)}",
                hint="name the columns; positions are never guessed",
            )
        arr = points[[LAT, LON]].to_numpy(dtype=float)
    else:
        arr = np.asarray(points, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise WorldprobeError(f"{what} must be (n, 2) in (latitude, longitude) order, got shape {arr.shape}")
    if predicted:
        return np.column_stack([np.clip(arr[:, 0], -90.0, 90.0), arr[:, 1]])
    if np.nanmax(np.abs(arr[:, 0]), initial=0.0) > 90:
        raise WorldprobeError(
            f"{what}: a latitude lies outside [-90, 90] (max |lat| = {np.nanmax(np.abs(arr[:, 0])):.1f})",
            field=LAT,
            hint="latitude and longitude look swapped; pass (latitude, longitude)",
        )
    if np.nanmax(np.abs(arr[:, 1]), initial=0.0) > 180:
        raise WorldprobeError(f"{what}: a longitude lies outside [-180, 180]", field=LON)
    return arr


def unit_vectors(points: np.ndarray) -> np.ndarray:
    """Points (n, 2) in (lat, lon) degrees as unit vectors (n, 3): a larger dot product is a shorter great circle."""
    lat, lon = np.radians(points[:, 0]), np.radians(points[:, 1])
    return np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def haversine_km(true: pd.DataFrame | np.ndarray, pred: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Great-circle error (km) per entity between true and predicted points, each in (latitude, longitude) order
    (named DataFrame columns, or (n, 2) arrays already in that order; see ``latlon``)."""
    t, p = latlon(true, what="true points"), latlon(pred, what="predicted points", predicted=True)
    if len(t) != len(p):
        raise WorldprobeError(f"true has {len(t)} points but pred has {len(p)}")
    lat1, lon1, lat2, lon2 = (np.radians(v) for v in (t[:, 0], t[:, 1], p[:, 0], p[:, 1]))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def proximity_error(
    true: pd.DataFrame | np.ndarray,
    pred: pd.DataFrame | np.ndarray,
    *,
    kind: str,
    rows: np.ndarray | None = None,
    block_size: int = 1024,
) -> np.ndarray:
    """Per entity i: the fraction of the other entities j whose prediction lies closer to i's true point than i's own
    prediction does (0 = perfect, about 0.5 = random).

    ``kind`` is ``"place"`` (haversine distance; points as in ``latlon``) or ``"time"`` (|Δ| on one column). ``rows``
    (indices) limits which entities i are scored; every entity's prediction is a competitor j. Computed in blocks of
    ``block_size`` rows, so memory is ``block_size x n``, never ``n x n``.
    """
    if kind == "place":  # closer on the sphere = a larger dot product of unit vectors (no trigonometry per pair)
        t = unit_vectors(latlon(true, what="true points"))
        p = unit_vectors(latlon(pred, what="predicted points", predicted=True))
        dist = lambda a, b: -(a @ b.T)  # noqa: E731
    elif kind == "time":
        t = np.asarray(true, dtype=float).reshape(-1, 1)
        p = np.asarray(pred, dtype=float).reshape(-1, 1)
        dist = lambda a, b: np.abs(a - b.T)  # noqa: E731
    else:
        raise ValueError(f"kind must be 'place' or 'time', got {kind!r}")
    n = len(t)
    if len(p) != n:
        raise WorldprobeError(f"true has {n} rows but pred has {len(p)}")
    if n < 2:
        raise WorldprobeError("the proximity error needs at least 2 entities")
    idx = np.arange(n) if rows is None else np.asarray(rows)
    out = np.empty(len(idx))
    for start in range(0, len(idx), block_size):
        block = idx[start : start + block_size]
        d = dist(t[block], p)  # (b, n): distance (or its order) from i's true point to every prediction j
        own = d[np.arange(len(block)), block]
        closer = (d < own[:, None]).sum(axis=1)  # i itself is never strictly closer than itself
        out[start : start + block_size] = closer / (n - 1)
    return out
