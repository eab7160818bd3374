"""The layer sweep: a fresh probe per layer fitted on the train rows, scored on train and test rows, the layer chosen
on train rows only (``worldprobe.probes.selection``); extra target sets (a control's permuted targets, the
within-group offsets, the alternative worlds) fitted beside it on the same decomposition per layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from worldprobe.errors import WorldprobeError
from worldprobe.probes import metrics
from worldprobe.probes.controls import SharedFits
from worldprobe.probes.mlp import MLPProbe
from worldprobe.probes.ridge import RidgeProbe
from worldprobe.probes.selection import SCORE_METRIC, select_layer, selection_score


def score(true: pd.DataFrame, pred: pd.DataFrame, kind: str, *, proximity: bool = True) -> list[tuple[str, str, float]]:
    """(target, metric, value) rows for one split: r2/spearman/pearson per target and their mean, mae per target,
    and for places haversine_km, for time abs_error_years, and the proximity error (target ``mean``)."""
    out: list[tuple[str, str, float]] = []
    if len(true) < 2:
        return out
    for name, fn in (
        ("r2", metrics.r2_per_target),
        ("spearman", metrics.spearman_per_target),
        ("pearson", metrics.pearson_per_target),
    ):
        per = fn(true, pred)
        out += [(t, name, float(v)) for t, v in per.items()] + [("mean", name, float(per.mean()))]
    out += [(t, "mae", float(v)) for t, v in metrics.mae_per_target(true, pred).items()]
    if kind == "place":
        out.append(("mean", "haversine_km", float(metrics.haversine_km(true, pred).mean())))
    elif kind == "time":
        col = true.columns[0]
        out.append((col, "abs_error_years", float(metrics.abs_error_years(true[col], pred[col]).mean())))
    if proximity:
        p_true = true if kind == "place" else true.iloc[:, 0]
        p_pred = pred[list(true.columns)] if kind == "place" else pred[true.columns[0]]
        prox_kind = "place" if kind == "place" else "time"
        out.append(("mean", "proximity", float(metrics.proximity_error(p_true, p_pred, kind=prox_kind).mean())))
    return out


@dataclass
class ProbeResult:
    """What a layer sweep returns: tidy metric rows, predictions for every row, the fitted probes, each layer's
    train-only selection score and the layer it selects (test rows never enter the choice)."""

    metrics: pd.DataFrame  # columns: layer, split, target, metric, value
    predictions: dict[int, np.ndarray]  # layer -> (n_rows, n_targets) in target column order, every row
    targets: pd.DataFrame
    kind: str
    selection: dict[int, float]  # layer -> selection score (see worldprobe.probes.selection)
    selected_layer: int
    probes: dict[int, BaseEstimator] = field(default_factory=dict)
    dropped: int = 0  # rows without a finite target (not fitted, not scored)
    shared: dict[str, SharedFits] = field(default_factory=dict)  # extra target sets fitted beside the probe

    def prediction_frame(self, layer: int) -> pd.DataFrame:
        """Predictions of one layer as a DataFrame named like the targets."""
        return pd.DataFrame(self.predictions[layer], columns=self.targets.columns)


def layer_sweep(
    layer_of: Callable[[int], Any],
    targets: pd.DataFrame,
    is_test: np.ndarray,
    layers: Sequence[int],
    make_probe: Callable[[], BaseEstimator],
    *,
    kind: str = "numeric",
    keep_probes: bool = False,
    progress: bool = True,
    extra: dict[str, list[np.ndarray]] | None = None,
) -> ProbeResult:
    """Fit a fresh probe per layer on the train rows (finite targets) and score train and test rows.

    ``layer_of(l)`` returns the (n, d) activations of layer ``l`` in the row order of ``targets``. ``extra`` names
    more target sets (e.g. a control's permuted targets, ``controls.control_targets``) fitted on the same rows of the
    same layer: with the ridge probe all of them share one decomposition per layer (``RidgeProbe.fit_many``, the same
    fits as one by one); their predictions and selection scores come back in ``result.shared``.
    """
    is_test = np.asarray(is_test, dtype=bool)
    y = targets.to_numpy(dtype=np.float64)
    valid = np.isfinite(y).all(axis=1)
    train, test = np.flatnonzero(valid & ~is_test), np.flatnonzero(valid & is_test)
    if len(train) < 3 or len(test) < 2:
        raise WorldprobeError(f"too few rows with a target: {len(train)} train, {len(test)} test", field="targets")
    rows, preds, probes, scores = [], {}, {}, {}
    sets = [(name, np.asarray(a, dtype=np.float64).reshape(len(y), -1)) for name, arrays in (extra or {}).items()
            for a in arrays]  # fmt: skip
    shared = {name: SharedFits([a for n, a in sets if n == name], [], []) for name in dict.fromkeys(n for n, _ in sets)}
    for fits in shared.values():
        fits.predictions, fits.selection = [{} for _ in fits.targets], [{} for _ in fits.targets]
    for layer in tqdm(list(layers), desc="probing layers", unit="layer", disable=not progress):
        x = layer_of(layer)
        probe, others = _fit_with_extra(make_probe, x, y, train, [a for _, a in sets])
        pred = np.asarray(probe.predict(x), dtype=np.float64).reshape(len(y), -1)
        preds[layer] = pred
        scores[layer] = selection_score(probe)
        position = {name: 0 for name in shared}
        for (name, _), other in zip(sets, others, strict=True):
            i = position[name]
            shared[name].predictions[i][layer] = np.asarray(other.predict(x), dtype=np.float64).reshape(len(y), -1)
            shared[name].selection[i][layer] = selection_score(other)
            position[name] += 1
        if keep_probes:
            probes[layer] = probe
        pred_df = pd.DataFrame(pred, columns=targets.columns)
        for split, idx in (("train", train), ("test", test)):
            true_s, pred_s = targets.iloc[idx].reset_index(drop=True), pred_df.iloc[idx].reset_index(drop=True)
            rows += [(layer, split, t, m, v) for t, m, v in score(true_s, pred_s, kind, proximity=split == "test")]
        rows += [(layer, "train", "mean", m, v) for m, v in probe_settings(probe)]
        rows.append((layer, "train", "mean", SCORE_METRIC, scores[layer]))
    table = pd.DataFrame(rows, columns=["layer", "split", "target", "metric", "value"])
    return ProbeResult(
        metrics=table, predictions=preds, targets=targets, kind=kind, selection=scores,
        selected_layer=select_layer(scores), probes=probes, dropped=int((~valid).sum()), shared=shared,
    )  # fmt: skip


def _fit_with_extra(
    make_probe: Callable[[], BaseEstimator], x, y: np.ndarray, train: np.ndarray, extra: list[np.ndarray]
) -> tuple[BaseEstimator, list[BaseEstimator]]:
    """The probe fitted to ``y`` and one per extra target set, all on the train rows of ``x`` (one decomposition
    for all when the probe has ``fit_many``)."""
    probe = make_probe()
    if not extra:
        return probe.fit(x[train], y[train]), []
    if hasattr(probe, "fit_many"):
        fitted = probe.fit_many(x[train], [y[train], *[a[train] for a in extra]])
        return fitted[0], fitted[1:]
    return probe.fit(x[train], y[train]), [make_probe().fit(x[train], a[train]) for a in extra]


PROBE_SETTINGS = ("alpha", "alpha_on_edge", "weight_decay", "best_epoch")
"""Metric rows that record a fitted probe's settings, not a score."""


def probe_settings(probe: BaseEstimator) -> list[tuple[str, float]]:
    if isinstance(probe, RidgeProbe):
        return [("alpha", probe.alpha_), ("alpha_on_edge", float(probe.alpha_on_edge_))]
    if isinstance(probe, MLPProbe):
        return [("weight_decay", probe.weight_decay_), ("best_epoch", float(probe.best_epoch_[probe.weight_decay_]))]
    return []
