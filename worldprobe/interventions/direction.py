"""The probe whose reading is compared with the model's answers and whose direction steers it, and the control
directions of the same norm.

The layer is chosen on train rows only, with the probe stage's own rule (``worldprobe.probes.selection``: the ridge's
exact leave-one-out R² on train rows, ties to the shallower layer), so it is the ``selected_layer`` a ridge probe run
of the same cache reports. ``--layer`` overrides it.

Steering vectors (cache layer l, ridge coefficients W of shape (k, d) in raw activation units): the edit that moves
the probe's reading of target j by ``shift`` and leaves its other targets unchanged with the smallest norm is
``shift * pinv(W)[:, j]`` (for one target ``shift * w / |w|²``). Every control vector has the same norm at each
shift and the shift's sign:

- ``random``: an isotropic Gaussian direction (one per seed);
- ``orthogonal``: the difference of two random train entities' activations with the probe's row space projected
  out, so the probe's reading does not move at all while the edit has a natural direction of the activations;
- ``random_init``: the ridge direction fitted the same way on the random-init twin's activations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from worldprobe.errors import WorldprobeError
from worldprobe.probes.ridge import RidgeProbe

CONTROL_KINDS = ("random", "orthogonal", "random_init")


@dataclass(frozen=True)
class LayerChoice:
    """The probe's layer, how it was chosen, and the per-layer train-only scores it was chosen from."""

    layer: int
    criterion: str
    scores: dict[int, float]  # layer -> selection score (leave-one-out R² on train rows)


def select_layer(
    layer_of: Callable[[int], np.ndarray], layers: Sequence[int], y: np.ndarray, train: np.ndarray,
    *, override: int | None = None, progress: bool = True,
) -> LayerChoice:  # fmt: skip
    """Fit a ridge probe per layer on the ``train`` rows and choose the layer as the probe stage does
    (``worldprobe.probes.selection``); ``override`` (``--layer``) is taken as given (it must be cached)."""
    from worldprobe.probes import selection

    layers = sorted(int(v) for v in layers)
    if override is not None:
        if override not in layers:
            raise WorldprobeError(f"layer {override} is not in the activation cache", field="layer",
                                  hint=f"cached layers: {layers}")  # fmt: skip
        return LayerChoice(int(override), "given (--layer)", {})
    scores = {}
    for layer in tqdm(layers, desc="choosing the layer (train rows)", unit="layer", disable=not progress):
        probe = RidgeProbe().fit(np.asarray(layer_of(layer), dtype=np.float32)[train], y[train])
        scores[layer] = selection.selection_score(probe)
    return LayerChoice(selection.select_layer(scores), selection.criterion("ridge"), scores)


def fit_probe(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> RidgeProbe:
    """The ridge probe (the probe stage's settings) fitted on the ``train`` rows of ``x``."""
    return RidgeProbe().fit(np.asarray(x, dtype=np.float32)[train], y[train])


def coefficients(probe: RidgeProbe) -> np.ndarray:
    """(k, d) coefficients of a fitted probe in raw activation units."""
    return np.atleast_2d(np.asarray(probe.coef_, dtype=np.float64))


def unit_shift_vector(coef: np.ndarray, target: int) -> np.ndarray:
    """The smallest edit (d,) that moves the reading of target ``target`` by +1 and the others by 0."""
    coef = np.atleast_2d(coef)
    if not 0 <= target < coef.shape[0]:
        raise ValueError(f"target index {target} outside the probe's {coef.shape[0]} targets")
    if not np.isfinite(coef).all() or np.linalg.norm(coef[target]) == 0:
        raise WorldprobeError("the probe's coefficients are zero or not finite: nothing to steer along")
    return np.linalg.pinv(coef)[:, target]


def random_direction(d: int, seed: int) -> np.ndarray:
    """A seeded isotropic unit vector."""
    v = np.random.default_rng(seed).normal(size=d)
    return v / np.linalg.norm(v)


def orthogonal_direction(x_train: np.ndarray, coef: np.ndarray, seed: int) -> np.ndarray:
    """A unit vector along the difference of two seeded random train rows, with the probe's row space removed."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(np.atleast_2d(coef).T)  # (d, k) orthonormal basis of the probe's row space
    for _ in range(100):
        a, b = rng.choice(len(x_train), size=2, replace=False)
        v = np.asarray(x_train[a], dtype=np.float64) - np.asarray(x_train[b], dtype=np.float64)
        v -= basis @ (basis.T @ v)
        norm = np.linalg.norm(v)
        if norm > 1e-8:
            return v / norm
    raise WorldprobeError("cannot draw an orthogonal control: the train activations do not vary")


def unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    if norm == 0 or not np.isfinite(norm):
        raise WorldprobeError("a steering direction has zero or non-finite norm")
    return np.asarray(v, dtype=np.float64) / norm
