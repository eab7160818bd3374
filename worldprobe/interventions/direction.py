"""The probe whose reading is compared with the model's answers (``ask``), at its layer.

The layer is chosen on train rows only, with the probe stage's own rule (``worldprobe.probes.selection``: the ridge's
exact leave-one-out R² on train rows, ties to the shallower layer), so it is the ``selected_layer`` a ridge probe run
of the same cache reports. ``--layer`` overrides it. Steering directions are ``worldprobe.interventions.directions``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from worldprobe.errors import WorldprobeError
from worldprobe.probes.ridge import RidgeProbe


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
