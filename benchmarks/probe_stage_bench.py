"""The whole ridge probe stage against scikit-learn pipelines doing the same fits, interleaved, in one run.

    python benchmarks/probe_stage_bench.py                            # the quick study's size, 2,000 x 576, 3 layers
    python benchmarks/probe_stage_bench.py paper -w /work/bws -d world_place -m smollm2-135m
    python benchmarks/probe_stage_bench.py synthetic --n 39585 --d 576 --layers 2 --sklearn-sample 2
    python benchmarks/probe_stage_bench.py synthetic --n 40000 --d 4096 --layers 1 --sklearn-sample 1 --repeats 1

The stage's fits, on both sides: at every layer the probe, the shuffled-target control and the alternative worlds
(``controls.control_targets``); the random-init control (each twin at every layer, then the alternative worlds at the
twin's train-selected layer); and held-out blocks of two columns at the probe's train-selected layer
(``holdouts.holdout_masks``: the 20 largest blocks, each fitted on every row outside it). Ours is what the stage
runs (``RidgeProbe.fit_many``: one decomposition per layer for all its target sets; ``iter_without_blocks``: the
pool's Gram matrix minus each block's rows). scikit-learn's, two ways: ``StandardScaler`` + ``RidgeCV(gcv_mode=
"svd")`` per fit, in float64, targets z-scored on the fit rows as ours (the same alpha grid and selection rule, so the
alphas must be identical and the predictions equal to rounding); and *stacked*, its best pipeline for the same work:
one ``RidgeCV(alpha_per_target=True)`` per layer on every target set side by side (one decomposition, as ours; each
column then takes its own alpha where ours takes one per target set: those sets are counted, not compared). Each side
runs ``--repeats`` times (default 3), interleaved in a rotating order; min / median / max are printed and the ratios
are of the medians.

``paper`` reads a workspace's cache and its random-init twins (seeds 0, 1, 2) and also times ``run_probe`` end to end
(every control, hold-outs by country and entity type, the bootstrap and the files; a fresh results folder).
``--sklearn-sample K`` fits at most K of each kind with scikit-learn and scales its time by the count of that kind
(each kind's fits have the same shape); the differences are over the fits actually made. Both sides get the same
threads (``--threads``, default 2: the machine's cores). Wall and CPU seconds are printed; ``speedup:`` comes last.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from worldprobe.config import RANDOM_INIT_SEEDS
from worldprobe.probes.altworld import WORLDS
from worldprobe.probes.controls import group_keys, shuffled_targets
from worldprobe.probes.experiments import resolve_targets
from worldprobe.probes.holdouts import holdout_masks
from worldprobe.probes.options import ProbeOptions
from worldprobe.probes.ridge import DEFAULT_ALPHAS, RidgeProbe
from worldprobe.probes.selection import select_layer

HOLDOUT_COLUMNS = ("country", "entity_type")


@dataclass
class Fit:
    """One fit's penalty, its train-only score (1 - LOO MSE on z-scored targets) and its predictions of every row."""

    alpha: float
    score: float
    pred: np.ndarray


@dataclass
class Side:
    """A backend's fits by key, its time, and (scikit-learn) the fits sampled per kind."""

    name: str
    fits: dict[tuple, Fit] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)  # fits asked for, per kind
    made: Counter = field(default_factory=Counter)  # fits made, per kind
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # wall/cpu per kind


class Ours:
    """The stage's own calls."""

    name = "worldprobe"

    def fit_sets(self, x, train: np.ndarray, ys: Sequence[np.ndarray], budget) -> list[Fit | None]:
        fitted = RidgeProbe(alphas=DEFAULT_ALPHAS).fit_many(x[train], [y[train] for y in ys])
        return [Fit(f.alpha_, 1.0 - float(np.min(f.loo_mse_)), f.predict(x)) for f in fitted]

    def fit_blocks(self, x, y: np.ndarray, masks: Sequence[np.ndarray], budget) -> list[Fit | None]:
        fitted = RidgeProbe(alphas=DEFAULT_ALPHAS).iter_without_blocks(x, y, masks)
        return [Fit(f.alpha_, 1.0 - float(np.min(f.loo_mse_)), f.predict(x)) for f in fitted]


class SklearnPipeline:
    """StandardScaler + RidgeCV(gcv_mode="svd") per fit, float64."""

    name = "scikit-learn"

    def fit_sets(self, x, train: np.ndarray, ys: Sequence[np.ndarray], budget) -> list[Fit | None]:
        xf = np.asarray(x, dtype=np.float64)
        return [_sklearn_fit(xf, train, y) if budget() else None for y in ys]

    def fit_blocks(self, x, y: np.ndarray, masks: Sequence[np.ndarray], budget) -> list[Fit | None]:
        xf = np.asarray(x, dtype=np.float64)
        return [_sklearn_fit(xf, np.flatnonzero(~mask), y) if budget() else None for mask in masks]


class SklearnStacked:
    """The best scikit-learn pipeline for the same work: at each layer ONE StandardScaler + RidgeCV(gcv_mode="svd",
    alpha_per_target=True) on every target set stacked column-wise (one decomposition, as ours), float64. Each target
    column then gets its own alpha where ours takes one per target set (the mean over its columns): where they differ
    the fits differ, and ``compare`` counts them. Hold-out blocks have other rows per fit, so they are fitted one by
    one as in the per-fit pipeline."""

    name = "scikit-learn stacked"

    def fit_sets(self, x, train: np.ndarray, ys: Sequence[np.ndarray], budget) -> list[Fit | None]:
        if not budget():
            return [None] * len(ys)
        xf = np.asarray(x, dtype=np.float64)
        columns = [y.reshape(len(y), -1) for y in ys]
        stacked = np.concatenate(columns, axis=1)
        scaler = StandardScaler().fit(xf[train])
        xs = scaler.transform(xf)
        mean, std = stacked[train].mean(axis=0), stacked[train].std(axis=0)
        model = RidgeCV(alphas=DEFAULT_ALPHAS, gcv_mode="svd", alpha_per_target=True).fit(
            xs[train], (stacked[train] - mean) / std)  # fmt: skip
        pred = model.predict(xs) * std + mean
        alphas, scores = np.atleast_1d(model.alpha_), np.atleast_1d(model.best_score_)
        out, start = [], 0
        for y, c in zip(ys, columns, strict=True):
            part = slice(start, start + c.shape[1])
            chosen = {float(a) for a in alphas[part]}
            alpha = chosen.pop() if len(chosen) == 1 else float("nan")  # NaN: its columns took different alphas
            out.append(Fit(alpha, 1.0 + float(np.mean(scores[part])), pred[:, part].reshape(y.shape)))
            start += c.shape[1]
        return out

    def fit_blocks(self, x, y: np.ndarray, masks: Sequence[np.ndarray], budget) -> list[Fit | None]:
        return SklearnPipeline().fit_blocks(x, y, masks, budget)


def _sklearn_fit(xf: np.ndarray, rows: np.ndarray, y: np.ndarray) -> Fit:
    scaler = StandardScaler().fit(xf[rows])
    xs = scaler.transform(xf)
    y2 = y.reshape(len(y), -1)
    mean, std = y2[rows].mean(axis=0), y2[rows].std(axis=0)
    model = RidgeCV(alphas=DEFAULT_ALPHAS, gcv_mode="svd").fit(xs[rows], (y2[rows] - mean) / std)
    pred = model.predict(xs).reshape(len(y), -1) * std + mean
    return Fit(float(model.alpha_), 1.0 + float(model.best_score_), pred.reshape(y.shape))


@dataclass
class Stage:
    """What the probe stage fits: targets, the split, the control target sets, layers, twins and hold-out groups."""

    layer_of: Callable[[int], np.ndarray]
    layers: list[int]
    twins: dict[int, Callable[[int], np.ndarray]]  # twin seed -> its layers
    y: np.ndarray
    train: np.ndarray  # row indices
    extra: list[np.ndarray]  # shuffled targets and alternative worlds
    worlds: list[np.ndarray]
    groups: dict[str, pd.Series]


def run_stage(backend, stage: Stage, side: Side, sample: int | None, selected: dict | None = None) -> dict:
    """Every fit of the stage with ``backend``; the layers it selects (or ``selected``, given, for a sampled run)."""
    out: dict = {}

    def timed(kind: str, call):
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        side.seconds[f"{kind}_wall"] += time.perf_counter() - wall
        side.seconds[f"{kind}_cpu"] += time.process_time() - cpu
        for key, fit in result:
            side.counts[kind] += 1
            if fit is not None:
                side.made[kind] += 1
                side.fits[key] = fit
        return result

    granted: Counter = Counter()

    def budget(kind: str) -> Callable[[], bool]:
        """Whether scikit-learn may make one more fit of ``kind`` (``sample`` per kind)."""

        def take() -> bool:
            if sample is not None and granted[kind] >= sample:
                return False
            granted[kind] += 1
            return True

        return take

    def sets(kind, key, x, ys):
        return timed(
            kind,
            lambda: list(
                zip(
                    [(*key, i) for i in range(len(ys))], backend.fit_sets(x, stage.train, ys, budget(kind)), strict=True
                )
            ),
        )

    scores = {}
    for layer in stage.layers:
        res = sets("main", ("main", layer), stage.layer_of(layer), [stage.y, *stage.extra])
        if res[0][1] is not None:
            scores[layer] = res[0][1].score
    out["probe"] = selected["probe"] if selected else select_layer(scores)
    for seed, twin_of in stage.twins.items():
        twin_scores = {}
        for layer in stage.layers:
            res = sets("twin", ("twin", seed, layer), twin_of(layer), [stage.y])
            if res[0][1] is not None:
                twin_scores[layer] = res[0][1].score
        chosen = selected[seed] if selected else select_layer(twin_scores)
        out[seed] = chosen
        sets("twin_alt_world", ("twin_alt_world", seed, chosen), twin_of(chosen), stage.worlds)
    x = stage.layer_of(out["probe"])
    valid = np.ones(len(stage.y), dtype=bool)
    for column, groups in stage.groups.items():
        inside, skipped = holdout_masks(groups, valid)
        masks = [mask for block, mask in inside.items() if block not in skipped]
        timed("holdout", lambda masks=masks, column=column: list(zip(
            [("holdout", column, i) for i in range(len(masks))],
            backend.fit_blocks(x, stage.y, masks, budget("holdout")), strict=True)))  # fmt: skip
    return out


def compare(ours: Side, theirs: Side) -> dict:
    """Fits both made: identical alphas? largest relative prediction difference (per fit, max |diff| / max |pred|).
    A stacked fit whose target columns took different alphas (NaN) is counted apart and left out of both."""
    common = [k for k in theirs.fits if k in ours.fits]
    split = [k for k in common if np.isnan(theirs.fits[k].alpha)]
    common = [k for k in common if k not in split]
    same = sum(ours.fits[k].alpha == theirs.fits[k].alpha for k in common)
    rel = [np.max(np.abs(ours.fits[k].pred - theirs.fits[k].pred)) / np.max(np.abs(theirs.fits[k].pred))
           for k in common if ours.fits[k].alpha == theirs.fits[k].alpha]  # fmt: skip
    alpha_rel = [abs(ours.fits[k].alpha - theirs.fits[k].alpha) / theirs.fits[k].alpha for k in common]
    return {"fits_compared": len(common), "alphas_identical": same, "max_alpha_rel_diff": max(alpha_rel, default=0),
            "max_pred_rel_diff": float(max(rel, default=0.0)), "sets_with_an_alpha_per_column": len(split)}  # fmt: skip


def total(side: Side, unit: str, extrapolate: bool) -> float:
    """Seconds over kinds; a sampled kind scaled by fits asked / fits made."""
    out = 0.0
    for kind in side.counts:
        seconds = side.seconds[f"{kind}_{unit}"]
        if extrapolate and side.made[kind]:
            seconds *= side.counts[kind] / side.made[kind]
        out += seconds
    return out


def spread(values: Sequence[float]) -> str:
    """min / median / max of a side's repetitions."""
    return f"{min(values):.1f} / {float(np.median(values)):.1f} / {max(values):.1f}"


def report(ours: Side, theirs: Side, extrapolated: bool, end_to_end: tuple[float, float] | None,
           ours_totals: list[tuple[float, float]], theirs_totals: list[tuple[float, float]]) -> None:  # fmt: skip
    rows = []
    for kind in ours.counts:
        rows.append({
            "kind": kind, "fits": ours.counts[kind], "sklearn_made": theirs.made[kind],
            "ours_wall_s": ours.seconds[f"{kind}_wall"], "ours_cpu_s": ours.seconds[f"{kind}_cpu"],
            "sklearn_wall_s": theirs.seconds[f"{kind}_wall"] * ours.counts[kind] / max(theirs.made[kind], 1),
            "sklearn_cpu_s": theirs.seconds[f"{kind}_cpu"] * ours.counts[kind] / max(theirs.made[kind], 1),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    diff = compare(ours, theirs)
    print("comparison: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in diff.items()))
    note = " (scikit-learn scaled from the fits it made)" if extrapolated else ""
    wall = (float(np.median([t[0] for t in theirs_totals])), float(np.median([t[0] for t in ours_totals])))
    cpu = (float(np.median([t[1] for t in theirs_totals])), float(np.median([t[1] for t in ours_totals])))
    print(f"fits over {len(ours_totals)} interleaved repetition(s), min / median / max: {theirs.name} "
          f"{spread([t[0] for t in theirs_totals])} s wall, {spread([t[1] for t in theirs_totals])} CPU-s{note}; "
          f"worldprobe {spread([t[0] for t in ours_totals])} s wall, {spread([t[1] for t in ours_totals])} CPU-s; "
          f"ratio of medians {wall[0] / wall[1]:.1f}x wall, {cpu[0] / cpu[1]:.1f}x CPU")  # fmt: skip
    if end_to_end:
        print(f"run_probe end to end (every control, hold-outs, bootstrap, files): {end_to_end[0]:.1f} s wall / "
              f"{end_to_end[1]:.1f} CPU-s; {theirs.name}'s fits alone / run_probe: {wall[0] / end_to_end[0]:.1f}x "
              f"wall, {cpu[0] / end_to_end[1]:.1f}x CPU")  # fmt: skip
        wall, cpu = (wall[0], end_to_end[0]), (cpu[0], end_to_end[1])
    speed = min(wall[0] / wall[1], cpu[0] / cpu[1])
    print(f"speedup against {theirs.name}: {speed:.1f}x (the lower of wall and CPU; alphas identical "
          f"{diff['alphas_identical']}/{diff['fits_compared']}, predictions within {diff['max_pred_rel_diff']:.1e})")


def compare_stage(stage: Stage, sample: int | None, end_to_end: tuple[float, float] | None = None,
                  repeats: int = 1) -> None:
    """Ours, the per-fit scikit-learn pipeline and the stacked one, ``repeats`` times interleaved (the order rotates
    each repetition, so a noisy neighbour slows every side alike); the fits and comparisons of the last repetition;
    min / median / max of each side's total seconds; ratios of the medians."""
    backends = [Ours(), SklearnPipeline(), SklearnStacked()]
    totals: dict[str, list[tuple[float, float]]] = {b.name: [] for b in backends}
    sides: dict[str, Side] = {}
    selected = None
    for rep in range(repeats):
        order = backends[rep % 3:] + backends[: rep % 3]
        for backend in sorted(order, key=lambda b: not isinstance(b, Ours)) if selected is None else order:
            side = Side(backend.name)
            mine = sample if not isinstance(backend, Ours) else None
            chosen = run_stage(backend, stage, side, mine, selected=selected if mine else None)
            if isinstance(backend, Ours):
                selected = chosen
            elif not mine and chosen != selected:
                print(f"{backend.name} selected other layers: {chosen} vs {selected}")
            sides[backend.name] = side
            extrapolate = mine is not None
            totals[backend.name].append((total(side, "wall", extrapolate), total(side, "cpu", extrapolate)))
        done = ", ".join(f"{name} {t[-1][0]:.1f} s wall / {t[-1][1]:.1f} CPU-s" for name, t in totals.items())
        print(f"repetition {rep + 1}/{repeats}: {done}", flush=True)
    print(f"selected layers {selected}")
    ours = sides["worldprobe"]
    for name in ("scikit-learn", "scikit-learn stacked"):
        print(f"--- against {name}")
        report(ours, sides[name], sample is not None, end_to_end, totals["worldprobe"], totals[name])


def synthetic_stage(n: int, d: int, n_layers: int, seed: int = 0) -> Stage:
    """A cache-shaped problem: ``n_layers`` float16 layers of (n, d) with a planted 2-D place signal of growing
    strength, three random-init twins (noise with a trace of the signal), Zipf-sized countries and six entity types."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    y = latent * [20.0, 60.0] + [30.0, 10.0]
    scales = np.exp(rng.normal(0, 1.0, size=d))

    def layer(strength: float, layer_seed: int) -> np.ndarray:
        r = np.random.default_rng(layer_seed)
        mix = r.normal(size=(2, d)) * strength
        return ((r.standard_normal((n, d), dtype=np.float32) + (latent @ mix).astype(np.float32)) * scales).astype(
            np.float16)  # fmt: skip

    layers = {i: layer(0.05 * (i + 1), 100 + i) for i in range(n_layers)}
    twins = {s: {i: layer(0.002, 1000 + 10 * s + i) for i in range(n_layers)} for s in range(RANDOM_INIT_SEEDS)}
    sizes = 1.0 / np.arange(1, 151)
    country = pd.Series(rng.choice(150, size=n, p=sizes / sizes.sum())).map(lambda c: f"c{c}")
    entity_type = pd.Series(rng.choice(6, size=n)).map(lambda t: f"t{t}")
    is_test = rng.random(n) < 0.2
    entities = pd.DataFrame({"text": [f"entity {i}" for i in range(n)], "country": country})
    worlds = swapped_worlds(country, y, ~is_test, seed)
    return Stage(layers.__getitem__, list(layers), {s: t.__getitem__ for s, t in twins.items()}, y,
                 np.flatnonzero(~is_test), [shuffled_targets(entities["text"], y, seed=seed), *worlds], worlds,
                 {"country": country, "entity_type": entity_type})  # fmt: skip


def swapped_worlds(groups: pd.Series, y: np.ndarray, train: np.ndarray, seed: int) -> list[np.ndarray]:
    """The alternative worlds' workload: WORLDS target sets in which groups move as rigid blocks to other groups'
    train centroids (a seeded cyclic permutation; the probe stage's worlds are also matched on the spelling, which
    changes which groups move, not how many fits there are)."""
    codes, uniques = pd.factorize(groups.astype(str))
    means = pd.DataFrame(y[train]).groupby(codes[train]).mean().reindex(range(len(uniques))).fillna(0).to_numpy()
    out = []
    for s in np.random.default_rng(seed).integers(0, 2**31, WORLDS):
        order = np.random.default_rng(s).permutation(len(uniques))
        destination = np.empty(len(uniques), dtype=int)
        destination[order] = np.roll(order, -1)
        out.append(y + means[destination[codes]] - means[codes])
    return out


def paper_stage(workspace: str, dataset: str, model: str) -> Stage:
    """The cache of ``model`` on ``dataset`` in ``workspace`` and its three random-init twins (seeds 0, 1, 2)."""
    from worldprobe.countries import canonical_country
    from worldprobe.extract import find_cache, open_cache

    cache = open_cache(find_cache(dataset, model, workspace=workspace))
    entities = cache.entities.reset_index(drop=True)
    targets, _ = resolve_targets(entities, dataset)
    y = targets.to_numpy(dtype=np.float64)
    if not np.isfinite(y).all():
        raise SystemExit("the benchmark expects every row to have a target")
    twins = {}
    ids = entities["entity_id"].astype(str)
    for seed in range(RANDOM_INIT_SEEDS):
        twin = open_cache(find_cache(dataset, f"random:{model}", workspace=workspace, seed=seed))
        order = pd.Series(np.arange(len(twin.entities)), index=twin.entities["entity_id"].astype(str))[ids].to_numpy()
        twins[seed] = lambda layer, t=twin, o=order: np.asarray(t.layer(layer))[o]
    train = ~entities["is_test"].to_numpy(dtype=bool)
    worlds = swapped_worlds(group_keys(entities, dataset), y, train, 0)
    groups = {"country": entities["country"].map(canonical_country), "entity_type": entities["entity_type"]}
    return Stage(lambda layer: np.asarray(cache.layer(layer)), [int(v) for v in cache.layers], twins, y,
                 np.flatnonzero(train), [shuffled_targets(entities["text"], y, seed=0), *worlds], worlds,
                 groups)  # fmt: skip


def time_run_probe(workspace: str, dataset: str, model: str) -> tuple[float, float]:
    """``run_probe`` with every control and two hold-out columns, from a fresh results folder."""
    from worldprobe.probes.controls import CONTROLS
    from worldprobe.probes.experiments import run_probe
    from worldprobe.workspace import as_workspace

    ws = as_workspace(workspace)
    for old in ws.results.glob(f"{dataset}__{model}__empty__ridge__*"):
        shutil.rmtree(old)
    wall, cpu = time.perf_counter(), time.process_time()
    run_probe(
        dataset, model, workspace=ws, controls=CONTROLS, progress=False, options=ProbeOptions(holdouts=HOLDOUT_COLUMNS)
    )
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", choices=["paper", "synthetic"], default="synthetic")
    parser.add_argument("--quick", action="store_true", help="synthetic 2,000 x 576 (the quick study's SmolLM2 "
                        "caches), 3 layers, every fit measured: the default size")
    parser.add_argument("-w", "--workspace")
    parser.add_argument("-d", "--dataset", default="world_place")
    parser.add_argument("-m", "--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=576)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--sklearn-sample", type=int, default=None, help="at most K scikit-learn fits per kind")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of every side")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        if args.source == "paper":
            if not args.workspace:
                raise SystemExit("paper needs -w WORKSPACE with the cache and its random-init twins")
            end_to_end = time_run_probe(args.workspace, args.dataset, args.model)
            print(f"run_probe: {end_to_end[0]:.1f} s wall, {end_to_end[1]:.1f} CPU-s", flush=True)
            compare_stage(paper_stage(args.workspace, args.dataset, args.model), args.sklearn_sample, end_to_end,
                          args.repeats)  # fmt: skip
        else:
            n, d, layers = (2000, 576, 3) if args.quick else (args.n, args.d, args.layers)
            print(f"synthetic {n:,} x {d:,}, {layers} layers, {RANDOM_INIT_SEEDS} twins, threads {args.threads}")
            compare_stage(synthetic_stage(n, d, layers), None if args.quick else args.sklearn_sample, None,
                          args.repeats)  # fmt: skip


if __name__ == "__main__":
    main()
