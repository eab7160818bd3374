"""Within-group information, tested by a probe fitted to it (docs/verdicts.md).

The main probe is fitted to the total variance of the target, which group identity dominates (a country-mean oracle
explains R² ≈ .96 of world places, a century-mean oracle ≈ 1.00 of death years), so its within-group correlation
says little about what the activations hold within a group: measured on Gemma-3-270M world places, the main probe's
within-country r was -.07 while a probe fitted to the within-country offsets found r ≈ .2 with an interval above 0.

The residual probe is that second probe. Its target is the entity's offset from its group's train mean (country,
state, borough, century, decade or year; ``DatasetSpec.oracle_column``). It is fitted on every train row (a train row
alone in its group has offset 0 by this definition, which teaches the probe nothing but costs nothing: the fit then
shares the main probe's decomposition of each layer, ``RidgeProbe.fit_many``) and reported at the layer its
leave-one-out score chooses (train rows only). It is *scored* only on test entities whose group has at least
:data:`MIN_TRAIN_ROWS` train rows (the others have no estimate of their group's mean). Its lexical twin is the lexical
control (TF-IDF n-grams of the names) fitted to the same offsets on the same rows. Both are scored by Pearson r
between predicted and true offsets (the mean over targets); the verdict compares them with a paired interval. A
prediction is centred on the mean prediction of its group's train rows, so an error shared by a whole group is not
counted as within-group information, nor held against it (a representation that holds the position linearly but not
the group would otherwise score only about sd(offset)/sd(y): planted in tests/test_controls.py; on the quick study's
world places and people, both models, centring moved r by at most .04).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from worldprobe.probes.lexical import lexical_fit
from worldprobe.probes.selection import select_layer, selection_score

MIN_TRAIN_ROWS = 2
"""A group needs this many train rows for its entities to enter the residual probe (its mean is then an estimate)."""
MIN_TEST_ROWS = 20
"""Fewer eligible test rows than this: the within-group test is not run (said in the verdict)."""


@dataclass
class ResidualFit:
    """The residual probe and its lexical twin over every row of a run (NaN outside ``eligible`` rows)."""

    eligible: np.ndarray  # bool per row: its group has at least MIN_TRAIN_ROWS train rows (the rows scored)
    residuals: np.ndarray  # (n, k) target minus the group's train mean (NaN outside ``eligible``)
    predictions: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> (n, k)
    selection: dict[int, float] = field(default_factory=dict)  # layer -> leave-one-out R² on eligible train rows
    lexical: np.ndarray | None = None  # (n, k) the lexical twin's predictions
    lexical_alpha: float = float("nan")
    groups: int = 0  # groups with enough train rows

    @property
    def selected_layer(self) -> int:
        return select_layer(self.selection)


def residual_targets(groups: pd.Series, y: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Which rows are scored (their group has :data:`MIN_TRAIN_ROWS` train rows), every row's offset from its group's
    train mean (NaN for a row whose group has no train row; 0 for a train row alone in its group), and the number of
    groups with enough train rows."""
    y = np.asarray(y, dtype=np.float64).reshape(len(groups), -1)
    train = np.asarray(train, dtype=bool)
    keys = group_keys_of(groups)
    counts = keys[train].value_counts()
    eligible = keys.map(counts).fillna(0).to_numpy() >= MIN_TRAIN_ROWS
    means = pd.DataFrame(y[train]).groupby(keys[train].to_numpy()).mean()
    return eligible, y - means.reindex(keys.to_numpy()).to_numpy(), int((counts >= MIN_TRAIN_ROWS).sum())


def group_keys_of(groups: pd.Series) -> pd.Series:
    return groups.astype("string").fillna("<missing>").reset_index(drop=True)


def fit_residual_probe(
    layer_of: Callable[[int], np.ndarray],
    layers: Sequence[int],
    groups: pd.Series,
    texts: pd.Series,
    y: np.ndarray,
    is_test: np.ndarray,
    make_probe: Callable[[], BaseEstimator],
    *,
    seed: int,
    progress: bool = True,
) -> ResidualFit:
    """Fit the residual probe at every layer and its lexical twin (module docstring)."""
    train = ~np.asarray(is_test, dtype=bool)
    _, offsets, _ = residual_targets(groups, y, train)
    predictions, selection = {}, {}
    for layer in tqdm(list(layers), desc="within-group probe", unit="layer", leave=False, disable=not progress):
        x = layer_of(layer)
        probe = make_probe().fit(x[train], offsets[train])
        predictions[layer] = np.asarray(probe.predict(x), dtype=np.float64).reshape(offsets.shape)
        selection[layer] = selection_score(probe)
    return residual_fit(groups, texts, y, is_test, predictions, selection, seed=seed)


def residual_fit(groups: pd.Series, texts: pd.Series, y: np.ndarray, is_test: np.ndarray,
                 predictions: dict[int, np.ndarray], selection: dict[int, float], *, seed: int) -> ResidualFit:
    """The :class:`ResidualFit` of residual-probe predictions per layer (every row; fitted on the train rows, e.g. in
    the main probe's sweep) and their selection scores: predictions centred per group, the lexical twin fitted."""
    train = ~np.asarray(is_test, dtype=bool)
    eligible, offsets, n_groups = residual_targets(groups, y, train)
    keys = group_keys_of(groups).to_numpy()
    fit = ResidualFit(eligible, np.where(eligible[:, None], offsets, np.nan), groups=n_groups)
    for layer, pred in predictions.items():
        fit.predictions[layer] = _scored(centred(np.asarray(pred, dtype=np.float64), keys, train), eligible)
        fit.selection[layer] = float(selection[layer])
    lexical = lexical_fit(texts, [np.nan_to_num(offsets)], train, seed=seed)
    fit.lexical = _scored(centred(lexical.predictions[0], keys, train), eligible)
    fit.lexical_alpha = lexical.alphas[0]
    return fit


def _scored(pred: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    return np.where(eligible[:, None], pred, np.nan)


def centred(pred: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Predictions minus the mean prediction of their group's ``rows`` (the train rows)."""
    means = pd.DataFrame(pred[rows]).groupby(keys[rows]).mean()
    return pred - means.reindex(keys).to_numpy()
