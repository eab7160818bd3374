"""What the spelling of the names alone gives away: TF-IDF character n-grams of the entity text
(docs/explanation/probes.md).

One vectoriser (char 1-4-grams within word boundaries, fitted on the fit rows) serves three controls: the lexical
control (a ridge from the n-grams to the targets), the lexical twin of the within-group residual probe, and the
alternative worlds' learnability from the input (``worldprobe.probes.altworld``, on a dense SVD of the n-grams).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge

from worldprobe.probes.metrics import r2_columns

LEXICAL_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))
"""Ridge penalties the lexical control tries (1e-2 .. 1e5, two per decade), chosen on a seeded 10% validation part of
the fit rows. The grid was 0.1..100 until the art dataset's choice sat on its top edge (its lexical R² then fell
below 0); a choice on an edge is recorded (``alpha_on_edge``) and said in the run's summary."""

VALIDATION_SHARE = 0.1


@dataclass(frozen=True)
class LexicalFit:
    """Predictions of every row for each target set, and the penalty each set chose (and whether it is on an edge of
    :data:`LEXICAL_ALPHAS`)."""

    predictions: list[np.ndarray]
    alphas: list[float]

    @property
    def on_edge(self) -> list[bool]:
        return [a in (LEXICAL_ALPHAS[0], LEXICAL_ALPHAS[-1]) for a in self.alphas]


def vectorizer() -> TfidfVectorizer:
    """The TF-IDF character n-gram features of every lexical control."""
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=2, sublinear_tf=True, dtype=np.float32)


def lexical_fit(texts: pd.Series, ys: Sequence[np.ndarray], fit_rows: np.ndarray, *, seed: int) -> LexicalFit:
    """A ridge on TF-IDF char 1-4-grams per target set, fitted on ``fit_rows`` (a boolean mask), predicting every row.

    Targets are z-scored on the fit rows; each set picks its penalty on the same seeded validation part of the fit
    rows (best mean R² over its columns), then is refitted on every fit row.
    """
    fit = np.flatnonzero(np.asarray(fit_rows, dtype=bool))
    words = vectorizer()
    words.fit(texts.iloc[fit].astype(str))
    x = words.transform(texts.astype(str))
    ys = [np.asarray(y, dtype=np.float64).reshape(len(texts), -1) for y in ys]
    stacked = np.hstack(ys)
    sets = np.repeat(np.arange(len(ys)), [y.shape[1] for y in ys])
    mean, std = stacked[fit].mean(axis=0), stacked[fit].std(axis=0) + 1e-12
    z = (stacked - mean) / std
    valid = np.random.default_rng(seed).random(len(fit)) < VALIDATION_SHARE
    train_rows, valid_rows = fit[~valid], fit[valid]
    scores = np.empty((len(LEXICAL_ALPHAS), len(ys)))
    for i, alpha in enumerate(LEXICAL_ALPHAS):
        guess = Ridge(alpha=alpha).fit(x[train_rows], z[train_rows]).predict(x[valid_rows])
        per_column = r2_columns(z[valid_rows], guess.reshape(len(valid_rows), -1))
        scores[i] = [per_column[sets == s].mean() for s in range(len(ys))]
    best = np.nanargmax(np.where(np.isfinite(scores), scores, -np.inf), axis=0)
    out = np.empty_like(z)
    for alpha_index in np.unique(best):
        cols = np.flatnonzero(np.isin(sets, np.flatnonzero(best == alpha_index)))
        fitted = Ridge(alpha=LEXICAL_ALPHAS[alpha_index]).fit(x[fit], z[fit][:, cols])
        out[:, cols] = fitted.predict(x).reshape(len(texts), -1)
    pred = out * std + mean
    return LexicalFit([pred[:, sets == s] for s in range(len(ys))], [LEXICAL_ALPHAS[i] for i in best])


def lexical_predictions(texts: pd.Series, y: np.ndarray, is_test: np.ndarray, *, seed: int) -> np.ndarray:
    """Predictions for every row of the lexical control fitted on the train rows (``~is_test``)."""
    return lexical_fit(texts, [y], ~np.asarray(is_test, dtype=bool), seed=seed).predictions[0]


KERNEL_ROWS = 5000
"""At most this many fit rows (a seeded sample) enter the kernel fits below, whose cost grows as rows³."""


class CrossFit:
    """Cross-fitted predictions of the lexical ridge (penalty ``alpha``, intercept unpenalised) on ``fit_rows`` (at
    most :data:`KERNEL_ROWS` of them, a seeded sample): each row predicted by the fit of the folds it is not in.

    Exact kernel ridge on the n-grams: the folds' eigendecompositions are made once, and :meth:`predict` then serves
    any number of target sets (the alternative worlds try hundreds)."""

    def __init__(self, texts: pd.Series, fit_rows: np.ndarray, *, alpha: float, folds: int = 5, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.rows = _at_most(np.flatnonzero(np.asarray(fit_rows, dtype=bool)), rng)
        kernel = _kernel(texts, self.rows, self.rows)
        fold = rng.permutation(len(self.rows)) % folds
        self._folds = []
        for f in range(folds):
            t, v = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
            self._folds.append((t, v, _KernelRidge(kernel[np.ix_(t, t)], kernel[np.ix_(v, t)], alpha)))

    def predict(self, ys: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per target set (every row's targets), the cross-fitted predictions of :attr:`rows`."""
        stacked, widths = _stack([np.asarray(y, dtype=np.float64).reshape(len(y), -1)[self.rows] for y in ys])
        out = np.empty_like(stacked)
        for t, v, ridge in self._folds:
            out[v] = ridge.predict(stacked[t])
        return [out[:, a:b] for a, b in zip(widths[:-1], widths[1:], strict=True)]


def holdout_predictions(texts: pd.Series, ys: Sequence[np.ndarray], fit_rows: np.ndarray, predict_rows: np.ndarray,
                        *, alpha: float, seed: int = 0) -> list[np.ndarray]:  # fmt: skip
    """Per target set, predictions of every row (NaN outside ``predict_rows``) by the lexical ridge (penalty ``alpha``)
    fitted on ``fit_rows`` (at most :data:`KERNEL_ROWS` of them)."""
    fit = _at_most(np.flatnonzero(np.asarray(fit_rows, dtype=bool)), np.random.default_rng(seed))
    target = np.flatnonzero(np.asarray(predict_rows, dtype=bool))
    kernel = _kernel(texts, fit, np.concatenate([fit, target]))
    stacked, widths = _stack([np.asarray(y, dtype=np.float64).reshape(len(texts), -1) for y in ys])
    guess = _KernelRidge(kernel[:, : len(fit)], kernel[:, len(fit):].T, alpha).predict(stacked[fit])
    out = np.full(stacked.shape, np.nan)
    out[target] = guess
    return [out[:, a:b] for a, b in zip(widths[:-1], widths[1:], strict=True)]


def _at_most(rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(rows, KERNEL_ROWS, replace=False)) if len(rows) > KERNEL_ROWS else rows


def _kernel(texts: pd.Series, fit: np.ndarray, other: np.ndarray) -> np.ndarray:
    """(len(fit), len(other)) inner products of the n-gram vectors (vectoriser fitted on the ``fit`` rows)."""
    words = vectorizer()
    x = words.fit_transform(texts.iloc[fit].astype(str))
    z = x if other is fit else words.transform(texts.iloc[other].astype(str))
    return np.asarray((x @ z.T).todense(), dtype=np.float64)


def _stack(ys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return np.hstack(ys), np.cumsum([0] + [y.shape[1] for y in ys])


class _KernelRidge:
    """Ridge from the kernel among the fit rows and between new and fit rows, the features centred on the fit rows
    (an unpenalised intercept); one eigendecomposition, any number of target columns."""

    def __init__(self, k_fit: np.ndarray, k_new: np.ndarray, alpha: float) -> None:
        row_mean = k_fit.mean(axis=1)
        centred = k_fit - row_mean[:, None] - row_mean[None, :] + row_mean.mean()
        self.centred_new = k_new - k_new.mean(axis=1, keepdims=True) - row_mean[None, :] + row_mean.mean()
        self.values, self.vectors = np.linalg.eigh(centred)
        self.alpha = alpha

    def predict(self, y_fit: np.ndarray) -> np.ndarray:
        mean = y_fit.mean(axis=0)
        shrink = (np.clip(self.values, 0, None) + self.alpha)[:, None]
        coef = self.vectors @ ((self.vectors.T @ (y_fit - mean)) / shrink)
        return mean + self.centred_new @ coef
