"""The study's comparisons on cached activations: layer sweep, held-out blocks, cross-prompt transfer, prompt and
model comparison, and probes of arbitrary targets aligned with a cache (docs/explanation/probes.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from worldprobe.checks import FLAG, LAYERS, NAME, SEED, Rule, checked_arguments
from worldprobe.config import DEFAULT_SEED
from worldprobe.datasets.registry import era_labels, get_spec, load_user_specs
from worldprobe.errors import WorldprobeError
from worldprobe.probes.controls import (
    FLAT,
    SharedFits,
    control_targets,
    group_keys,
    resolve_controls,
)
from worldprobe.probes.headline import ALL, RunData, headline
from worldprobe.probes.holdouts import holdout_blocks
from worldprobe.probes.mlp import MLPProbe
from worldprobe.probes.options import ProbeOptions
from worldprobe.probes.results import HOLDOUT_COLUMNS, RunFolder, is_complete, run_dir, run_key, write_results
from worldprobe.probes.ridge import DEFAULT_ALPHAS, DEFAULT_STANDARDIZE, RidgeProbe
from worldprobe.probes.selection import criterion
from worldprobe.probes.sweep import ProbeResult, layer_sweep, score
from worldprobe.probes.verdict import verdict
from worldprobe.reuse import starting_work
from worldprobe.workspace import WORKSPACE, as_workspace

if TYPE_CHECKING:
    from worldprobe.extract.options import ModelRequest

PROBES = ("ridge", "mlp")


def make_probe_factory(
    probe: str = "ridge", *, standardize: bool | None = None, seed: int = DEFAULT_SEED, alphas=None
) -> Callable[[], BaseEstimator]:
    """A zero-argument factory of fresh, unfitted probes with the given settings."""
    std = DEFAULT_STANDARDIZE if standardize is None else standardize
    if probe == "ridge":
        return lambda: RidgeProbe(alphas=alphas, standardize=std)
    if probe == "mlp":
        return lambda: MLPProbe(standardize=std, seed=seed)
    raise WorldprobeError(f"unknown probe {probe!r}", field="probe", hint=f"one of {', '.join(PROBES)}")


def resolve_targets(
    entities: pd.DataFrame, dataset: str, target: str | None = None, log_target: bool = False
) -> tuple[pd.DataFrame, str]:
    """The target columns (named, in cache order) and their kind ("place", "time" or "numeric").

    Without ``target`` the dataset's own targets; otherwise any numeric column of the entity table, optionally
    log10-transformed (named ``log10_<column>``; non-positive values become NaN and are dropped and counted later).
    """
    spec = get_spec(dataset)
    if target is None:
        names, kind = list(spec.targets), spec.kind
    else:
        if target not in entities.columns:
            numeric = [c for c in entities.columns if pd.api.types.is_numeric_dtype(entities[c])]
            raise WorldprobeError(f"no column {target!r} in the entity table", field=target, hint=f"numeric: {numeric}")
        if not pd.api.types.is_numeric_dtype(entities[target]) or pd.api.types.is_bool_dtype(entities[target]):
            raise WorldprobeError(f"column {target!r} is not numeric", field=target)
        names, kind = [target], ("time" if target == "year" else "numeric")
    frame = entities[names].astype(float).reset_index(drop=True)
    if log_target:
        if kind == "place":
            raise WorldprobeError("--log-target applies to one numeric target, not to coordinates", field="target")
        frame = np.log10(frame.where(frame > 0)).rename(columns=lambda c: f"log10_{c}")
        kind = "numeric"
    return frame, kind


def probe_cache(
    cache,
    targets: pd.DataFrame | pd.Series | np.ndarray,
    *,
    layers: Sequence[int] | None = None,
    probe: str = "ridge",
    is_test: np.ndarray | None = None,
    kind: str = "numeric",
    standardize: bool | None = None,
    seed: int = DEFAULT_SEED,
) -> ProbeResult:
    """Probe any targets aligned with a cache's entity order (no re-extraction).

    ``targets``: an array (n,) / (n, k), a Series or a DataFrame with one named column per target; NaN rows are
    skipped and counted in ``result.dropped``. The split defaults to the cache's ``is_test`` column.
    """
    n = len(cache.entities)
    if isinstance(targets, pd.Series):
        frame = targets.reset_index(drop=True).to_frame(name=targets.name or "target")
    elif isinstance(targets, pd.DataFrame):
        frame = targets.reset_index(drop=True)
    else:
        arr = np.asarray(targets, dtype=np.float64)
        arr = arr[:, None] if arr.ndim == 1 else arr
        frame = pd.DataFrame(
            arr, columns=["target"] if arr.shape[1] == 1 else [f"target_{i}" for i in range(arr.shape[1])]
        )
    if len(frame) != n:
        raise WorldprobeError(f"{len(frame)} targets for a cache of {n} entities; align them with cache.entities")
    split = cache.entities["is_test"].to_numpy(dtype=bool) if is_test is None else np.asarray(is_test, dtype=bool)
    return layer_sweep(
        cache.layer, frame.astype(float), split, list(cache.layers if layers is None else layers),
        make_probe_factory(probe, standardize=standardize, seed=seed), kind=kind,
    )  # fmt: skip


def cross_prompt_transfer(
    dataset: str,
    model: str,
    train_prompt: str,
    test_prompt: str,
    *,
    workspace=None,
    layers: Sequence[int] | None = None,
    target: str | None = None,
    log_target: bool = False,
    probe: str = "ridge",
    standardize: bool | None = None,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Train on ``train_prompt``'s activations (train rows) and score on ``test_prompt``'s (test rows), next to a
    probe trained and scored on ``test_prompt`` itself. Entities are matched by ``entity_id``.

    Columns: train_prompt, test_prompt, setting (transfer|within), layer, split, target, metric, value.
    """
    from worldprobe.extract.cache import find_cache, open_cache
    from worldprobe.workspace import as_workspace

    ws = as_workspace(workspace)
    a = open_cache(find_cache(dataset, model, train_prompt, "last", workspace=ws))
    b = open_cache(find_cache(dataset, model, test_prompt, "last", workspace=ws))
    ids_a, ids_b = a.entities["entity_id"].astype(str), b.entities["entity_id"].astype(str)
    common = np.intersect1d(ids_a.to_numpy(), ids_b.to_numpy())
    if len(common) == 0:
        raise WorldprobeError(f"caches of prompts {train_prompt!r} and {test_prompt!r} share no entity_id")
    pos_a = pd.Series(np.arange(len(ids_a)), index=ids_a).loc[common].to_numpy()
    pos_b = pd.Series(np.arange(len(ids_b)), index=ids_b).loc[common].to_numpy()
    ents = b.entities.iloc[pos_b].reset_index(drop=True)
    tgt, kind = resolve_targets(ents, dataset, target, log_target)
    y = tgt.to_numpy(dtype=np.float64)
    is_test = ents["is_test"].to_numpy(dtype=bool)
    valid = np.isfinite(y).all(axis=1)
    train, test = np.flatnonzero(valid & ~is_test), np.flatnonzero(valid & is_test)
    make = make_probe_factory(probe, standardize=standardize, seed=seed)
    rows = []
    shared_layers = [layer for layer in (a.layers if layers is None else layers) if layer in b.layers]
    for layer in tqdm(shared_layers, desc=f"transfer {train_prompt} -> {test_prompt}", unit="layer"):
        xa, xb = np.asarray(a.layer(layer))[pos_a], np.asarray(b.layer(layer))[pos_b]
        for setting, x_fit in (("transfer", xa), ("within", xb)):
            fitted = make().fit(x_fit[train], y[train])
            pred = pd.DataFrame(np.asarray(fitted.predict(xb[test])).reshape(len(test), -1), columns=tgt.columns)
            for t, m, v in score(tgt.iloc[test].reset_index(drop=True), pred, kind):
                rows.append((train_prompt if setting == "transfer" else test_prompt, test_prompt, setting, layer,
                             "test", t, m, v))  # fmt: skip
    return pd.DataFrame(rows, columns=["train_prompt", "test_prompt", "setting", "layer", "split", "target", "metric",
                                       "value"])  # fmt: skip


def compare_prompts(dataset: str, model: str, prompts: Sequence[str], **run_options) -> pd.DataFrame:
    """One metrics table over several prompts (one cache each) of the same dataset and model (``run_probe`` each)."""
    from worldprobe.probes.results import read_metrics

    return pd.concat([read_metrics(run_probe(dataset, model, p, **run_options)) for p in prompts], ignore_index=True)


def compare_models(dataset: str, models: Sequence[str], prompt: str = "empty", **run_options) -> pd.DataFrame:
    """One metrics table over several models; its ``n_layers`` and ``rel_depth`` columns put curves on one axis."""
    from worldprobe.probes.results import read_metrics

    return pd.concat([read_metrics(run_probe(dataset, m, prompt, **run_options)) for m in models], ignore_index=True)


@checked_arguments(
    dataset=NAME, prompt=NAME, workspace=WORKSPACE, probe=NAME, layers=LAYERS, target=Rule(str),
    controls=Rule(str, many=True), seed=SEED, prefer_dtype=Rule(str), progress=FLAG,
)  # fmt: skip
def run_probe(
    dataset: str,
    model: str | ModelRequest,
    prompt: str = "empty",
    *,
    workspace=None,
    probe: str = "ridge",
    layers: Sequence[int] | str | None = None,
    target: str | None = None,
    controls: Sequence[str] = (),
    seed: int = DEFAULT_SEED,
    options: ProbeOptions = ProbeOptions(),
    prefer_dtype: str | None = None,
    progress: bool = True,
) -> RunFolder:
    """Probe one finished activation cache and write ``results/<run-key>/``; return that folder.

    ``model``: its name, or a :class:`~worldprobe.extract.models.ModelRequest` whose dtype (``auto``/``fast``
    resolved for its device on this machine) takes only the cache extracted with that dtype; ``prefer_dtype`` takes
    that dtype's cache when the workspace holds several, else the only one (a study: its probe task may run on another
    machine than its extraction did). Neither: the only one. ``options``: fitting, hold-outs and inference
    (:class:`ProbeOptions`).

    Layer sweep over ``layers`` (default: every cached layer), train and test metrics per layer, the layer selected
    on train rows (``worldprobe.probes.selection``), the named ``controls`` (``worldprobe.probes.controls``; the
    random-init control with ``random_init_seeds`` twins) in the same metrics table, the headline estimates with
    bootstrap intervals (``resamples`` per interval) and the verdict (``worldprobe.probes.headline``, ``verdict``; its
    equivalence margins ``margin_r2`` for differences of R² and ``margin_r`` for differences of the within-group r;
    with ``resplits`` K > 0 the probe, lexical and random-init controls refitted on K re-drawn splits,
    ``worldprobe.probes.resplits``),
    predictions of the probe and every control at the reported layers (and every layer asked for explicitly), and
    held-out blocks at the selected layer for each column in ``holdouts``. A finished run with the same caches and
    settings is not recomputed.
    """
    from worldprobe.devices import cache_dtype
    from worldprobe.extract.cache import find_cache, open_cache

    ws = as_workspace(workspace)
    load_user_specs(ws.datasets)
    spec = get_spec(dataset)
    if probe not in PROBES:
        raise WorldprobeError(f"unknown probe {probe!r}", field="probe", hint=f"one of {', '.join(PROBES)}")
    o = options
    log_target, holdouts, standardize, resamples, resplits = o.log_target, o.holdouts, o.standardize, o.resamples, \
        o.resplits
    std = DEFAULT_STANDARDIZE if standardize is None else bool(standardize)
    request = None if isinstance(model, str) else model  # a ModelRequest: its dtype narrows the choice of cache
    narrow = {"dtype": request.cache_dtype} if request else {}
    device = request.device if request else "auto"
    model = request.name if request else model
    prefer = {} if prefer_dtype is None else {"dtype": cache_dtype(prefer_dtype, device)}
    cache = open_cache(find_cache(dataset, model, prompt, "last", workspace=ws, prefer=prefer, **narrow))
    available = [int(v) for v in cache.layers]
    if layers is None:
        chosen = available
    else:
        from worldprobe.extract.cache import parse_layers

        chosen = parse_layers(layers, int(cache.manifest["n_layers"]))
    missing = [v for v in chosen if v not in available]
    if missing:
        raise WorldprobeError(f"layers {missing} are not in the cache", field="layers", hint=f"cached: {available}")
    entities = cache.entities.reset_index(drop=True)
    bad = [c for c in holdouts if c not in entities.columns]
    if bad:
        raise WorldprobeError(
            f"no column {bad[0]!r} to hold out", field="holdout", hint=f"{list(spec.holdout_columns)}"
        )
    margins = {"r2": o.margin_r2, "r": o.margin_r}
    requested = list(controls)
    controls = resolve_controls(requested)  # canonical: "all" expanded, in CONTROLS order (one run key per set)
    settings = {
        "probe": probe, "layers": chosen, "target": target, "log_target": log_target, "holdouts": list(holdouts),
        "controls": controls, "standardize": std, "seed": seed, "resamples": resamples,
        "random_init_seeds": o.random_init_seeds if "random_init" in controls else None,
        "alphas": [float(a) for a in DEFAULT_ALPHAS] if probe == "ridge" else None,
        "margins": margins, "resplits": int(resplits),
    }  # fmt: skip
    key = run_key([cache.manifest], settings)
    folder = run_dir(ws.results, dataset, model, prompt, probe, key)
    if is_complete(folder, key):
        return folder
    if requested != controls:  # a run finished before control names were canonical was keyed by their spelling
        legacy = run_key([cache.manifest], {**settings, "controls": requested})
        if is_complete(old := run_dir(ws.results, dataset, model, prompt, probe, legacy), legacy):
            return old

    starting_work(f"probe {folder.name}")
    targets, kind = resolve_targets(entities, dataset, target, log_target)
    is_test = entities["is_test"].to_numpy(dtype=bool)
    make = make_probe_factory(probe, standardize=std, seed=seed)
    clock = _Clock()
    valid = np.isfinite(targets.to_numpy(dtype=np.float64)).all(axis=1)
    extra = control_targets(controls, entities[valid], targets.to_numpy(dtype=np.float64)[valid], dataset, seed,
                            margin_r2=margins["r2"])
    result = layer_sweep(
        cache.layer,
        targets,
        is_test,
        chosen,
        make,
        kind=kind,
        progress=progress,
        extra={name: [_on_rows(a, valid) for a in sets] for name, sets in extra.sets.items()},
    )
    clock.lap("layer_sweep")
    selected = result.selected_layer
    n_layers = int(cache.manifest["n_layers"])
    ids = {"dataset": dataset, "model": model, "n_layers": n_layers, "prompt": prompt, "probe": probe, "seed": seed}
    fits: list = []
    alt = residual = None
    twins: dict = {}
    view = cache if valid.all() else _RowSubset(cache, valid)
    frames = [result.metrics.assign(control="none", seed=seed)]
    if controls:
        from worldprobe.probes.controls import MainProbe, run_controls

        main = MainProbe(
            make_probe=make, predictions={k: v[valid] for k, v in result.predictions.items()},
            selected_layer=selected, worlds=extra.worlds, shared={
                name: SharedFits(extra.sets[name], [{k: v[valid] for k, v in p.items()} for p in fits.predictions],
                                 fits.selection)
                for name, fits in result.shared.items()
            },
        )  # fmt: skip
        ctl = run_controls(
            list(controls), workspace=ws, dataset=dataset, model=model, prompt=prompt, cache=view,
            targets=targets[valid].reset_index(drop=True), layers=chosen, main=main, seed=seed, options=options,
            progress=progress,
        )  # fmt: skip
        frames.append(ctl.rows)
        fits, alt, residual, twins = ctl.fits, ctl.alt_world, ctl.residual, ctl.twins
        clock.lap("controls")
    top = headline(RunData(
        kind=kind, target_names=list(targets.columns), y=targets.to_numpy(dtype=np.float64)[valid],
        is_test=is_test[valid], groups=group_keys(entities, dataset).to_numpy()[valid],
        entity_type=entities["entity_type"].astype(str).to_numpy()[valid],
        probe={k: v[valid] for k, v in result.predictions.items()}, selected_layer=selected, fits=fits, alt_world=alt,
        seed=seed, resamples=resamples, residual=residual, margins=margins,
        eras=_eras(spec, targets, target, kind, valid),
    ))  # fmt: skip
    clock.lap("headline")
    if resplits:
        from worldprobe.probes.resplits import resplit_spread

        kept_rows = entities[valid].reset_index(drop=True)
        top.summary["resplits"] = resplit_spread(
            view.layer, {s: t.layer for s, t in twins.items()}, kept_rows["text"],
            kept_rows[spec.split_column].astype(str), targets.to_numpy(dtype=np.float64)[valid], chosen, make,
            resplits=resplits, seed=seed, lexical="lexical" in controls, progress=progress,
        )  # fmt: skip
        clock.lap("resplits")
    metrics_table = with_intervals(
        pd.concat(frames, ignore_index=True),
        top.rows,
        fits,
        selected,
        seed=seed,
        n_train=int((valid & ~is_test).sum()),
        n_test=int((valid & is_test).sum()),
        own_layers={"within_group": residual.selected_layer} if residual is not None and residual.selection else None,
    )
    metrics_table = metrics_table.assign(**{k: v for k, v in ids.items() if k != "seed"}, standardize=std)
    metrics_table["rel_depth"] = metrics_table["layer"] / n_layers
    clock.lap("tables")
    hold = []
    for column in holdouts:
        groups = entities[column]
        if column == "country":
            from worldprobe.countries import canonical_country

            groups = groups.map(canonical_country)
        blocks = holdout_blocks(cache.layer(selected), targets, groups.rename(column), is_test,
                                result.predictions[selected], make, kind=kind, progress=progress)  # fmt: skip
        hold.append(blocks.assign(dataset=dataset, model=model, prompt=prompt, layer=selected, probe=probe,
                                  column=column))  # fmt: skip
    holdouts_table = pd.concat(hold, ignore_index=True) if hold else pd.DataFrame(columns=list(HOLDOUT_COLUMNS))

    clock.lap("holdouts")
    kept = sorted({selected} | (set(chosen) if layers is not None else set()))
    predictions = _prediction_table(entities, spec, targets, result, kept, ids, fits, valid, selected)
    test_rows = result.metrics.query("split == 'test' and target == 'mean' and metric == 'r2'").set_index("layer")
    upper = int(test_rows["value"].idxmax())
    summary = {
        "run_key": key, "dataset": dataset, "model": model, "prompt": prompt, "probe": probe, "kind": kind,
        "n_layers": n_layers, "layers": chosen, "selected_layer": selected, "selected_rel_depth": selected / n_layers,
        "selection_criterion": criterion(probe), "selection": {str(k): v for k, v in result.selection.items()},
        "headline": top.summary,
        "verdict": verdict(top.summary, kind=kind, group_column=spec.oracle_column, n_layers=n_layers),
        "upper_bound": {"test_r2": float(test_rows.loc[upper, "value"]), "layer": upper,
                        "note": "the maximum over layers of test R²: an upper bound chosen on the test rows, "
                                "not a result"},
        "targets": list(targets.columns), "settings": settings,
        "alpha_on_edge_layers": result.metrics.query("metric == 'alpha_on_edge' and value == 1")["layer"].tolist(),
        "rows": {"entities": len(entities), "dropped_no_target": result.dropped,
                 "train": int((valid & ~is_test).sum()), "test": int((valid & is_test).sum())},
        "cost": clock.record(),
        "cache": {"path": ws.relative(cache.path) if hasattr(cache, "path") else "",
                  "dataset_fingerprint": cache.manifest.get("dataset_fingerprint"),
                  "entity_order_sha256": cache.manifest.get("entity_order_sha256")},
    }  # fmt: skip
    return write_results(folder, metrics=metrics_table, predictions=predictions, holdouts=holdouts_table,
                         summary=summary)  # fmt: skip


def _eras(spec, targets: pd.DataFrame, target: str | None, kind: str, valid: np.ndarray) -> np.ndarray | None:
    """Era labels of the valid rows for a time dataset's own target with era bounds (``DatasetSpec.era_bounds``)."""
    if target is not None or kind != "time" or not spec.era_bounds:
        return None
    return era_labels(targets.iloc[:, 0].to_numpy(dtype=np.float64)[valid], spec.era_bounds)


def _on_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values`` of the rows where ``rows`` is true, placed in a table of every row (NaN elsewhere)."""
    out = np.full((len(rows), *np.shape(values)[1:]), np.nan)
    out[rows] = values
    return out


class _Clock:
    """CPU and wall seconds of each phase of a probe run (``summary.json`` ``cost``: what the bootstrap adds)."""

    def __init__(self) -> None:
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        self.phases: dict[str, dict[str, float]] = {}

    def lap(self, phase: str) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        self.phases[phase] = {"cpu_s": round(cpu - self._cpu, 3), "wall_s": round(wall - self._wall, 3)}
        self._cpu, self._wall = cpu, wall

    def record(self) -> dict[str, dict[str, float]]:
        total = {k: round(sum(p[k] for p in self.phases.values()), 3) for k in ("cpu_s", "wall_s")}
        return {**self.phases, "total": total}


def with_intervals(
    table: pd.DataFrame,
    estimates: list[dict],
    fits: list,
    selected: int,
    *,
    seed: int,
    n_train: int,
    n_test: int,
    own_layers: dict[str, int] | None = None,
) -> pd.DataFrame:
    """The per-layer rows with ``n``, the curve's train-selected layer, and the headline's intervals: a headline
    estimate fills ``ci_low``/``ci_high`` of the per-layer row with the same key and is appended when there is none
    (differences, median errors, per entity type). ``own_layers`` names the train-selected layer of curves that are
    not in ``fits`` (the within-group residual probe)."""
    table = table.assign(subset=ALL, ci_low=np.nan, ci_high=np.nan)
    table["n"] = np.where(table["split"] == "test", n_test, n_train)
    own = {(f.control, f.seed): f.selected_layer for f in fits if f.layered}
    own |= {(control, seed): layer for control, layer in (own_layers or {}).items()}
    table["selected_layer"] = [
        own.get((control, seed), selected) for control, seed in zip(table["control"], table["seed"], strict=True)
    ]
    extra = pd.DataFrame(estimates)
    if extra.empty:
        return table
    extra["selected_layer"] = [
        own.get((control, seed), selected) for control, seed in zip(extra["control"], extra["seed"], strict=True)
    ]
    keys = ["control", "seed", "layer", "split", "target", "metric", "subset"]
    for frame in (table, extra):  # rows without a seed of their own carry the run's
        frame["seed"] = frame["seed"].astype("float").fillna(seed).astype(int)
    extra = extra.drop_duplicates(subset=keys).reset_index(drop=True)  # a control whose own layer is the probe's
    merged = table.merge(extra[[*keys, "value", "n", "ci_low", "ci_high"]], on=keys, how="left", suffixes=("", "_e"))
    found = merged["value_e"].notna()
    for column in ("n", "ci_low", "ci_high"):
        merged.loc[found, column] = merged.loc[found, f"{column}_e"]
    merged = merged.drop(columns=[c for c in merged.columns if c.endswith("_e")])
    matched = extra.merge(table[keys], on=keys, how="left", indicator=True)["_merge"] == "both"
    return pd.concat([merged, extra[~matched.to_numpy()]], ignore_index=True)


def _prediction_table(entities, spec, targets, result: ProbeResult, kept, ids, fits, valid, selected) -> pd.DataFrame:
    """Predictions of every entity: the probe at ``kept`` layers; each control at its reported layers (a layered
    control at the probe's selected layer and at its own, a layer-free one with layer -1). ``true_*`` holds what the
    row was scored against (the permuted targets for ``shuffled``)."""
    base_cols = list(dict.fromkeys(["entity_id", "name", "text", "is_test",
                                    *[c for c in spec.group_columns if c in entities.columns]]))  # fmt: skip
    columns = list(targets.columns)

    def frame(rows: np.ndarray, layer: int, control: str, seed: int, true: np.ndarray, pred: np.ndarray):
        out = entities.loc[rows, base_cols].reset_index(drop=True)
        for i, col in enumerate(columns):
            out[f"true_{col}"], out[f"pred_{col}"] = true[:, i], pred[:, i]
        head = {"dataset": ids["dataset"], "model": ids["model"], "prompt": ids["prompt"], "layer": layer,
                "probe": ids["probe"], "control": control, "seed": seed}  # fmt: skip
        return pd.concat([pd.DataFrame(head, index=out.index), out], axis=1)

    every = np.arange(len(entities))
    y = targets.to_numpy(dtype=np.float64)
    frames = [frame(every, layer, "none", ids["seed"], y, result.predictions[layer]) for layer in kept]
    for fit in fits:
        layers = sorted({selected, fit.selected_layer}) if fit.layered else [FLAT]
        for layer in layers:
            seed = ids["seed"] if fit.seed is None else fit.seed
            frames.append(frame(every[valid], layer, fit.control, seed, fit.y, fit.at(layer)))
    return pd.concat(frames, ignore_index=True)


class _RowSubset:
    """A view of an activation cache restricted to some rows (for controls when some targets are missing)."""

    def __init__(self, cache, keep: np.ndarray) -> None:
        self._cache, self._keep = cache, keep
        self.manifest = cache.manifest
        self.layers = cache.layers
        self.entities = cache.entities.reset_index(drop=True)[keep].reset_index(drop=True)

    def layer(self, layer: int) -> np.ndarray:
        return np.asarray(self._cache.layer(layer))[self._keep]
