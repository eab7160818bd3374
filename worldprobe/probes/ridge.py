"""Exact ridge probe with the penalty picked by efficient leave-one-out over a wide log grid (science.md section 5).

One eigendecomposition per fit gives the leave-one-out error of every alpha and every target at once:
with centred (optionally standardised) features ``Xc`` and an unpenalised intercept, the hat matrix of penalty
``a`` is ``H = 11ᵀ/n + Z diag(1/(s²+a)) Zᵀ`` where ``Z = Xc V`` (n > d, eigenvectors ``V`` of ``XcᵀXc``) or
``Z = U diag(s)`` (n <= d, eigenvectors ``U`` of ``XcXcᵀ``); the leave-one-out residual is ``(y - ŷ)/(1 - h_ii)``.
Rows are streamed in chunks in float64, so a float16 memmap of 40k x 4096 never needs a float64 copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

DEFAULT_ALPHAS = np.logspace(-2, 8, 41)
"""The default penalty grid: 1e-2 .. 1e8, four values per decade (the paper's 1e0.8..1e4.5 was too narrow)."""

DEFAULT_STANDARDIZE = True
"""Standardise activation dimensions by default (measured in benchmarks/probe_bench.py; see README "3. Probes")."""

CHUNK_ROWS = 8192


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _chunks(n: int, size: int = CHUNK_ROWS):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@dataclass(frozen=True)
class _Solution:
    """One target set's ridge solution in raw units: coef (d, k), the LOO error per alpha and the chosen alpha."""

    alphas: np.ndarray
    loo_mse: np.ndarray
    best: int
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    y_mean: np.ndarray
    y_scale: np.ndarray
    coef: np.ndarray
    single: bool  # the targets were given as (n,), not (n, k)


class RidgeProbe(RegressorMixin, BaseEstimator):
    """Ridge regression with intercept, targets z-scored on the fit rows and alpha chosen by exact leave-one-out.

    Parameters follow scikit-learn's conventions: the penalty is ``||y - Xw - b||² + alpha ||w||²`` on the z-scored
    targets (the same alpha scaling as ``sklearn.linear_model.RidgeCV``), one alpha for all targets, chosen by the
    mean squared leave-one-out error over all targets (ties go to the smaller alpha).

    Attributes after ``fit``: ``coef_`` (n_targets, n_features) or (n_features,), ``intercept_``, ``alpha_``,
    ``alpha_index_``, ``alpha_on_edge_`` (best alpha is the first or last of the grid: widen it), ``alphas_``,
    ``loo_mse_`` (per alpha, in z-scored target units), ``feature_mean_``, ``feature_scale_``.
    """

    def __init__(self, alphas=None, standardize: bool = DEFAULT_STANDARDIZE, device: str = "auto") -> None:
        self.alphas = alphas
        self.standardize = standardize
        self.device = device

    def fit(self, X, y) -> RidgeProbe:
        """Fit on rows of ``X`` (any array-like, including a float16 memmap) and targets ``y`` (n,) or (n, k)."""
        (fit,) = self._fit_target_sets(X, [y])
        self._set_fitted(fit)
        return self

    def fit_many(self, X, ys: Sequence) -> list[RidgeProbe]:
        """One fitted copy of this probe per target set in ``ys``, all on the same ``X``: the same probes as fitting
        clones one by one (each picks its own alpha), for the cost of one eigendecomposition."""
        out = []
        for fit in self._fit_target_sets(X, ys):
            probe = clone(self)
            probe._set_fitted(fit)
            out.append(probe)
        return out

    def _fit_target_sets(self, X, ys: Sequence) -> list[_Solution]:
        """Decompose X once; for each target set pick alpha by leave-one-out and solve."""
        X = _as_2d(X)
        ys = [np.asarray(y, dtype=np.float64) for y in ys]
        if not ys:
            raise ValueError("no target sets to fit")
        for y in ys:
            if y.shape[0] != X.shape[0]:
                raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
            if not np.isfinite(y).all():
                raise ValueError("y contains NaN or inf; drop those rows first")
        y2 = np.hstack([y[:, None] if y.ndim == 1 else y for y in ys])
        groups = np.repeat(np.arange(len(ys)), [1 if y.ndim == 1 else y.shape[1] for y in ys])
        n, d = X.shape
        if n < 3:
            raise ValueError(f"need at least 3 rows to fit a ridge probe with leave-one-out, got {n}")
        dev = pick_device(self.device)
        alphas = np.asarray(DEFAULT_ALPHAS if self.alphas is None else self.alphas, dtype=np.float64).ravel()
        if alphas.size == 0 or (alphas <= 0).any():
            raise ValueError("alphas must be a non-empty list of positive numbers")

        mean, scale = _feature_stats(X, dev, self.standardize)
        y_mean, y_scale = y2.mean(axis=0), y2.std(axis=0)
        y_scale[y_scale == 0] = 1.0
        yz = torch.as_tensor((y2 - y_mean) / y_scale, device=dev)
        a = torch.as_tensor(alphas, device=dev)

        def block(rows: slice) -> torch.Tensor:
            return (_rows(X, rows, dev) - mean) / scale

        if n > d:
            gram = torch.zeros(d, d, dtype=torch.float64, device=dev)
            xty = torch.zeros(d, y2.shape[1], dtype=torch.float64, device=dev)
            for rows in _chunks(n):
                xc = block(rows)
                gram += xc.T @ xc
                xty += xc.T @ yz[rows]
            evals, vecs = torch.linalg.eigh(gram)
            ztz_y = vecs.T @ xty
            project = lambda rows: block(rows) @ vecs  # noqa: E731
        else:
            xc_all = block(slice(0, n))
            evals, vecs = torch.linalg.eigh(xc_all @ xc_all.T)
            z_all = vecs * evals.clamp(min=0).sqrt()
            ztz_y = z_all.T @ yz
            project = lambda rows: z_all[rows]  # noqa: E731
        evals = evals.clamp(min=0)
        shrink = 1.0 / (evals[:, None] + a[None, :])  # (r, A)
        weights = shrink[:, :, None] * ztz_y[:, None, :]  # (r, A, k)
        r, n_alphas, k = weights.shape
        sq_err = torch.zeros(n_alphas, k, dtype=torch.float64, device=dev)
        for rows in _chunks(n):
            z = project(rows)
            lev = (z * z) @ shrink + 1.0 / n  # (c, A)
            fitted = (z @ weights.reshape(r, n_alphas * k)).reshape(-1, n_alphas, k)
            loo = (yz[rows][:, None, :] - fitted) / (1.0 - lev)[:, :, None]
            sq_err += (loo * loo).sum(dim=0)
        sq_err = sq_err.cpu().numpy()
        mean_np, scale_np = mean.cpu().numpy(), scale.cpu().numpy()

        fits = []
        for group in range(len(ys)):
            cols = np.flatnonzero(groups == group)
            loo_mse = sq_err[:, cols].sum(axis=1) / (n * len(cols))
            best = int(np.argmin(loo_mse))
            if n > d:
                w_z = vecs @ weights[:, best, cols]  # (d, k_group)
            else:
                u_scaled = vecs * (1.0 / (evals + a[best]))
                w_z = xc_all.T @ (u_scaled @ (vecs.T @ yz[:, cols]))
            coef = (w_z.cpu().numpy() / scale_np[:, None]) * y_scale[None, cols]  # (d, k_group) in raw units
            fits.append(_Solution(
                alphas=alphas, loo_mse=loo_mse, best=best, feature_mean=mean_np, feature_scale=scale_np,
                y_mean=y_mean[cols], y_scale=y_scale[cols], coef=coef, single=ys[group].ndim == 1,
            ))  # fmt: skip
        return fits

    def _set_fitted(self, fit: _Solution) -> None:
        """Store the learned attributes of one target set's solution."""
        intercept = fit.y_mean - fit.feature_mean @ fit.coef
        self.alphas_ = fit.alphas
        self.loo_mse_ = fit.loo_mse
        self.alpha_index_ = fit.best
        self.alpha_ = float(fit.alphas[fit.best])
        self.alpha_on_edge_ = bool(fit.best in (0, len(fit.alphas) - 1))
        self.feature_mean_ = fit.feature_mean
        self.feature_scale_ = fit.feature_scale
        self.y_mean_, self.y_scale_ = fit.y_mean, fit.y_scale
        self.coef_ = fit.coef[:, 0] if fit.single else fit.coef.T
        self.intercept_ = float(intercept[0]) if fit.single else intercept
        self.n_features_in_ = len(fit.feature_mean)

    def predict(self, X) -> np.ndarray:
        """Predictions (n,) or (n, k) in the targets' units; ``X`` is read in float64 chunks."""
        check_is_fitted(self, "coef_")
        X = _as_2d(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the probe was fitted on {self.n_features_in_}")
        coef = np.atleast_2d(self.coef_).T
        out = np.empty((X.shape[0], coef.shape[1]))
        for rows in _chunks(X.shape[0]):
            out[rows] = np.asarray(X[rows], dtype=np.float64) @ coef
        out += self.intercept_
        return out[:, 0] if np.ndim(self.coef_) == 1 else out


def _rows(X, rows: slice, dev: torch.device) -> torch.Tensor:
    """Rows of X (any array-like, e.g. a read-only float16 memmap) as a float64 tensor on ``dev``."""
    return torch.from_numpy(np.array(X[rows], dtype=np.float64)).to(dev)


def _as_2d(X):
    if not hasattr(X, "shape") or not hasattr(X, "__getitem__"):
        X = np.asarray(X, dtype=np.float64)
    if len(X.shape) != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    return X


def _feature_stats(X, dev: torch.device, standardize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Column means and (if ``standardize``) standard deviations of X in float64, two streamed passes."""
    n, d = X.shape
    total = torch.zeros(d, dtype=torch.float64, device=dev)
    for rows in _chunks(n):
        total += _rows(X, rows, dev).sum(dim=0)
    mean = total / n
    scale = torch.ones(d, dtype=torch.float64, device=dev)
    if standardize:
        sq = torch.zeros(d, dtype=torch.float64, device=dev)
        for rows in _chunks(n):
            diff = _rows(X, rows, dev) - mean
            sq += (diff * diff).sum(dim=0)
        std = (sq / n).sqrt()
        scale = torch.where(std > 0, std, torch.ones_like(std))
    return mean, scale
