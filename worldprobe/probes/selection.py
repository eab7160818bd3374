"""Choosing the layer to report from train rows only (docs/verdicts.md).

Each fitted probe carries a score computed without test rows: the ridge's exact leave-one-out R² on its fit rows
(``1 - min loo_mse_``, in units of the train variance of the z-scored targets), the MLP's R² on its validation part
of the fit rows (``1 - val_loss_``). The reported layer of a curve (the probe, or a layered control) is the layer with
the highest score; ties go to the shallower layer. Test rows never enter the choice.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator

from worldprobe.probes.mlp import MLPProbe
from worldprobe.probes.ridge import RidgeProbe

CRITERIA = {
    "ridge": "highest leave-one-out R² on train rows (exact, from the ridge fit)",
    "mlp": "highest R² on the MLP's validation part of the train rows (10%)",
}
SCORE_METRIC = "selection_r2"
"""The metric name of the per-layer selection score in metrics.parquet (split ``train``, target ``mean``)."""


def selection_score(probe: BaseEstimator) -> float:
    """The fitted probe's R² estimated from its fit rows alone (higher is better)."""
    if isinstance(probe, RidgeProbe):
        return float(1.0 - np.min(probe.loo_mse_))
    if isinstance(probe, MLPProbe):
        return float(1.0 - probe.val_loss_[probe.weight_decay_])
    raise TypeError(f"no train-only selection score for {type(probe).__name__}")


def criterion(probe: str) -> str:
    """The plain-words criterion for a probe kind (``ridge`` / ``mlp``)."""
    return CRITERIA[probe]


def select_layer(scores: Mapping[int, float]) -> int:
    """The layer with the highest selection score (ties: the shallower layer)."""
    if not scores:
        raise ValueError("no layers to select from")
    layers = sorted(scores)
    values = np.array([scores[layer] for layer in layers], dtype=np.float64)
    if not np.isfinite(values).any():
        raise ValueError("no layer has a finite selection score")
    return int(layers[int(np.nanargmax(values))])
