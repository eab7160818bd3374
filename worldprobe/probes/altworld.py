"""Alternative worlds matched on what the spelling can learn (Jin & Rinard, ICML 2024; docs/explanation/probes.md).

Jin & Rinard re-interpret the same inputs under other semantics and retrain the probe on the same frozen activations:
a probe that fits the true semantics better than the alternatives reads more than the inputs' surface. Their design
needs alternatives that are *equally learnable from the input* without understanding. Moving whole groups (countries,
states, centuries) to random other groups' places fails that here: neighbouring groups have similar spellings, so the
spelling alone prefers the true world (by ~.2 of R² on world places), and the test variance of the targets changes
several-fold between worlds. This module builds worlds that pass the requirement, or says why none does, from train
rows only. The train rows are split (seeded) into *build* rows (80%) and *check* rows (20%):

1. **Who may swap.** The lexical control's ridge from the names' character n-grams, cross-fitted on the build rows
   (5 folds; its penalty chosen as the lexical control chooses it), places every group at the mean of its rows'
   predictions. A group may swap only with one of the :data:`NEIGHBOURS` groups the spelling places nearest to it.
2. **Candidates.** :data:`CANDIDATES` seeded worlds, each a set of disjoint swaps: every entity of group g keeps its
   offset from g's centroid and takes the centroid of the group it swaps with. Centroids are means of train rows (no
   test row enters a world's targets); groups without a train row stay where they are.
3. **Matching (build rows).** A candidate is kept when the spelling learns it as well as the true world: its
   cross-fitted R² from the n-grams lies within :data:`LEARNABILITY_TOLERANCE` of the true world's and its train target
   variance within a factor :data:`VARIANCE_TOLERANCE`. The first :data:`WORLDS` kept (seeded order) are the worlds.
4. **Check (check rows, not used to choose).** The spelling fitted on the build rows predicts the check rows of the
   true and the matched worlds; the control is *applicable* only if that gap (true minus the mean over worlds, nested
   bootstrap) is equivalent to 0 within the R² margin (TOST at 5%). Matching on a noisy estimate selects lucky worlds,
   and this independent check is what catches it.

The probe's quantity (``worldprobe.probes.headline``) is test R² (each world's MSE over its own test variance) of the
true world minus the mean over the matched worlds, with a nested bootstrap (test entities and worlds both resampled),
so the interval holds the spread between worlds. No gap is subtracted from another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from worldprobe.probes import bootstrap as bs
from worldprobe.probes.bootstrap import fmt
from worldprobe.probes.inference import ALPHA, TEST_RESAMPLES, Comparison, compare
from worldprobe.probes.lexical import CrossFit, holdout_predictions, lexical_fit
from worldprobe.probes.metrics import r2_columns

WORLDS = 5
"""Matched alternative worlds kept (the first in seeded order)."""
MIN_WORLDS = 2
CANDIDATES = 200
"""Seeded candidate worlds tried."""
NEIGHBOURS = 2
"""A group swaps only with one of the groups the spelling places nearest to it."""
LEARNABILITY_TOLERANCE = 0.02
"""Largest |cross-fitted R² from the spelling on build rows, world minus true world| of a matched world."""
VARIANCE_TOLERANCE = 1.25
"""Largest ratio (either way) of a matched world's train target variance to the true world's."""
CHECK_SHARE = 0.2
"""Share of the train rows kept aside to check the matching."""


@dataclass(frozen=True)
class MatchedWorlds:
    """The alternative worlds (targets of every row) and how they were matched and checked, on train rows only."""

    worlds: list[np.ndarray]
    reason: str  # empty when applicable, else why not
    lexical_true: float = float("nan")  # cross-fitted R² of the spelling on the true world (build rows)
    lexical_worlds: list[float] = field(default_factory=list)
    variance_ratio: list[float] = field(default_factory=list)
    moved_share: list[float] = field(default_factory=list)  # share of train rows whose group moved
    candidates: int = 0
    matched: int = 0
    check: Comparison | None = None  # the spelling's gap on the check rows

    @property
    def applicable(self) -> bool:
        return not self.reason

    def describe(self) -> dict[str, Any]:
        return {
            "applicable": self.applicable, "reason": self.reason, "worlds": len(self.worlds),
            "candidates": self.candidates, "matched": self.matched, "lexical_cv_r2_true": self.lexical_true,
            "lexical_cv_r2_worlds": self.lexical_worlds, "variance_ratio": self.variance_ratio,
            "moved_share": self.moved_share, "tolerance": LEARNABILITY_TOLERANCE,
            "variance_tolerance": VARIANCE_TOLERANCE, "neighbours": NEIGHBOURS,
            "check": self.check.to_dict() if self.check is not None else None,
        }  # fmt: skip


def matched_worlds(groups: pd.Series, texts: pd.Series, y: np.ndarray, is_train: np.ndarray, *, seed: int,
                   margin: float) -> MatchedWorlds:  # fmt: skip
    """Alternative worlds as learnable from the spelling as the true one (module docstring), from train rows only;
    ``margin`` is the R² equivalence margin of the check."""
    y = np.asarray(y, dtype=np.float64).reshape(len(groups), -1)
    train = np.asarray(is_train, dtype=bool)
    codes, uniques = pd.factorize(groups.astype(str).to_numpy())
    n_groups = len(uniques)
    movable = np.flatnonzero(np.bincount(codes[train], minlength=n_groups) > 0)
    if len(movable) < 3:
        return MatchedWorlds([], f"only {len(movable)} groups have train rows; swapping needs at least 3")
    rng = np.random.default_rng(seed)
    check = train & (rng.random(len(y)) < CHECK_SHARE)
    build = train & ~check
    centroids = _group_means(y[train], codes[train], n_groups)
    alpha = lexical_fit(texts, [y], build, seed=seed).alphas[0]
    spelling = CrossFit(texts, build, alpha=alpha, seed=seed)
    rows = spelling.rows
    (placed_rows,) = spelling.predict([y])
    placed = _group_means(placed_rows, codes[rows], n_groups)[movable]
    scale = placed.std(axis=0)
    placed = (placed - placed.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    distance = ((placed[:, None, :] - placed[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(distance, np.inf)
    nearest = np.argsort(distance, axis=1)[:, :NEIGHBOURS]
    destinations = [_swaps(movable, nearest, n_groups, rng) for _ in range(CANDIDATES)]
    destinations = [d for d in destinations if (d != np.arange(n_groups)).any()]
    if not destinations:
        return MatchedWorlds([], "no two groups the spelling places alike could swap", candidates=CANDIDATES)
    worlds = [y + (centroids[d[codes]] - centroids[codes]) for d in destinations]
    predicted = spelling.predict([y, *worlds])
    scores = np.array([r2_columns(s[rows], p).mean() for s, p in zip([y, *worlds], predicted, strict=True)])
    true, learn = float(scores[0]), scores[1:]
    variance = np.array([w[train].var(axis=0).sum() for w in worlds]) / max(y[train].var(axis=0).sum(), 1e-300)
    moved = np.array([np.mean(d[codes[train]] != codes[train]) for d in destinations])
    ok = (np.abs(learn - true) <= LEARNABILITY_TOLERANCE) & (np.abs(np.log(variance)) <= np.log(VARIANCE_TOLERANCE))
    kept = np.flatnonzero(ok)[:WORLDS]
    found = dict(lexical_true=true, lexical_worlds=[float(learn[i]) for i in kept],
                 variance_ratio=[float(variance[i]) for i in kept], moved_share=[float(moved[i]) for i in kept],
                 candidates=len(destinations), matched=int(ok.sum()))  # fmt: skip
    if len(kept) < MIN_WORLDS:
        closest = learn[np.argmin(np.abs(learn - true))] - true
        return MatchedWorlds([], (
            f"only {len(kept)} of {len(destinations)} candidate worlds are as learnable from the spelling as the true "
            f"one (cross-fitted R² within ±{fmt(LEARNABILITY_TOLERANCE)} of {fmt(true, 3)} on train rows and variance "
            f"within x{VARIANCE_TOLERANCE:g}; the closest differs by {fmt(closest, 3, signed=True)})"
        ), **found)  # fmt: skip
    chosen = [worlds[i] for i in kept]
    spelled = holdout_predictions(texts, [y, *chosen], build, check, alpha=alpha)
    result = world_gap("alt_world_check", [y, *chosen], [spelled], np.flatnonzero(check), seed=seed, margin=margin,
                       in_family=False)  # fmt: skip
    if not result.p["equivalence"] < ALPHA:
        return MatchedWorlds([], (
            f"in the {len(chosen)} worlds matched on train rows, the spelling still prefers the true world on held-out "
            f"train rows by {result.estimate.text(signed=True)} R² (n = {result.estimate.n}; not shown to be within "
            f"±{fmt(margin)})"
        ), check=result, **found)  # fmt: skip
    return MatchedWorlds(chosen, "", check=result, **found)


def world_gap(
    key: str,
    worlds: list[np.ndarray],
    predictors: list[list[np.ndarray]],
    rows: np.ndarray,
    *,
    seed: int,
    margin: float,
    in_family: bool = True,
    resamples: int = TEST_RESAMPLES,
) -> Comparison:
    """R² of the true world (``worlds[0]``) minus the mean R² over the alternatives, on ``rows``, averaged over the
    ``predictors`` (each a list of predictions, one per world: several random-init seeds), with a nested bootstrap:
    each resample draws the rows and, independently, which alternatives enter the mean."""
    k = len(worlds) - 1
    w = bs.resample_counts(len(rows), resamples, seed).astype(np.float64)
    pick = bs.resample_counts(k, resamples, seed + 1).astype(np.float64)

    def gap(weights: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        out = []
        for predictions in predictors:
            r2 = [bs.weighted_r2(t[rows], p[rows], weights).mean(axis=1)
                  for t, p in zip(worlds, predictions, strict=True)]  # fmt: skip
            alternatives = np.column_stack(r2[1:])
            out.append(r2[0] - (alternatives * chosen).sum(axis=1) / chosen.sum(axis=1))
        return np.mean(out, axis=0)

    value = float(gap(bs.ones_like(w), np.ones((1, k)))[0])
    return compare(key, "r2_gap", value, gap(w, pick), len(rows), margin=margin, in_family=in_family)


def _group_means(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    """(G, k) mean of ``values`` per group code (zeros for a group without rows)."""
    sums = np.zeros((n_groups, values.shape[1]))
    np.add.at(sums, codes, values)
    counts = np.bincount(codes, minlength=n_groups)[:, None]
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def _swaps(movable: np.ndarray, nearest: np.ndarray, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """A destination per group: disjoint swaps, each group with one of its spelling neighbours still free."""
    destination = np.arange(n_groups)
    free = np.ones(len(movable), dtype=bool)
    for i in rng.permutation(len(movable)):
        if not free[i]:
            continue
        options = [j for j in nearest[i] if free[j]]
        if not options:
            continue
        j = int(rng.choice(options))
        free[i] = free[j] = False
        a, b = movable[i], movable[j]
        destination[a], destination[b] = b, a
    return destination
