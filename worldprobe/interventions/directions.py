"""Directions to steer along, each computed on train entities only (docs/how-to/behaviour.md).

A ridge probe's weights are a *decoding* filter: they also cancel nuisance directions correlated with the target,
and on Gemma-3-270M death years they are nearly orthogonal to the difference of class means (cos .04-.08). The
direction that carries the value in the activations is the *encoding* pattern Cov(X)·w (Haufe et al. 2014), which
the difference of means between far-apart target groups and the first PLS component estimate. Methods:

- ``ridge``: the ridge probe's weights for the steered target (the probe stage's settings);
- ``pattern``: Cov(X)·w, the encoding pattern of those weights;
- ``mean_diff``: mean activation of the train entities in the top quartile of the target minus the bottom quartile's;
- ``pls1``, ``pls2``, ...: the k-th x-loading of a partial-least-squares regression (``sklearn.cross_decomposition.
  PLSRegression``, unscaled) with as many components;
- a ``.npy`` file: the user's own vector (d,) for every layer, or (n_layers + 1, d) with a row per layer.

Every direction is a unit vector oriented so that moving along it raises the target on train rows (its covariance
with the target is positive; a flipped user vector is recorded as such), with its **calibration**: how far the train
activations move along it per target unit (the slope of the projection on the target, ``per_target_unit``). Doses
are multiples of |Δμ| (the norm of the ``mean_diff`` vector at the layer), the same edit norm for every direction at a
layer, so directions are compared at equal size; a dose also reads in target units through each direction's own
calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldprobe.errors import WorldprobeError
from worldprobe.interventions.options import METHODS, is_method
from worldprobe.probes.ridge import RidgeProbe

QUANTILE = 0.25
"""``mean_diff`` compares the train entities at or above the 1 - QUANTILE quantile of the target with those at or
below the QUANTILE quantile."""


@dataclass(frozen=True)
class LayerStats:
    """What doses at one layer are measured against (train rows): the mean-difference vector and its norm (|Δμ|),
    the target difference between the two quartile groups, and the median norm of the residual stream."""

    layer: int
    mean_diff: np.ndarray
    dmu_norm: float
    target_gap: float
    median_norm: float


@dataclass(frozen=True)
class SteeringDirection:
    """A unit steering vector at one layer, oriented to raise the target, with its calibration."""

    method: str  # ridge | pattern | mean_diff | plsK | file | random | random_init
    name: str  # e.g. "mean_diff", "random-2", the file's name
    layer: int
    unit: np.ndarray  # (d,)
    per_target_unit: float  # activation units along ``unit`` per target unit (train rows)
    flipped: bool = False  # the method's raw vector pointed the other way

    def target_units(self, norm: float) -> float:
        """The target change an edit of ``norm`` along this direction stands for by its calibration."""
        return norm / self.per_target_unit if self.per_target_unit > 0 else float("nan")


def layer_stats(layer: int, x: np.ndarray, y: np.ndarray) -> LayerStats:
    """:class:`LayerStats` from the train activations ``x`` (n, d) and one target ``y`` (n,)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    low, high = np.quantile(y, [QUANTILE, 1 - QUANTILE])
    top, bottom = y >= high, y <= low
    if top.sum() < 2 or bottom.sum() < 2 or not high > low:
        raise WorldprobeError("the target does not vary enough on train rows for a difference of means",
                              field="target")  # fmt: skip
    diff = x[top].mean(axis=0) - x[bottom].mean(axis=0)
    return LayerStats(layer, diff, float(np.linalg.norm(diff)), float(y[top].mean() - y[bottom].mean()),
                      float(np.median(np.linalg.norm(x, axis=1))))  # fmt: skip


def raw_vector(method: str, x: np.ndarray, y: np.ndarray, stats: LayerStats) -> np.ndarray:
    """The (d,) vector of a built-in method on train activations ``x`` and target ``y``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if method == "mean_diff":
        return stats.mean_diff
    if method in ("ridge", "pattern"):
        weights = np.asarray(RidgeProbe().fit(x, y).coef_, dtype=np.float64).ravel()
        if method == "ridge":
            return weights
        centred = x - x.mean(axis=0)
        return centred.T @ (centred @ weights) / len(x)
    if method.startswith("pls") and is_method(method):
        from sklearn.cross_decomposition import PLSRegression

        k = int(method[3:])
        pls = PLSRegression(n_components=k, scale=False).fit(x, y)
        return np.asarray(pls.x_loadings_[:, k - 1], dtype=np.float64)
    raise WorldprobeError(f"unknown steering direction {method!r}", field="direction",
                          hint=f"one of {', '.join(METHODS)} (pls<k> for any k), or a .npy file")  # fmt: skip


def oriented(method: str, name: str, layer: int, vector: np.ndarray, x: np.ndarray, y: np.ndarray
             ) -> SteeringDirection:  # fmt: skip
    """The unit direction of ``vector``, flipped when needed so that it raises ``y`` on the rows of ``x``, with its
    calibration (slope of the projection of ``x`` on ``y``)."""
    vector = np.asarray(vector, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise WorldprobeError(f"the {name} direction at layer {layer} is zero or not finite", field="direction")
    unit = vector / norm
    along = np.asarray(x, dtype=np.float64) @ unit
    y = np.asarray(y, dtype=np.float64)
    slope = float(np.cov(along, y)[0, 1] / np.var(y, ddof=1))
    flipped = slope < 0
    return SteeringDirection(method, name, layer, -unit if flipped else unit, abs(slope), flipped)


def method_directions(methods: Sequence[str], layer: int, x: np.ndarray, y: np.ndarray, stats: LayerStats,
                      n_layers: int) -> list[SteeringDirection]:  # fmt: skip
    """The oriented directions of ``methods`` (built-in names or ``.npy`` paths) at one layer."""
    out = []
    for method in methods:
        if method.endswith(".npy"):
            out.append(oriented("file", Path(method).name, layer, user_vector(method, layer, x.shape[1], n_layers), x,
                                y))  # fmt: skip
        else:
            out.append(oriented(method, method, layer, raw_vector(method, x, y, stats), x, y))
    return out


def user_vector(path: str | Path, layer: int, d_model: int, n_layers: int) -> np.ndarray:
    """A user's steering vector for ``layer`` from a ``.npy`` file: shape (d,) for every layer, or (n_layers + 1, d)
    with one row per layer (0 = the embedding output)."""
    file = Path(path)
    if not file.is_file():
        raise WorldprobeError("no such direction file", file=file, field="direction", hint="a .npy file")
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise WorldprobeError(f"cannot read the direction file: {error}", file=file, field="direction") from None
    if array.ndim == 1 and array.shape[0] == d_model:
        vector = array
    elif array.ndim == 2 and array.shape == (n_layers + 1, d_model):
        vector = array[layer]
    else:
        raise WorldprobeError(
            f"a direction file holds shape {array.shape}; this model needs ({d_model},) or ({n_layers + 1}, "
            f"{d_model})", file=file, field="direction",
        )  # fmt: skip
    if not np.isfinite(vector).all():
        raise WorldprobeError(f"the direction file has non-finite values at layer {layer}", file=file,
                              field="direction")  # fmt: skip
    return np.asarray(vector, dtype=np.float64)


def random_directions(count: int, layer: int, d_model: int, seed: int) -> list[SteeringDirection]:
    """``count`` seeded isotropic unit directions at ``layer`` (controls; no calibration)."""
    seeds = np.random.default_rng([seed, layer]).integers(0, 2**31, count)
    out = []
    for k, s in enumerate(seeds):
        v = np.random.default_rng(int(s)).normal(size=d_model)
        out.append(SteeringDirection("random", f"random-{k}", layer, v / np.linalg.norm(v), float("nan")))
    return out
