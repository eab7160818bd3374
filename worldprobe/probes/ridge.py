"""Exact ridge probe, the penalty picked by efficient leave-one-out over a wide log grid (docs/explanation/probes.md).

One eigendecomposition per fit gives the leave-one-out error of every alpha and every target at once:
with centred (optionally standardised) features ``Xc`` and an unpenalised intercept, the hat matrix of penalty
``a`` is ``H = 11ᵀ/n + Z diag(1/(s²+a)) Zᵀ`` where ``Z = Xc V`` (n > d, eigenvectors ``V`` of ``XcᵀXc``) or
``Z = U diag(s)`` (n <= d, eigenvectors ``U`` of ``XcXcᵀ``); the leave-one-out residual is ``(y - ŷ)/(1 - h_ii)``.
Rows are streamed in chunks in float64, so a float16 memmap of 40k x 4096 never needs a float64 copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import blas
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils.validation import check_is_fitted

from worldprobe.devices import resolve_device
from worldprobe.probes.validation import check_features, check_finite, check_n_features, check_targets

DEFAULT_ALPHAS = np.logspace(-2, 8, 41)
"""The default penalty grid: 1e-2 .. 1e8, four values per decade (the paper's 1e0.8..1e4.5 was too narrow)."""

DEFAULT_STANDARDIZE = True
"""Standardise activation dimensions by default (measured in benchmarks/probe_bench.py; docs/explanation/probes.md)."""

CHUNK_ROWS = 8192


def pick_device(device: str = "auto") -> torch.device:
    """The device a probe estimator computes on (``worldprobe.devices.resolve_device``: CUDA when present, else CPU)."""
    return torch.device(resolve_device(device, mps=False))


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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y may be (n, k): latitude and longitude together
        return tags

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
        X = check_features(X)
        y2, groups, single = _stack_targets(ys, X.shape[0])
        dev = pick_device(self.device)
        rows = np.arange(X.shape[0])
        moments = _moments(X, rows, y2, dev, with_gram=X.shape[0] > X.shape[1])
        return _solve(X, rows, y2[rows], groups, single, moments, self._alphas(), self.standardize, dev)

    def fit_without_blocks(self, X, y, blocks: Sequence) -> list[RidgeProbe]:
        """One fitted copy of this probe per block, each fitted on every row of ``X`` outside its block (a boolean
        mask or row indices): the same probes as ``clone(self).fit(X[~block], y[~block])`` one by one.

        When there are more rows than features the rows are streamed once: each block's Gram matrix is the pool's
        minus the block's rows (exact; besides the block's own rows only the leave-one-out pass reads X again), so a
        held-out block costs one eigendecomposition and one projection instead of a full fit."""
        return list(self.iter_without_blocks(X, y, blocks))

    def iter_without_blocks(self, X, y, blocks: Sequence) -> Iterator[RidgeProbe]:
        """``fit_without_blocks`` one block at a time (for a progress bar)."""
        X = check_features(X)
        n = X.shape[0]
        y2, groups, single = _stack_targets([y], n)
        dev = pick_device(self.device)
        alphas = self._alphas()
        pool = None
        for block in blocks:
            mask = _as_mask(block, n)
            fit_rows = np.flatnonzero(~mask)
            if len(fit_rows) < 3:
                raise ValueError(f"need at least 3 rows outside a block, got {len(fit_rows)}")
            if len(fit_rows) > X.shape[1]:
                if pool is None:
                    pool = _moments(X, np.arange(n), y2, dev, with_gram=True)
                inside = _moments(X, np.flatnonzero(mask), y2, dev, with_gram=True, shift=pool.shift)
                moments = pool.minus(inside)
            else:
                moments = _moments(X, fit_rows, y2, dev, with_gram=False)
            (fit,) = _solve(X, fit_rows, y2[fit_rows], groups, single, moments, alphas, self.standardize, dev)
            probe = clone(self)
            probe._set_fitted(fit)
            yield probe

    def _alphas(self) -> np.ndarray:
        alphas = np.asarray(DEFAULT_ALPHAS if self.alphas is None else self.alphas, dtype=np.float64).ravel()
        if alphas.size == 0 or (alphas <= 0).any():
            raise ValueError("alphas must be a non-empty list of positive numbers")
        return alphas

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
        X = check_features(X)
        check_n_features(X, self.n_features_in_, type(self).__name__)
        coef = np.atleast_2d(self.coef_).T
        out = np.empty((X.shape[0], coef.shape[1]))
        for rows in _chunks(X.shape[0]):
            chunk = np.asarray(X[rows], dtype=np.float64)
            check_finite(chunk)
            out[rows] = chunk @ coef
        out += self.intercept_
        return out[:, 0] if np.ndim(self.coef_) == 1 else out


def _rows(X, rows, dev: torch.device) -> torch.Tensor:
    """Rows of X (a slice or row indices of any array-like, e.g. a read-only float16 memmap) as a float64 tensor."""
    if isinstance(rows, np.ndarray) and len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        rows = slice(int(rows[0]), int(rows[-1]) + 1)  # contiguous: a slice reads a memmap without a gather
    chunk = torch.from_numpy(np.array(X[rows], dtype=np.float64)).to(dev)
    check_finite(chunk)
    return chunk


def _as_mask(block, n: int) -> np.ndarray:
    """A block given as a boolean mask or as row indices, as a boolean mask of ``n`` rows."""
    block = np.asarray(block)
    if block.dtype == bool:
        if block.shape != (n,):
            raise ValueError(f"a block mask has shape {block.shape}, X has {n} rows")
        return block
    mask = np.zeros(n, dtype=bool)
    mask[block.astype(int)] = True
    return mask


def _stack_targets(ys: Sequence, n: int) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """Target sets side by side (n, k), the set each column belongs to, and which sets were given as (n,)."""
    if not ys:
        raise ValueError("no target sets to fit")
    ys = [check_targets(y, n) for y in ys]
    if n < 3:
        raise ValueError(f"need at least 3 rows to fit a ridge probe with leave-one-out, got n_samples = {n}")
    y2 = np.hstack([y[:, None] if y.ndim == 1 else y for y in ys])
    groups = np.repeat(np.arange(len(ys)), [1 if y.ndim == 1 else y.shape[1] for y in ys])
    return y2, groups, [y.ndim == 1 for y in ys]


@dataclass(frozen=True)
class _Moments:
    """Sums over some rows of X, each row minus ``shift`` first (the pool's mean, so the float64 sums carry no
    cancellation): the count, Σx, Σx², Σxxᵀ (when there are more rows than features) and Σx yᵀ. Moments of a subset
    of rows are the pool's ``minus`` the other rows'."""

    n: int
    shift: torch.Tensor
    total: torch.Tensor
    sq: torch.Tensor
    gram: torch.Tensor | None
    xy: torch.Tensor

    def minus(self, other: _Moments) -> _Moments:
        gram = None if self.gram is None or other.gram is None else self.gram - other.gram
        return _Moments(self.n - other.n, self.shift, self.total - other.total, self.sq - other.sq, gram,
                        self.xy - other.xy)  # fmt: skip


def _moments(X, rows: np.ndarray, y2: np.ndarray, dev: torch.device, *, with_gram: bool, shift=None) -> _Moments:
    """The moments of X's ``rows`` (and of y2's), streamed in float64 chunks; ``shift`` defaults to their mean."""
    d = X.shape[1]
    zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=dev)  # noqa: E731
    if shift is None:
        shift = zeros(d)
        for chunk in _chunks(len(rows)):
            shift += _rows(X, rows[chunk], dev).sum(dim=0)
        shift /= max(len(rows), 1)
    total, sq, xy = zeros(d), zeros(d), zeros(d, y2.shape[1])
    gram = zeros(d, d) if with_gram else None
    y = torch.as_tensor(y2, device=dev)
    for chunk in _chunks(len(rows)):
        idx = rows[chunk]
        x = _rows(X, idx, dev) - shift
        total += x.sum(dim=0)
        sq += (x * x).sum(dim=0)
        xy += x.T @ y[torch.as_tensor(idx, device=dev)]
        if gram is not None:
            _add_gram(gram, x)
    if gram is not None and _lapack_here(gram):
        gram = torch.tril(gram) + torch.tril(gram, diagonal=-1).T  # syrk filled the lower triangle
    return _Moments(len(rows), shift, total, sq, gram, xy)


SCIPY_MIN_WIDTH = 1024
"""From this width on, CPU fits take the Gram matrix from BLAS syrk and the eigendecomposition from LAPACK's MRRR
driver through scipy; below it, torch. Measured on 2 cores (one fit, 8,000-12,000 rows): scipy 9% slower at 576
wide (and 2x slower on 4,000 x 512, where switching between scipy's and torch's thread pools costs more than the
arithmetic), 8% faster at 1,024, 13% at 2,048 and 20% at 4,096 in CPU time."""


def _lapack_here(matrix: torch.Tensor) -> bool:
    """Whether this square matrix's arithmetic goes through scipy (a CPU tensor at least :data:`SCIPY_MIN_WIDTH`
    wide)."""
    return matrix.device.type == "cpu" and matrix.shape[0] >= SCIPY_MIN_WIDTH


def _add_gram(gram: torch.Tensor, x: torch.Tensor) -> None:
    """``gram += xᵀx``: a symmetric rank-k update where :func:`_lapack_here` (BLAS syrk: half the flops of the
    product; it fills the lower triangle, which :func:`_moments` mirrors), elsewhere the product."""
    if not _lapack_here(gram):
        gram += x.T @ x
        return
    g = gram.numpy()  # shares gram's memory; g.T is the Fortran-ordered view syrk updates in place
    out = blas.dsyrk(1.0, x.numpy().T, beta=1.0, c=g.T, trans=0, lower=0, overwrite_c=1)
    if not np.shares_memory(out, g):
        g.T[...] = out


def _eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix: LAPACK's MRRR driver where
    :func:`_lapack_here` (measured at 4,096 x 4,096: 15.4 CPU-s against 21.6 for torch's divide and conquer), torch
    elsewhere."""
    if not _lapack_here(matrix):
        return torch.linalg.eigh(matrix)
    values, vectors = scipy.linalg.eigh(matrix.numpy(), driver="evr", check_finite=False)
    return torch.from_numpy(values), torch.from_numpy(vectors)


def _feature_scaling(moments: _Moments, standardize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Column means and (if ``standardize``) standard deviations of the moments' rows; a column constant on them
    (its variance at the level of float64 rounding of its magnitude) keeps scale 1."""
    n = moments.n
    m = moments.total / n
    mean = moments.shift + m
    if not standardize:
        return mean, torch.ones_like(mean)
    var = (moments.sq / n - m * m).clamp(min=0)
    floor = 1e-13 * (moments.sq / n + moments.shift * moments.shift)
    std = var.sqrt()
    return mean, torch.where(var > floor, std, torch.ones_like(std))


def _loo_squared_errors(project, yz: torch.Tensor, shrink: torch.Tensor, weights: torch.Tensor) -> np.ndarray:
    """Sum over rows of the squared leave-one-out residual, per alpha and target (A, k); ``project(positions)``
    gives the rows' coordinates in the eigenbasis."""
    n = yz.shape[0]
    r, n_alphas, k = weights.shape
    sq_err = torch.zeros(n_alphas, k, dtype=torch.float64, device=yz.device)
    for positions in _chunks(n):
        z = project(positions)
        lev = (z * z) @ shrink + 1.0 / n  # (c, A)
        fitted = (z @ weights.reshape(r, n_alphas * k)).reshape(-1, n_alphas, k)
        loo = (yz[positions][:, None, :] - fitted) / (1.0 - lev)[:, :, None]
        sq_err += (loo * loo).sum(dim=0)
    return sq_err.cpu().numpy()


def _solve(
    X,
    fit_rows: np.ndarray,
    y_fit: np.ndarray,
    groups: np.ndarray,
    single: list[bool],
    moments: _Moments,
    alphas: np.ndarray,
    standardize: bool,
    dev: torch.device,
) -> list[_Solution]:
    """Ridge solutions on X's ``fit_rows`` (whose moments are given): one eigendecomposition, then for each target
    set (``groups`` of y's columns) the alpha with the least leave-one-out error and its coefficients."""
    n = len(fit_rows)
    mean, scale = _feature_scaling(moments, standardize)
    y_mean, y_scale = y_fit.mean(axis=0), y_fit.std(axis=0)
    y_scale[y_scale == 0] = 1.0
    yz = torch.as_tensor((y_fit - y_mean) / y_scale, device=dev)
    a = torch.as_tensor(alphas, device=dev)

    def block(positions: slice) -> torch.Tensor:
        return (_rows(X, fit_rows[positions], dev) - mean) / scale

    if moments.gram is not None:
        m = moments.total / n
        centred = moments.gram - n * torch.outer(m, m)
        evals, vecs = _eigh(centred / torch.outer(scale, scale))
        cross = moments.xy - torch.outer(moments.total, torch.as_tensor(y_mean, device=dev))
        ztz_y = vecs.T @ (cross / scale[:, None] / torch.as_tensor(y_scale, device=dev)[None, :])
        project = lambda positions: block(positions) @ vecs  # noqa: E731
    else:
        xc_all = block(slice(0, n))
        evals, vecs = _eigh(xc_all @ xc_all.T)
        z_all = vecs * evals.clamp(min=0).sqrt()
        ztz_y = z_all.T @ yz
        project = lambda positions: z_all[positions]  # noqa: E731
    evals = evals.clamp(min=0)
    shrink = 1.0 / (evals[:, None] + a[None, :])  # (r, A)
    weights = shrink[:, :, None] * ztz_y[:, None, :]  # (r, A, k)
    sq_err = _loo_squared_errors(project, yz, shrink, weights)
    mean_np, scale_np = mean.cpu().numpy(), scale.cpu().numpy()

    fits = []
    for group, is_single in enumerate(single):
        cols = np.flatnonzero(groups == group)
        loo_mse = sq_err[:, cols].sum(axis=1) / (n * len(cols))
        best = int(np.argmin(loo_mse))
        if moments.gram is not None:
            w_z = vecs @ weights[:, best, cols]  # (d, k_group)
        else:
            u_scaled = vecs * (1.0 / (evals + a[best]))
            w_z = xc_all.T @ (u_scaled @ (vecs.T @ yz[:, cols]))
        coef = (w_z.cpu().numpy() / scale_np[:, None]) * y_scale[None, cols]  # (d, k_group) in raw units
        fits.append(_Solution(
            alphas=alphas, loo_mse=loo_mse, best=best, feature_mean=mean_np, feature_scale=scale_np,
            y_mean=y_mean[cols], y_scale=y_scale[cols], coef=coef, single=is_single,
        ))  # fmt: skip
    return fits
