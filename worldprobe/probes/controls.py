"""Controls that separate "the model knows" from "the probe learned it" (docs/explanation/probes.md).

:func:`run_controls` is called by the probe stage with the main probe's predictions and returns tidy rows with the
columns of ``metrics.parquet`` and ``control != "none"``. Layer-free controls (lexical, group_oracle, embedding) repeat
their value at every probed layer so that they draw as flat lines beside the layer curve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from worldprobe.config import DEFAULT_MARGINS
from worldprobe.datasets.registry import get_spec
from worldprobe.errors import WorldprobeError
from worldprobe.probes.altworld import MatchedWorlds, matched_worlds
from worldprobe.probes.lexical import LexicalFit, lexical_fit
from worldprobe.probes.metrics import pearson_columns, r2_columns, spearman_columns
from worldprobe.probes.options import ProbeOptions
from worldprobe.probes.residual import ResidualFit, fit_residual_probe, residual_fit, residual_targets
from worldprobe.probes.results import CONTROLS, LAYER_ROW_COLUMNS
from worldprobe.probes.selection import SCORE_METRIC, select_layer, selection_score
from worldprobe.workspace import Workspace

FLAT = -1
"""The ``predictions`` key of a layer-free control (lexical, group_oracle, embedding)."""

@dataclass
class ControlFit:
    """What one control (one seed of it) predicted, kept for the bootstrap at the reported layers.

    ``y`` is what it was scored against (every row; the permuted targets for ``shuffled``), ``predictions`` maps a
    layer to (n, k) predictions of every row (a layer-free control has one entry at :data:`FLAT`), ``selection`` the
    layer's train-only score (layered controls only).
    """

    control: str
    y: np.ndarray
    predictions: dict[int, np.ndarray]
    selection: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    alpha: float | None = None  # the penalty a layer-free ridge control chose (lexical)
    alpha_on_edge: bool = False  # ... on an edge of its grid

    @property
    def layered(self) -> bool:
        return bool(self.selection)

    @property
    def selected_layer(self) -> int | None:
        """The control's own layer, chosen on train rows like the probe's (None for a layer-free control)."""
        return select_layer(self.selection) if self.selection else None

    def at(self, layer: int | None) -> np.ndarray:
        """Predictions at ``layer`` (a layer-free control: its only predictions)."""
        return self.predictions[FLAT] if not self.layered else self.predictions[layer]


@dataclass
class AltWorldFit:
    """The matched alternative worlds (``worldprobe.probes.altworld``; targets of every row) and what each feature set
    predicted for them: the probe's activations per layer, the lexical features, and each random-init twin at its own
    selected layer. ``matched.applicable`` is false (and ``worlds`` empty) when no sound world could be built."""

    matched: MatchedWorlds
    model: dict[int, list[np.ndarray]] = field(default_factory=dict)
    model_selection: dict[int, float] = field(default_factory=dict)
    lexical: list[np.ndarray] | None = None
    random_init: dict[int, tuple[int, list[np.ndarray]]] = field(default_factory=dict)  # seed -> (layer, preds)

    @property
    def worlds(self) -> list[np.ndarray]:
        return self.matched.worlds


@dataclass
class SharedFits:
    """Fits of a control's target sets made in the probe's own layer sweep, on the same decomposition per layer as
    the probe (``layer_sweep(extra=...)``): the targets, and per set the predictions and selection score per layer."""

    targets: list[np.ndarray]
    predictions: list[dict[int, np.ndarray]]
    selection: list[dict[int, float]]


SHARED_CONTROLS = ("shuffled", "within_group", "alt_world")
"""Controls whose probes read the same activations as the probe itself, so their fits can share its decomposition."""


@dataclass
class SharedTargets:
    """The target sets of the shared controls (``sets``: ``shuffled`` -> [permuted targets], ``within_group`` ->
    [offsets from the group's train mean], ``alt_world`` -> the matched worlds) and the alternative worlds' record
    (None when ``alt_world`` was not asked for)."""

    sets: dict[str, list[np.ndarray]]
    worlds: MatchedWorlds | None = None


def control_targets(names: Sequence[str], entities: pd.DataFrame, y: np.ndarray, dataset: str, seed: int,
                    margin_r2: float = DEFAULT_MARGINS["r2"]) -> SharedTargets:  # fmt: skip
    """The target sets of the shared controls among ``names``: the permuted targets of ``shuffled``, the offsets of
    the ``within_group`` residual probe and the matched alternative worlds of ``alt_world`` (built from train rows
    only; none when not applicable)."""
    names = resolve_controls(names)
    entities = entities.reset_index(drop=True)
    train = ~entities["is_test"].to_numpy(dtype=bool)
    out = SharedTargets({})
    if "shuffled" in names:
        out.sets["shuffled"] = [shuffled_targets(entities["text"], y, seed=seed)]
    if "within_group" in names:
        out.sets["within_group"] = [residual_targets(group_keys(entities, dataset), y, train)[1]]
    if "alt_world" in names:
        out.worlds = matched_worlds(group_keys(entities, dataset), entities["text"], y, train, seed=seed,
                                    margin=margin_r2)  # fmt: skip
        if out.worlds.applicable:
            out.sets["alt_world"] = out.worlds.worlds
    return out


@dataclass
class ControlRun:
    """Tidy metric rows (columns of ``metrics.parquet``) and the fits behind them."""

    rows: pd.DataFrame
    fits: list[ControlFit]
    alt_world: AltWorldFit | None = None
    residual: ResidualFit | None = None
    twins: dict[int, CacheLike] = field(default_factory=dict)  # random-init twin caches by seed (this run's rows)


class CacheLike(Protocol):
    """What the controls need of an activation cache (``worldprobe.extract.ActivationCache`` fits)."""

    manifest: dict[str, Any]
    entities: pd.DataFrame

    def layer(self, layer: int) -> np.ndarray: ...


@dataclass
class MainProbe:
    """What the probe's own layer sweep hands its controls: the probe factory, the probe's predictions of every row
    per layer (columns in target order), its train-selected layer (None: the deepest), the fits the sweep already
    made for shuffled / alt_world on the same decompositions (``shared``, not refitted), and the matched alternative
    worlds they were made for (``control_targets``; built by the controls when not given)."""

    make_probe: Callable[[], BaseEstimator]
    predictions: dict[int, np.ndarray]
    selected_layer: int | None = None
    shared: dict[str, SharedFits] | None = None
    worlds: MatchedWorlds | None = None


def run_controls(
    names: Sequence[str],
    *,
    workspace: Workspace,
    dataset: str,
    model: str,
    prompt: str,
    cache: CacheLike,
    targets: pd.DataFrame,
    layers: Sequence[int],
    main: MainProbe,
    seed: int,
    options: ProbeOptions = ProbeOptions(),
    progress: bool = True,
) -> ControlRun:
    """Run the named controls; return their tidy metric rows (columns of ``metrics.parquet``) and their fits.

    ``targets`` holds the target columns in cache order; the split is ``cache.entities["is_test"]``; ``main``: what
    the probe's layer sweep hands over (:class:`MainProbe`). From ``options``: ``random_init`` runs
    ``random_init_seeds`` twins, and the residual's equivalence reads ``margin_r2``.
    ``names`` may be ``["all"]`` for every control in :data:`CONTROLS`.
    """
    names = resolve_controls(names)
    entities = cache.entities.reset_index(drop=True)
    if len(entities) != len(targets):
        raise WorldprobeError(f"{len(targets)} target rows for a cache of {len(entities)} entities", field="targets")
    job = _Job(
        dataset=dataset, model=model, prompt=prompt, cache=cache, entities=entities,
        y=targets.to_numpy(dtype=np.float64), target_names=list(targets.columns), layers=list(layers),
        make_probe=main.make_probe, predictions=main.predictions, seed=seed, workspace=workspace,
        selected_layer=max(layers) if main.selected_layer is None else int(main.selected_layer),
        twin_seeds=[seed + i for i in range(options.random_init_seeds)], shared=main.shared or {}, progress=progress,
        worlds=main.worlds, margin_r2=options.margin_r2,
    )  # fmt: skip
    frames = [pd.DataFrame(_RUNNERS[name](job)) for name in tqdm(names, desc="controls", unit="control",
                                                                            disable=not progress)]
    rows = pd.concat(frames, ignore_index=True)[list(LAYER_ROW_COLUMNS)] if frames else pd.DataFrame(
        columns=list(LAYER_ROW_COLUMNS))  # fmt: skip
    return ControlRun(rows, job.fits, job.alt_world, job.residual, job.twins)


def resolve_controls(names: Sequence[str]) -> list[str]:
    """The controls to run, in :data:`CONTROLS` order; ``all`` stands for every one; unknown names are an error."""
    unknown = [n for n in names if n not in CONTROLS and n != "all"]
    if unknown:
        raise WorldprobeError(
            f"unknown control(s) {unknown}", field="control", hint=f"known: all, {', '.join(CONTROLS)}"
        )
    return [n for n in CONTROLS if n in names or "all" in names]


class _Job:
    """The inputs shared by every control of one (dataset, model, prompt) run, the row writer, and the fits the
    controls leave for the bootstrap (``fits``, ``alt_world``)."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)
        self.is_test = self.entities["is_test"].to_numpy(dtype=bool)
        self.n_layers = int(self.cache.manifest.get("n_layers", max(self.layers, default=0)))
        probe = self.make_probe()
        self.probe_name = probe_name(probe)
        self.standardize = bool(probe.get_params().get("standardize", False))
        self.fits: list[ControlFit] = []
        self.alt_world: AltWorldFit | None = None
        self.residual: ResidualFit | None = None
        self.lexical: LexicalFit | None = None
        self.twins: dict[int, CacheLike] = {}  # random-init twin caches by seed, rows in this cache's order

    def rows(
        self, control: str, layer: int, split: str, metrics: dict[str, dict[str, float]], seed: int | None = None
    ) -> list[dict]:
        """Tidy rows for ``metrics[target][metric] = value`` at one layer and split."""
        base = {
            "dataset": self.dataset, "model": self.model, "n_layers": self.n_layers, "prompt": self.prompt,
            "layer": int(layer), "rel_depth": layer / self.n_layers if self.n_layers else np.nan,
            "probe": self.probe_name, "control": control, "standardize": self.standardize, "split": split,
            "seed": int(self.seed if seed is None else seed),
        }  # fmt: skip
        return [
            {**base, "target": target, "metric": metric, "value": float(value)}
            for target, values in metrics.items()
            for metric, value in values.items()
        ]

    def fit_predict_many(self, x: np.ndarray, ys: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
        """Fit a fresh probe per target set on the train rows of ``x``; predictions of every row and each fit's
        train-only selection score. One decomposition for all sets when the probe has ``fit_many`` (ridge)."""
        probe, train = self.make_probe(), ~self.is_test
        if hasattr(probe, "fit_many"):
            fitted = probe.fit_many(x[train], [y[train] for y in ys])
        else:
            fitted = [self.make_probe().fit(x[train], y[train]) for y in ys]
        preds = [np.asarray(f.predict(x), dtype=np.float64).reshape(len(x), -1) for f in fitted]
        return preds, [selection_score(f) for f in fitted]

    def layer(self, layer: int, cache: CacheLike | None = None) -> np.ndarray:
        return np.asarray((cache or self.cache).layer(layer), dtype=np.float32)

    def regression_rows(
        self, control: str, layers: Sequence[int], y: np.ndarray, pred: np.ndarray, seed: int | None = None
    ) -> list[dict]:
        """r2/spearman/pearson rows on train and test for ``pred`` against ``y``, repeated at each of ``layers``."""
        out = []
        for split, mask in (("train", ~self.is_test), ("test", self.is_test)):
            metrics = regression_metrics(y[mask], pred[mask], self.target_names)
            for layer in layers:
                out += self.rows(control, layer, split, metrics, seed)
        return out

    def layered(self, control: str, y: np.ndarray, layer_of: Callable[[int], np.ndarray], seed: int | None = None
                ) -> list[dict]:  # fmt: skip
        """Fit the probe to ``y`` at every layer (``layer_of(l)`` gives the features); rows per layer, with the
        selection score on train rows, and the fit kept in ``fits``."""
        fit = ControlFit(control, y, {}, {}, seed)
        shared = self.shared.get(control) if seed is None else None
        rows = []
        for layer in tqdm(self.layers, desc=control, unit="layer", leave=False, disable=not self.progress):
            if shared is not None:
                pred, score = shared.predictions[0][layer], shared.selection[0][layer]
            else:
                (pred,), (score,) = self.fit_predict_many(layer_of(layer), [y])
            fit.predictions[layer], fit.selection[layer] = pred, score
            rows += self.regression_rows(control, [layer], y, pred, seed)
            rows += self.rows(control, layer, "train", {"mean": {SCORE_METRIC: score}}, seed)
        self.fits.append(fit)
        return rows

    def flat(self, control: str, pred: np.ndarray) -> list[dict]:
        """Rows of a layer-free control (its value repeated at every probed layer), the fit kept in ``fits``."""
        self.fits.append(ControlFit(control, self.y, {FLAT: pred}))
        return self.regression_rows(control, self.layers, self.y, pred)


def probe_name(probe: BaseEstimator) -> str:
    """The short name of a probe estimator: ``RidgeProbe`` -> ``ridge``, ``MLPProbe`` -> ``mlp``."""
    name = getattr(probe, "name", None)
    if isinstance(name, str):
        return name
    cls = type(probe).__name__
    return (cls[: -len("Probe")] if cls.endswith("Probe") and cls != "Probe" else cls).lower()


def regression_metrics(y: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """R², Spearman and Pearson per named target and their mean over targets (key ``mean``)."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    pred = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    columns = {"r2": r2_columns(y, pred), "spearman": spearman_columns(y, pred), "pearson": pearson_columns(y, pred)}
    return _per_target(columns, names, np.mean)


def _per_target(
    columns: dict[str, np.ndarray], names: Sequence[str], average: Callable[[list[float]], float]
) -> dict[str, dict[str, float]]:
    """``{target: {metric: value}}`` from one value per target column for each metric, plus ``mean`` = ``average``
    over the targets."""
    per = {name: {metric: float(values[j]) for metric, values in columns.items()} for j, name in enumerate(names)}
    return {**per, "mean": {m: float(average([per[n][m] for n in names])) for m in columns}}


# --- the controls -----------------------------------------------------------------------------------------------


def _shuffled(job: _Job) -> list[dict]:
    """The probe's floor: targets permuted across entities, entities sharing a text get the same new target."""
    shared = job.shared.get("shuffled")
    y = shared.targets[0] if shared else shuffled_targets(job.entities["text"], job.y, seed=job.seed)
    return job.layered("shuffled", y, job.layer)


def shuffled_targets(texts: pd.Series, y: np.ndarray, *, seed: int) -> np.ndarray:
    """Permute targets across distinct texts: every entity of text ``a`` gets the target of the first entity of
    text ``pi(a)``, so identical inputs always get identical (shuffled) targets."""
    codes, uniques = pd.factorize(texts.astype(str))
    first = np.unique(codes, return_index=True)[1]
    perm = np.random.default_rng(seed).permutation(len(uniques))
    return np.asarray(y, dtype=np.float64)[first[perm[codes]]]


def _random_init(job: _Job) -> list[dict]:
    """The same architecture and tokenizer with seeded random weights, through the same extraction and probe: one
    twin per seed (``job.twin_seeds``), each with its own train-selected layer."""
    rows = []
    for twin_seed in job.twin_seeds:
        twin = twin_cache(job, twin_seed)
        job.twins[twin_seed] = twin
        rows += job.layered("random_init", job.y, lambda layer, t=twin: job.layer(layer, t), seed=twin_seed)
    return rows


def twin_cache(job: _Job, twin_seed: int) -> CacheLike:
    """The random-init twin's cache for one seed (``extract.extract_twin`` wrote it; missing, the error names the
    command), its rows in this cache's entity order."""
    from worldprobe.extract.cache import find_twin, open_cache

    path = find_twin(job.cache.manifest, seed=twin_seed, layers=job.layers, workspace=job.workspace)
    twin = open_cache(path)
    position = pd.Series(np.arange(len(twin.entities)), index=twin.entities["entity_id"].astype(str))
    wanted = job.entities["entity_id"].astype(str)
    if not wanted.isin(position.index).all():
        raise WorldprobeError(
            "the random-init cache lacks entities of the model's cache", file=path,
            hint="rebuild both caches from the same dataset table and --limit",
        )  # fmt: skip
    return _Reordered(twin, position[wanted].to_numpy())


class _Reordered:
    """A cache whose rows are read in another order (the twin's rows matched to the model cache's entities)."""

    def __init__(self, cache: CacheLike, rows: np.ndarray) -> None:
        self._cache, self._rows = cache, rows
        self.manifest, self.entities = cache.manifest, cache.entities.iloc[rows].reset_index(drop=True)

    def layer(self, layer: int) -> np.ndarray:
        return np.asarray(self._cache.layer(layer), dtype=np.float32)[self._rows]


def _lexical(job: _Job) -> list[dict]:
    """A ridge on TF-IDF character n-grams of the entity text (``worldprobe.probes.lexical``): what the spelling alone
    gives away; its penalty is recorded (metric ``alpha``, and ``alpha_on_edge`` when it lies on the grid's edge)."""
    job.lexical = lexical_fit(job.entities["text"], [job.y], ~job.is_test, seed=job.seed)
    rows = job.flat("lexical", job.lexical.predictions[0])
    job.fits[-1].alpha, job.fits[-1].alpha_on_edge = job.lexical.alphas[0], job.lexical.on_edge[0]
    settings = {"mean": {"alpha": job.lexical.alphas[0], "alpha_on_edge": float(job.lexical.on_edge[0])}}
    return rows + [row for layer in job.layers for row in job.rows("lexical", layer, "train", settings)]


def _embedding(job: _Job) -> list[dict]:
    """The probe on the input embeddings averaged over the entity's tokens (the model's pooled layer-0 cache,
    ``extract.cache.find_pooled``), drawn as a flat line. The last token's embedding alone is the probe's own layer
    0."""
    (pred,), _ = job.fit_predict_many(pooled_embeddings(job), [job.y])
    return job.flat("embedding", pred)


def pooled_embeddings(job: _Job) -> np.ndarray:
    """The pooled layer 0 of every row of this run, matched by entity_id (the companion must hold every entity)."""
    from worldprobe.extract.cache import find_pooled, open_cache

    path = find_pooled(job.cache.manifest, workspace=job.workspace)
    pooled = open_cache(path)
    position = pd.Series(np.arange(len(pooled.entities)), index=pooled.entities["entity_id"].astype(str))
    wanted = job.entities["entity_id"].astype(str)
    if not wanted.isin(position.index).all():
        raise WorldprobeError(
            "the pooled-embedding cache lacks entities of the model's cache", file=path,
            hint="extract it again with the model cache's --limit (worldprobe probe --control embedding does)",
        )  # fmt: skip
    return np.asarray(pooled.layer(0), dtype=np.float32)[position[wanted].to_numpy()]


def _group_oracle(job: _Job) -> list[dict]:
    """Each entity predicted by its group's train mean (country, state, borough, century, decade, year)."""
    return job.flat("group_oracle", group_means(group_keys(job.entities, job.dataset), job.y, ~job.is_test))


def group_keys(entities: pd.DataFrame, dataset: str) -> pd.Series:
    """The oracle group of every entity (``DatasetSpec.oracle_column``; missing values form their own group)."""
    column = get_spec(dataset).oracle_column
    if column not in entities.columns:
        raise WorldprobeError(f"the entity table has no group column {column!r}", field=column)
    return entities[column].astype("string").fillna("<missing>").reset_index(drop=True)


def group_means(groups: pd.Series, y: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """For every row, the mean of ``y`` over the ``fit_rows`` of its group (the overall mean when it has none)."""
    frame = pd.DataFrame(np.asarray(y, dtype=np.float64).reshape(len(groups), -1))
    means = frame[fit_rows].groupby(groups[fit_rows].to_numpy()).mean()
    out = means.reindex(groups.to_numpy()).to_numpy()
    overall = frame[fit_rows].mean().to_numpy()
    return np.where(np.isnan(out), overall, out)


def _within_group(job: _Job) -> list[dict]:
    """The within-group residual probe at every layer and its lexical twin (``worldprobe.probes.residual``): Pearson r
    and R² of predicted against true offsets from the group's train mean, per split, on entities whose group has
    enough train rows; the twin's r (metric ``lexical_pearson``) repeated at every layer."""
    groups = group_keys(job.entities, job.dataset)
    shared = job.shared.get("within_group")
    if shared is not None:
        fit = residual_fit(groups, job.entities["text"], job.y, job.is_test, shared.predictions[0],
                           shared.selection[0], seed=job.seed)  # fmt: skip
    else:
        fit = fit_residual_probe(job.layer, job.layers, groups, job.entities["text"], job.y, job.is_test,
                                 job.make_probe, seed=job.seed, progress=job.progress)  # fmt: skip
    job.residual = fit
    rows = []
    for split, mask in (("train", ~job.is_test), ("test", job.is_test)):
        keep = mask & fit.eligible
        if keep.sum() < 3:
            continue
        for layer, pred in fit.predictions.items():
            metrics = regression_metrics(fit.residuals[keep], pred[keep], job.target_names)
            rows += job.rows("within_group", layer, split, {t: {"pearson": v["pearson"], "r2": v["r2"]}
                                                             for t, v in metrics.items()})  # fmt: skip
        if fit.lexical is not None:
            lexical = regression_metrics(fit.residuals[keep], fit.lexical[keep], job.target_names)
            for layer in job.layers:
                rows += job.rows("within_group", layer, split, {t: {"lexical_pearson": v["pearson"]}
                                                                 for t, v in lexical.items()})  # fmt: skip
    for layer, score in fit.selection.items():
        rows += job.rows("within_group", layer, "train", {"mean": {SCORE_METRIC: score}})
    return rows


def within_group_metrics(
    groups: pd.Series, y: np.ndarray, pred: np.ndarray, names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Pearson and Spearman of ``pred - group mean(pred)`` with ``y - group mean(y)`` (means over the same rows),
    per target and their mean; groups of one row carry no within-group information and are left out."""
    y, pred = y.reshape(len(y), -1), pred.reshape(len(pred), -1)
    everywhere = np.ones(len(groups), dtype=bool)
    shared = groups.map(groups.value_counts()).to_numpy() > 1
    dy = (y - group_means(groups, y, everywhere))[shared]
    dp = (pred - group_means(groups, pred, everywhere))[shared]
    return _per_target({"pearson": pearson_columns(dy, dp), "spearman": spearman_columns(dy, dp)}, names, np.nanmean)


def predictions_at(job: _Job, layer: int) -> np.ndarray:
    if layer not in job.predictions:
        raise WorldprobeError(f"no main-probe predictions for layer {layer}", field="predictions")
    pred = np.asarray(job.predictions[layer], dtype=np.float64).reshape(len(job.y), -1)
    if pred.shape != job.y.shape:
        raise WorldprobeError(f"predictions of layer {layer} have shape {pred.shape}, targets {job.y.shape}")
    return pred


def _alt_world(job: _Job) -> list[dict]:
    """Jin & Rinard's semantic intervention with worlds matched on what the spelling can learn
    (``worldprobe.probes.altworld``): retrain the same probe on the same activations for each matched world and report
    R²(true) - R²(alternative) per layer, mean and spread over the worlds. The lexical features and each random-init
    twin (at its own selected layer) are fitted to the same worlds and kept in ``job.alt_world`` for the headline.
    Without a sound world (``matched.applicable`` false) no rows are written and the headline says why."""
    shared = job.shared.get("alt_world")
    matched = job.worlds if job.worlds is not None else matched_worlds(
        group_keys(job.entities, job.dataset), job.entities["text"], job.y, ~job.is_test, seed=job.seed,
        margin=job.margin_r2)  # fmt: skip
    fit = AltWorldFit(matched)
    job.alt_world = fit
    if not matched.applicable:
        return []
    worlds = matched.worlds
    rows = []
    names = [*job.target_names, "mean"]
    for layer in tqdm(job.layers, desc="alt_world", unit="layer", leave=False, disable=not job.progress):
        if shared:
            preds = [p[layer] for p in shared.predictions]
            scores = [sel[layer] for sel in shared.selection]
        else:
            preds, scores = job.fit_predict_many(job.layer(layer), worlds)
        fit.model[layer], fit.model_selection[layer] = preds, float(np.mean(scores))
        true = regression_metrics(job.y[job.is_test], predictions_at(job, layer)[job.is_test], job.target_names)
        alt = [
            regression_metrics(y_alt[job.is_test], pred[job.is_test], job.target_names)
            for y_alt, pred in zip(worlds, preds, strict=True)
        ]
        r2 = {n: np.array([a[n]["r2"] for a in alt]) for n in names}
        gap = {n: true[n]["r2"] - r2[n] for n in names}
        metrics = {
            n: {
                "r2": r2[n].mean(), "r2_std": r2[n].std(ddof=1) if len(r2[n]) > 1 else 0.0,
                "r2_gap": gap[n].mean(), "r2_gap_std": gap[n].std(ddof=1) if len(gap[n]) > 1 else 0.0,
                "r2_gap_min": gap[n].min(), "r2_gap_max": gap[n].max(), "n_permutations": len(worlds),
            }
            for n in names
        }  # fmt: skip
        rows += job.rows("alt_world", layer, "test", metrics)
        rows += job.rows("alt_world", layer, "train", {"mean": {SCORE_METRIC: fit.model_selection[layer]}})
    fit.lexical = lexical_fit(job.entities["text"], worlds, ~job.is_test, seed=job.seed).predictions
    for twin_fit in (f for f in job.fits if f.control == "random_init"):
        layer = twin_fit.selected_layer
        preds, _ = job.fit_predict_many(job.layer(layer, job.twins[twin_fit.seed]), worlds)
        fit.random_init[twin_fit.seed] = (layer, preds)
    return rows


_RUNNERS: dict[str, Callable[[_Job], list[dict]]] = {
    "random_init": _random_init,
    "shuffled": _shuffled,
    "lexical": _lexical,
    "embedding": _embedding,
    "group_oracle": _group_oracle,
    "within_group": _within_group,
    "alt_world": _alt_world,
}
