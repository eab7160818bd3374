"""The numbers a probe run is quoted by (docs/verdicts.md).

At the probe's train-selected layer: R², Spearman, the median error (km or years) and the main probe's within-group r,
each with its n and a 95% bootstrap interval over the test entities; every control at the probe's layer and at its
own train-selected layer, with the PAIRED interval of the probe minus the control (the same resampled entities on both
sides); the within-group residual probe beside its lexical twin; the gap between the true world and the matched
alternative worlds (or why there are none); how much of the target's variance a few entities carry, and the probe per
era and per entity type. The differences a verdict reads are :class:`~worldprobe.probes.inference.Comparison` s,
drawn from :data:`~worldprobe.probes.inference.TEST_RESAMPLES` resamples so that their p-values can survive a
correction for multiplicity. :func:`headline` returns everything as tidy metric rows (with ``n``, ``ci_low``,
``ci_high``, ``subset``) and as the ``headline`` block of ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worldprobe.config import DEFAULT_MARGINS, DEFAULT_RESAMPLES
from worldprobe.probes import bootstrap as bs
from worldprobe.probes.altworld import world_gap
from worldprobe.probes.bootstrap import Estimate
from worldprobe.probes.controls import FLAT, AltWorldFit, ControlFit, group_means
from worldprobe.probes.inference import TEST_RESAMPLES, Comparison, compare
from worldprobe.probes.metrics import haversine_km
from worldprobe.probes.residual import MIN_TEST_ROWS, ResidualFit

ALL = "all"
"""The ``subset`` of rows over every test entity; per entity type it is ``entity_type=<type>``."""
MIN_SUBSET_ROWS = 20
"""Entity types with fewer test rows get no breakdown (their R² would be noise); they are counted in the summary."""
CONTROL_ORDER = ("shuffled", "random_init", "embedding", "lexical", "group_oracle")
"""Controls the probe is compared with (within_group and alt_world are read off the probe itself)."""
LABEL_CONTROLS = ("shuffled", "lexical", "random_init")
"""Controls whose comparison with the probe feeds the verdict's label (and so the Holm family); the others are
printed as numbers, without a word that claims a side."""
CONCENTRATION_SHARE = 0.1
"""The share of test entities whose part of the target's variance is reported (the most extreme ones)."""
CONCENTRATION_WARNING = 0.5
"""A warning is printed when that share of entities carries more than this share of the variance."""


@dataclass
class RunData:
    """What the headline needs of a finished layer sweep and its controls; arrays cover every row of the run."""

    kind: str  # place | time | numeric
    target_names: list[str]
    y: np.ndarray  # (n, k)
    is_test: np.ndarray
    groups: np.ndarray  # the dataset's oracle group per row
    entity_type: np.ndarray
    probe: dict[int, np.ndarray]  # layer -> (n, k) predictions
    selected_layer: int
    fits: list[ControlFit] = field(default_factory=list)
    alt_world: AltWorldFit | None = None
    seed: int = 0
    resamples: int = DEFAULT_RESAMPLES
    residual: ResidualFit | None = None
    margins: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MARGINS))
    eras: np.ndarray | None = None  # an era label per row (time datasets with era bounds), else None
    test_resamples: int = TEST_RESAMPLES


@dataclass
class Headline:
    rows: list[dict[str, Any]]
    summary: dict[str, Any]


class _Sample:
    """One set of test rows and its resample weights, shared by every statistic so that differences are paired.

    Statistics are memoised per (kind, truth, predictions) and per weight matrix, and the truth's sums of squares
    and ranks are computed once per truth: a run asks for the probe's R² in every paired difference, and most
    predictors share the same truth.
    """

    def __init__(self, rows: np.ndarray, data: RunData, seed: int, resamples: int | None = None) -> None:
        self.rows, self.data = rows, data
        self.w = bs.resample_counts(len(rows), resamples or data.resamples, seed).astype(np.float64)
        self.ones = bs.ones_like(self.w)
        self._stats: dict[tuple, tuple[Any, ...]] = {}
        self._truth: dict[tuple, tuple[Any, ...]] = {}

    @property
    def n(self) -> int:
        return len(self.rows)

    def both(self, statistic: Callable[[np.ndarray], np.ndarray]) -> tuple[float, np.ndarray]:
        """(value on the sample, values on the resamples) of ``statistic(weights) -> (B,)``."""
        return float(statistic(self.ones)[0]), statistic(self.w)

    def _memo(self, key: tuple, keep: tuple, make: Callable[[], Callable[[np.ndarray], np.ndarray]]):
        """The statistic for ``key``, made once; its value for each of the two weight matrices computed once.
        ``keep`` holds the keyed arrays, so that their ids stay theirs while the sample lives."""
        if key not in self._stats:
            fn, values = make(), {}

            def memoised(w: np.ndarray) -> np.ndarray:
                slot = "w" if w is self.w else "ones" if w is self.ones else None
                if slot is None:
                    return fn(w)
                if slot not in values:
                    values[slot] = fn(w)
                return values[slot]

            self._stats[key] = (memoised, keep)
        return self._stats[key][0]

    def _ss_tot(self, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        """(B, k) total sum of squares of the truth ``y`` (rows of this sample, centred) under ``w``."""
        slot = ("ss_tot", id(y), "w" if w is self.w else "ones" if w is self.ones else id(w))
        if slot not in self._truth:
            yc = y[self.rows] - y[self.rows].mean(axis=0)
            total = w.sum(axis=1, keepdims=True)
            mean = (w @ yc) / total
            self._truth[slot] = (w @ (yc * yc) - total * mean * mean, y)
        return self._truth[slot][0]

    def r2(self, y: np.ndarray, pred: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Mean over targets of R² (sklearn's definition) per resample."""

        def make():
            residual = (y[self.rows] - pred[self.rows]) ** 2

            def statistic(w: np.ndarray) -> np.ndarray:
                ss_tot = self._ss_tot(y, w)
                with np.errstate(divide="ignore", invalid="ignore"):
                    r2 = np.where(ss_tot > 0, 1.0 - (w @ residual) / ss_tot, np.nan)
                return r2.mean(axis=1)

            return statistic

        return self._memo(("r2", id(y), id(pred)), (y, pred), make)

    def r2_of(self, y: np.ndarray, pred: np.ndarray, column: int) -> Callable[[np.ndarray], np.ndarray]:
        def make():
            yy, pp = y[self.rows, column], pred[self.rows, column]
            return lambda w: bs.weighted_r2(yy, pp, w)[:, 0]

        return self._memo(("r2_of", id(y), id(pred), column), (y, pred), make)

    def spearman(self, y: np.ndarray, pred: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Mean over targets of Spearman ρ per resample (ranks of the truth computed once per truth)."""

        def make():
            pp = pred[self.rows]

            def statistic(w: np.ndarray) -> np.ndarray:
                pairs = [(self._ranks(y, j, w), bs.weighted_ranks(pp[:, j], w)) for j in range(pp.shape[1])]
                return np.mean([bs.rowwise_pearson(a, b, w) for a, b in pairs], axis=0)

            return statistic

        return self._memo(("spearman", id(y), id(pred)), (y, pred), make)

    def _ranks(self, y: np.ndarray, column: int, w: np.ndarray) -> np.ndarray:
        slot = ("ranks", id(y), column, "w" if w is self.w else "ones" if w is self.ones else id(w))
        if slot not in self._truth:
            self._truth[slot] = (bs.weighted_ranks(y[self.rows, column], w), y)
        return self._truth[slot][0]

    def median_error(self, y: np.ndarray, pred: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        def make():
            errors = row_errors(self.data.kind, y[self.rows], pred[self.rows])
            return lambda w: bs.weighted_median(errors, w)

        return self._memo(("median_error", id(y), id(pred)), (y, pred), make)

    def within_group_r(self, y: np.ndarray, pred: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        def make():
            groups, yy, pp = self.data.groups[self.rows], y[self.rows], pred[self.rows]
            return lambda w: _mean_over_targets(bs.weighted_within_group_r(groups, yy, pp, w))

        return self._memo(("within_group_r", id(y), id(pred)), (y, pred), make)


    def pearson(self, y: np.ndarray, pred: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Mean over targets of Pearson r per resample."""

        def make():
            yy, pp = y[self.rows], pred[self.rows]
            return lambda w: _mean_over_targets(bs.weighted_pearson(yy, pp, w))

        return self._memo(("pearson", id(y), id(pred)), (y, pred), make)


def _mean_over_targets(values: np.ndarray) -> np.ndarray:
    """The mean over target columns ignoring NaN (a target without within-group variation), NaN when all are."""
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite.any(axis=1), np.where(finite, values, 0).sum(axis=1) / finite.sum(axis=1), np.nan)


def row_errors(kind: str, y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Error per row: great-circle km for places (columns latitude, longitude), |Δ| for one time or numeric target
    (the mean |Δ| over columns for several)."""
    if kind == "place":
        return haversine_km(y, pred)
    return np.abs(pred - y).mean(axis=1)


def error_unit(kind: str) -> str:
    return {"place": "km", "time": "years"}.get(kind, "target units")


def error_metric(kind: str) -> str:
    """The metric name of the median error: ``median_haversine_km``, ``median_abs_error_years`` or
    ``median_abs_error``."""
    return {"place": "median_haversine_km", "time": "median_abs_error_years"}.get(kind, "median_abs_error")


def row_metric(key: str, kind: str) -> str:
    """The metrics.parquet name of a summary key: ``diff_r2`` -> ``r2_diff`` (probe minus control),
    ``median_error`` -> :func:`error_metric`, ``within_group_r`` -> ``within_group_pearson``."""
    base = key.removeprefix("diff_")
    name = {"median_error": error_metric(kind), "within_group_r": "within_group_pearson"}.get(base, base)
    return f"{name}_diff" if key.startswith("diff_") else name


def _estimate(sample: _Sample, statistic: Callable[[np.ndarray], np.ndarray]) -> Estimate:
    value, samples = sample.both(statistic)
    low, high = bs.percentile_interval(samples)
    return Estimate(value, low, high, sample.n)


def _diff(a: Callable[[np.ndarray], np.ndarray], b: Callable[[np.ndarray], np.ndarray]):
    return lambda w: a(w) - b(w)


def _mean_of(statistics: Sequence[Callable[[np.ndarray], np.ndarray]]):
    return lambda w: np.mean([s(w) for s in statistics], axis=0)


class _Rows:
    """Collects tidy metric rows of estimates (the run's identity columns are added by the caller)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, control: str, layer: int, metric: str, est: Estimate, *, seed: int | None = None,
            target: str = "mean", subset: str = ALL) -> Estimate:  # fmt: skip
        self.rows.append({
            "control": control, "layer": int(layer), "seed": seed, "split": "test", "target": target,
            "metric": metric, "value": est.value, "n": est.n, "ci_low": est.low, "ci_high": est.high,
            "subset": subset,
        })  # fmt: skip
        return est


def headline(data: RunData) -> Headline:
    """Estimates with intervals at the train-selected layers, as metric rows and as the summary's headline block."""
    test = np.flatnonzero(data.is_test)
    sample = _Sample(test, data, data.seed)
    tests = _Sample(test, data, data.seed, data.test_resamples)
    out = _Rows()
    layer = data.selected_layer
    probe = data.probe[layer]
    stats = {
        "r2": sample.r2(data.y, probe), "spearman": sample.spearman(data.y, probe),
        "median_error": sample.median_error(data.y, probe), "within_group_r": sample.within_group_r(data.y, probe),
    }  # fmt: skip
    summary: dict[str, Any] = {
        "n_test": int(len(test)), "n_train": int((~data.is_test).sum()), "selected_layer": int(layer),
        "error_unit": error_unit(data.kind), "resamples": data.resamples, "test_resamples": data.test_resamples,
        "level": bs.LEVEL, "margins": dict(data.margins),
    }  # fmt: skip
    summary["probe"] = {}
    for key, statistic in stats.items():
        est = _estimate(sample, statistic)
        if key == "within_group_r":  # the main probe's within-group r (weak evidence; the residual probe tests it)
            out.add("none", layer, "within_group_pearson", est)
        else:
            out.add("none", layer, row_metric(key, data.kind), est)
        summary["probe"][key] = est.to_dict()
    summary["probe"]["r2_by_target"] = {
        name: out.add("none", layer, "r2", _estimate(sample, sample.r2_of(data.y, probe, j)), target=name).to_dict()
        for j, name in enumerate(data.target_names)
    }
    comparisons: list[Comparison] = []
    summary["baselines"] = _baselines(data, sample)
    summary["controls"] = _controls(data, sample, tests, stats, out, comparisons)
    if data.residual is not None:
        summary["within_group"] = _within_group(data, out, comparisons)
    if data.alt_world is not None:
        summary["alt_world"] = _alt_world(data, tests, out, comparisons)
    summary["scale"] = _scale(data, sample)
    summary["subsets"] = _subsets(data, out)
    if data.eras is not None:
        summary["eras"] = _subsets(data, out, column="era", labels=data.eras)
    summary["comparisons"] = [c.to_dict() for c in comparisons]
    return Headline(out.rows, summary)


def _baselines(data: RunData, sample: _Sample) -> dict[str, Any]:
    """The errors of predicting every entity by the train mean and by its group's train mean (for figure titles)."""
    train = ~data.is_test
    mean = np.broadcast_to(data.y[train].mean(axis=0), data.y.shape)
    oracle = group_means(_series(data.groups), data.y, train)
    return {
        name: {"median_error": _estimate(sample, sample.median_error(data.y, pred)).to_dict(),
               "r2": _estimate(sample, sample.r2(data.y, pred)).to_dict()}
        for name, pred in (("train_mean", mean), ("group_oracle", oracle))
    }  # fmt: skip


def _series(values: np.ndarray):
    import pandas as pd

    return pd.Series(values).astype("string").fillna("<missing>").reset_index(drop=True)


def _controls(data: RunData, sample: _Sample, tests: _Sample, probe: dict, out: _Rows,
              comparisons: list[Comparison]) -> dict[str, Any]:  # fmt: skip
    """Each control at its own train-selected layer (layer-free controls: their only value) and, for layered ones, at
    the probe's layer: R² with its interval and the paired difference probe minus control; a control with several
    seeds (random_init) is the mean over its seeds, the spread of the seeds beside it. The difference at the control's
    own layer is a :class:`Comparison` (from the tests' resamples), which the verdict reads."""
    layer = data.selected_layer
    probe_r2_tests = tests.r2(data.y, data.probe[layer])
    result: dict[str, Any] = {}
    for name in CONTROL_ORDER:
        fits = [f for f in data.fits if f.control == name]
        if not fits:
            continue
        entry: dict[str, Any] = {"seeds": [f.seed for f in fits if f.seed is not None]}
        if fits[0].alpha is not None:
            entry["alpha"], entry["alpha_on_edge"] = fits[0].alpha, fits[0].alpha_on_edge
        places = {"own": [f.selected_layer if f.layered else FLAT for f in fits]}
        if fits[0].layered:
            places["at_probe_layer"] = [layer] * len(fits)
        for place, layers in places.items():
            r2 = [sample.r2(f.y, f.at(at)) for f, at in zip(fits, layers, strict=True)]
            part = {"layers": [None if at == FLAT else int(at) for at in layers]}
            part["r2"] = _estimate(sample, _mean_of(r2))
            if place == "own":
                control_r2 = _mean_of([tests.r2(f.y, f.at(at)) for f, at in zip(fits, layers, strict=True)])
                comparison = _compare(tests, name, "r2_diff", _diff(probe_r2_tests, control_r2),
                                      margin=data.margins["r2"], in_family=name in LABEL_CONTROLS)  # fmt: skip
                comparisons.append(comparison)
                part["diff_r2"] = comparison.estimate
                spear = [sample.spearman(f.y, f.at(at)) for f, at in zip(fits, layers, strict=True)]
                err = [sample.median_error(f.y, f.at(at)) for f, at in zip(fits, layers, strict=True)]
                part["spearman"] = _estimate(sample, _mean_of(spear))
                part["diff_spearman"] = _estimate(sample, _diff(probe["spearman"], _mean_of(spear)))
                part["median_error"] = _estimate(sample, _mean_of(err))
                part["diff_median_error"] = _estimate(sample, _diff(probe["median_error"], _mean_of(err)))
                part["r2_by_seed"] = {
                    str(f.seed): _estimate(sample, stat).value for f, stat in zip(fits, r2, strict=True)
                } if len(fits) > 1 else {}  # fmt: skip
            else:
                part["diff_r2"] = _estimate(sample, _diff(probe["r2"], _mean_of(r2)))
            for f, at in zip(fits, layers, strict=True):
                row_layer = layer if at == FLAT else at
                if len(fits) == 1:
                    for key in ("r2", "diff_r2", "spearman", "diff_spearman", "median_error", "diff_median_error"):
                        if key in part:
                            out.add(name, row_layer, row_metric(key, data.kind), part[key], seed=f.seed)
                else:  # one row per seed; the mean over the seeds lives in the summary
                    r2_seed = sample.r2(f.y, f.at(at))
                    out.add(name, row_layer, "r2", _estimate(sample, r2_seed), seed=f.seed)
                    out.add(name, row_layer, "r2_diff", _estimate(sample, _diff(probe["r2"], r2_seed)), seed=f.seed)
            entry[place] = {k: (v.to_dict() if isinstance(v, Estimate) else v) for k, v in part.items()}
        result[name] = entry
    return result


def _compare(sample: _Sample, key: str, statistic: str, difference: Callable[[np.ndarray], np.ndarray], *,
             margin: float, in_family: bool = True) -> Comparison:  # fmt: skip
    """A :class:`Comparison` of a paired difference on ``sample``'s resamples."""
    value, samples = sample.both(difference)
    return compare(key, statistic, value, samples, sample.n, margin=margin, in_family=in_family)


def _within_group(data: RunData, out: _Rows, comparisons: list[Comparison]) -> dict[str, Any]:
    """The residual probe (at its own train-selected layer) and its lexical twin on the eligible test rows: each r with
    its interval, and their paired difference as the ``within_group`` comparison (``worldprobe.probes.residual``)."""
    fit = data.residual
    rows = np.flatnonzero(data.is_test & fit.eligible)
    entry: dict[str, Any] = {"groups": fit.groups, "n": int(len(rows)), "lexical_alpha": fit.lexical_alpha}
    if len(rows) < MIN_TEST_ROWS or not fit.selection or fit.lexical is None:
        entry["skipped"] = (f"{len(rows)} test entities in groups with enough train rows (at least {MIN_TEST_ROWS} "
                            f"needed)")  # fmt: skip
        return entry
    layer = fit.selected_layer
    sample = _Sample(rows, data, data.seed + 7, data.test_resamples)
    model = sample.pearson(fit.residuals, fit.predictions[layer])
    lexical = sample.pearson(fit.residuals, fit.lexical)
    entry["layer"] = int(layer)
    entry["model_r"] = out.add("within_group", layer, "pearson", _estimate(sample, model)).to_dict()
    entry["lexical_r"] = out.add("within_group", layer, "lexical_pearson", _estimate(sample, lexical)).to_dict()
    comparison = _compare(sample, "within_group", "r_diff", _diff(model, lexical), margin=data.margins["r"])
    out.add("within_group", layer, "pearson_diff", comparison.estimate)
    comparisons.append(comparison)
    entry["diff_r"] = comparison.estimate.to_dict()
    return entry


def _alt_world(data: RunData, tests: _Sample, out: _Rows, comparisons: list[Comparison]) -> dict[str, Any]:
    """The gap R²(true world) - mean R²(matched alternative worlds) of the probe at its layer (the ``alt_world``
    comparison, nested bootstrap over test entities and worlds), and for reading the same gap of the lexical features
    and of the random-init twins; or, when no sound world exists, the reason (``worldprobe.probes.altworld``)."""
    alt = data.alt_world
    summary: dict[str, Any] = {"matching": alt.matched.describe()}
    if not alt.matched.applicable:
        summary["not_applicable"] = alt.matched.reason
        return summary
    layer = data.selected_layer
    worlds = [data.y, *alt.worlds]
    seed = data.seed + 11
    rows = tests.rows
    margin = data.margins["r2"]
    gap = world_gap("alt_world", worlds, [[data.probe[layer], *alt.model[layer]]], rows, seed=seed, margin=margin,
                    resamples=data.test_resamples)  # fmt: skip
    comparisons.append(gap)
    summary["gap"] = out.add("alt_world", layer, "r2_gap", gap.estimate).to_dict()
    summary["permutations"] = len(alt.worlds)
    lexical = next((f for f in data.fits if f.control == "lexical"), None)
    if alt.lexical is not None and lexical is not None:
        lexical_gap = world_gap("alt_world_lexical", worlds, [[lexical.at(FLAT), *alt.lexical]], rows, seed=seed,
                                margin=margin, in_family=False, resamples=data.test_resamples)  # fmt: skip
        summary["gap_lexical"] = out.add("alt_world", layer, "r2_gap_lexical", lexical_gap.estimate).to_dict()
    twins = {f.seed: f for f in data.fits if f.control == "random_init"}
    if alt.random_init:
        predictors = [[twins[s].at(lay), *preds] for s, (lay, preds) in sorted(alt.random_init.items())]
        twin_gap = world_gap("alt_world_random_init", worlds, predictors, rows, seed=seed, margin=margin,
                             in_family=False, resamples=data.test_resamples)  # fmt: skip
        summary["gap_random_init"] = out.add("alt_world", layer, "r2_gap_random_init", twin_gap.estimate).to_dict()
    return summary


def _scale(data: RunData, sample: _Sample) -> dict[str, Any]:
    """How much of the test target's variance the most extreme :data:`CONCENTRATION_SHARE` of test entities carry
    (R² weighs entities by their squared distance from the mean; Spearman does not), and a warning when it is more
    than :data:`CONCENTRATION_WARNING`."""
    y = data.y[sample.rows]
    deviation = ((y - y.mean(axis=0)) ** 2 / np.maximum(y.var(axis=0), 1e-300)).sum(axis=1)
    top = max(1, int(round(CONCENTRATION_SHARE * len(y))))
    share = float(np.sort(deviation)[::-1][:top].sum() / max(deviation.sum(), 1e-300))
    entry = {"top_rows": top, "n": int(len(y)), "variance_share": share}
    if share > CONCENTRATION_WARNING:
        entry["warning"] = (f"the {top} most extreme of {len(y)} test entities carry {share:.0%} of the target's "
                            f"variance, so R² mostly measures them; Spearman ρ weighs every entity alike")  # fmt: skip
    return entry


def _subsets(data: RunData, out: _Rows, column: str = "entity_type", labels: np.ndarray | None = None
             ) -> dict[str, Any]:  # fmt: skip
    """Per entity type, or per era (``labels``; with at least MIN_SUBSET_ROWS test rows, when there are two such
    subsets): the probe's R², Spearman and median error, each control's R² and Spearman at its own layer and the paired
    differences. Smaller subsets are counted in ``too_few_rows``."""
    labels = (data.entity_type if labels is None else labels).astype(str)
    types = labels[data.is_test]
    counts = {str(t): int((types == t).sum()) for t in np.unique(types)}
    large = [t for t, c in counts.items() if c >= MIN_SUBSET_ROWS]
    result: dict[str, Any] = {"column": column, "too_few_rows": {t: c for t, c in counts.items()
                                                                  if c < MIN_SUBSET_ROWS}}  # fmt: skip
    result["types"] = {}
    if len(large) < 2:
        return result
    probe = data.probe[data.selected_layer]
    test = np.flatnonzero(data.is_test)
    offset = 1 if column == "entity_type" else 101
    for i, name in enumerate(large):
        subset = f"{column}={name}"
        rows = test[types == name]
        sample = _Sample(rows, data, data.seed + offset + i)
        probe_r2, probe_rho = sample.r2(data.y, probe), sample.spearman(data.y, probe)
        errors = sample.median_error(data.y, probe)
        entry = {
            "n": len(rows),
            "r2": out.add("none", data.selected_layer, "r2", _estimate(sample, probe_r2), subset=subset).to_dict(),
            "spearman": out.add("none", data.selected_layer, "spearman", _estimate(sample, probe_rho),
                                subset=subset).to_dict(),
            "median_error": out.add("none", data.selected_layer, error_metric(data.kind), _estimate(sample, errors),
                                    subset=subset).to_dict(),
            "controls": {},
        }  # fmt: skip
        for control in CONTROL_ORDER:
            fits = [f for f in data.fits if f.control == control]
            if not fits:
                continue
            per_fit, per_rho = [], []
            for f in fits:
                at = f.selected_layer if f.layered else FLAT
                r2, rho = sample.r2(f.y, f.at(at)), sample.spearman(f.y, f.at(at))
                row_layer = data.selected_layer if at == FLAT else at
                out.add(control, row_layer, "r2", _estimate(sample, r2), seed=f.seed, subset=subset)
                out.add(control, row_layer, "r2_diff", _estimate(sample, _diff(probe_r2, r2)), seed=f.seed,
                        subset=subset)  # fmt: skip
                per_fit.append(r2)
                per_rho.append(rho)
            entry["controls"][control] = {
                "r2": _estimate(sample, _mean_of(per_fit)).to_dict(),
                "diff_r2": _estimate(sample, _diff(probe_r2, _mean_of(per_fit))).to_dict(),
                "spearman": _estimate(sample, _mean_of(per_rho)).to_dict(),
                "diff_spearman": _estimate(sample, _diff(probe_rho, _mean_of(per_rho))).to_dict(),
            }
        result["types"][name] = entry
    return result
