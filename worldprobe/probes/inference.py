"""The tests behind every word a verdict prints (docs/verdicts.md; docs/verdicts.md states the rules).

A *comparison* is a paired difference (the probe minus a control on the same resampled test entities, or a model's
residual probe minus its lexical twin) with its bootstrap distribution. Two hypotheses are tested on it:

- **difference**: "the difference is 0", two-sided. The p-value of the percentile bootstrap: twice the smaller share
  of resamples on either side of 0, counted as ``(count + 1) / (B + 1)`` so that it is never 0. It is below .05
  exactly when the 95% percentile interval lies on one side of 0 (up to the interval's interpolation).
- **equivalence** (TOST, two one-sided tests): "the difference lies outside ±margin". Its p-value is the larger of the
  shares of resamples at or below ``-margin`` and at or above ``+margin``; below .05 when the 90% interval lies inside
  the margin's band.

A family of such hypotheses (every test a label is drawn from, declared by :func:`family`) is corrected by Holm's
step-down procedure with Shaffer's refinement (a comparison's two nulls cannot both be true), which controls the
family-wise error rate with no assumption about how the tests depend on each other. Each comparison then has one
:data:`OUTCOMES` value: ``above`` (difference significant, positive), ``below`` (significant, negative),
``equivalent`` (within ±margin; a difference can be both above and equivalent: then it is ``above``, and
:attr:`Decision.within_margin` says it was small), or ``inconclusive``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worldprobe.probes.bootstrap import Estimate

ALPHA = 0.05
"""The family-wise error rate of the verdicts (and the level of each unadjusted test)."""

TEST_RESAMPLES = 10_000
"""Resamples behind every comparison's p-values and interval. Holm's smallest threshold is ``ALPHA / m``; with B
resamples the smallest p-value is ``2 / (B + 1)``, so 10,000 resamples let a clear difference survive in a family of up
to ~250 hypotheses (1,000 would allow none past 25)."""

OUTCOMES = ("above", "below", "equivalent", "inconclusive")
HYPOTHESES = ("difference", "equivalence")


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of a run: its estimate with the 95% interval and n, the equivalence margin, and the
    unadjusted p-values of its two hypotheses (``p["difference"]``, ``p["equivalence"]``)."""

    key: str  # e.g. "shuffled", "lexical", "random_init", "within_group", "alt_world"
    statistic: str  # what is compared, e.g. "r2_diff" (probe minus control) or "r_diff"
    estimate: Estimate
    margin: float
    p: Mapping[str, float]
    resamples: int
    in_family: bool = True  # feeds a label (counted in the Holm family)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "statistic": self.statistic, "estimate": self.estimate.to_dict(), "margin": self.margin,
            "p": dict(self.p), "resamples": self.resamples, "in_family": self.in_family,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> Comparison:
        return cls(entry["key"], entry["statistic"], Estimate(**entry["estimate"]), float(entry["margin"]),
                   {k: float(v) for k, v in entry["p"].items()}, int(entry["resamples"]),
                   bool(entry.get("in_family", True)))  # fmt: skip


def compare(key: str, statistic: str, value: float, samples: np.ndarray, n: int, *, margin: float,
            in_family: bool = True) -> Comparison:  # fmt: skip
    """A :class:`Comparison` from the difference on the sample (``value``) and its bootstrap resamples."""
    from worldprobe.probes.bootstrap import percentile_interval

    samples = np.asarray(samples, dtype=np.float64).ravel()
    low, high = percentile_interval(samples)
    p = {"difference": p_difference(samples), "equivalence": p_equivalence(samples, margin)}
    return Comparison(key, statistic, Estimate(float(value), low, high, int(n)), float(margin), p,
                      int(np.isfinite(samples).sum()), in_family)  # fmt: skip


def p_difference(samples: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value of "the difference is 0" (NaN without finite resamples)."""
    finite = _finite(samples)
    if finite.size == 0:
        return float("nan")
    b = finite.size
    low_tail = (np.count_nonzero(finite <= 0) + 1) / (b + 1)
    high_tail = (np.count_nonzero(finite >= 0) + 1) / (b + 1)
    return float(min(1.0, 2 * min(low_tail, high_tail)))


def p_equivalence(samples: np.ndarray, margin: float) -> float:
    """TOST p-value of "the difference lies outside ±margin": the larger one-sided bootstrap tail beyond a margin."""
    finite = _finite(samples)
    if finite.size == 0 or not margin > 0:
        return float("nan")
    b = finite.size
    below = (np.count_nonzero(finite <= -margin) + 1) / (b + 1)
    above = (np.count_nonzero(finite >= margin) + 1) / (b + 1)
    return float(min(1.0, max(below, above)))


def _finite(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float64).ravel()
    return samples[np.isfinite(samples)]


def holm(p: Sequence[float], comparisons: Sequence[object] | None = None) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count in the family's size).

    With ``comparisons`` (which comparison each p-value belongs to), Shaffer's refinement for hypotheses of which at
    most one per comparison can be true (a difference of 0 and a difference outside ±margin exclude each other): at
    step i, with i - 1 hypotheses rejected, at most min(K, m - i + 1) can still be true (K comparisons, m hypotheses),
    so that is the multiplier instead of Holm's m - i + 1. It controls the family-wise error as Holm's does, under any
    dependence (Shaffer 1986, JASA 81:826)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    multipliers = m - np.arange(m)
    if comparisons is not None:
        k = len({comparisons[i] for i in finite})
        multipliers = np.minimum(k, multipliers)
    out[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * multipliers))
    return out


@dataclass(frozen=True)
class Decision:
    """The outcome of one comparison under a correction: ``above``/``below``/``equivalent``/``inconclusive``; the
    p-values it was decided on; ``within_margin`` when the equivalence test also passed."""

    outcome: str
    p_difference: float
    p_equivalence: float
    within_margin: bool
    adjusted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "p_difference": self.p_difference, "p_equivalence": self.p_equivalence,
                "within_margin": self.within_margin, "adjusted": self.adjusted}  # fmt: skip


def decide(comparison: Comparison, p_difference: float, p_equivalence: float, *, adjusted: bool,
           alpha: float = ALPHA) -> Decision:  # fmt: skip
    """The outcome of a comparison from its (adjusted or unadjusted) p-values."""
    value = comparison.estimate.value
    different = np.isfinite(p_difference) and p_difference < alpha
    equivalent = bool(np.isfinite(p_equivalence) and p_equivalence < alpha)
    if different and value > 0:
        outcome = "above"
    elif different and value < 0:
        outcome = "below"
    elif equivalent:
        outcome = "equivalent"
    else:
        outcome = "inconclusive"
    return Decision(outcome, float(p_difference), float(p_equivalence), equivalent, adjusted)


@dataclass(frozen=True)
class FamilyResult:
    """Every comparison of a family decided twice: unadjusted and under Holm. Keys are ``(run, comparison key)``."""

    size: int
    unadjusted: dict[tuple[str, str], Decision]
    holm: dict[tuple[str, str], Decision]
    comparisons: int = 0

    def describe(self, scope: str = "this table") -> str:
        noun = "comparison" if self.comparisons == 1 else "comparisons"
        return (f"Holm's correction with Shaffer's refinement over the {self.size} hypotheses ({self.comparisons} "
                f"{noun}) of {scope}, family-wise error {ALPHA:.0%}")  # fmt: skip


def family(runs: Mapping[str, Iterable[Comparison]], alpha: float = ALPHA) -> FamilyResult:
    """Decide every comparison of ``runs`` (run name -> its comparisons): the family is both hypotheses of every
    comparison marked ``in_family``, corrected together by Holm; comparisons outside it are decided unadjusted in
    both views."""
    keys: list[tuple[str, str]] = []
    items: dict[tuple[str, str], Comparison] = {}
    p_all: list[float] = []
    for run, comparisons in runs.items():
        for comparison in comparisons:
            key = (run, comparison.key)
            items[key] = comparison
            if comparison.in_family:
                keys.append(key)
                p_all += [comparison.p["difference"], comparison.p["equivalence"]]
    adjusted = holm(p_all, [keys[i // 2] for i in range(len(p_all))])
    finite = np.isfinite(np.asarray(p_all, dtype=np.float64))
    size = int(finite.sum())
    unadj, corrected = {}, {}
    for key, comparison in items.items():
        unadj[key] = decide(comparison, comparison.p["difference"], comparison.p["equivalence"], adjusted=False,
                            alpha=alpha)  # fmt: skip
        corrected[key] = unadj[key]
    for i, key in enumerate(keys):
        corrected[key] = decide(items[key], adjusted[2 * i], adjusted[2 * i + 1], adjusted=True, alpha=alpha)
    return FamilyResult(size, unadj, corrected, len({keys[i // 2] for i in np.flatnonzero(finite)}))
