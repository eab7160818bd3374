"""Controls that separate "the model knows" from "the probe learned it" (science.md section 7).

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
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from tqdm.auto import tqdm

from worldprobe.config import RANDOM_INIT_SEEDS
from worldprobe.datasets.registry import get_spec
from worldprobe.errors import WorldprobeError
from worldprobe.probes.metrics import pearson_columns, r2_columns, spearman_columns
from worldprobe.probes.results import CONTROLS, LAYER_ROW_COLUMNS
from worldprobe.probes.selection import SCORE_METRIC, select_layer, selection_score
from worldprobe.workspace import Workspace

ALT_WORLD_PERMUTATIONS = 5
"""How many seeded group permutations the alternative-world control averages over."""


FLAT = -1
"""The ``predictions`` key of a layer-free control (lexical, group_oracle, embedding)."""

LEXICAL_ALPHAS = (0.1, 1.0, 10.0, 100.0)
"""Ridge penalties tried by the lexical control (chosen on a seeded 10% validation part of train)."""


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
    """The alternative worlds (targets of every row) and what each feature set predicted for them: the probe's
    activations per layer, the lexical features, and each random-init twin at its own selected layer."""

    worlds: list[np.ndarray]
    model: dict[int, list[np.ndarray]]
    model_selection: dict[int, float]
    lexical: list[np.ndarray] | None = None
    random_init: dict[int, tuple[int, list[np.ndarray]]] = field(default_factory=dict)  # seed -> (layer, preds)


@dataclass
class SharedFits:
    """Fits of a control's target sets made in the probe's own layer sweep, on the same decomposition per layer as
    the probe (``layer_sweep(extra=...)``): the targets, and per set the predictions and selection score per layer."""

    targets: list[np.ndarray]
    predictions: list[dict[int, np.ndarray]]
    selection: list[dict[int, float]]


SHARED_CONTROLS = ("shuffled", "alt_world")
"""Controls whose probes read the same activations as the probe itself, so their fits can share its decomposition."""


def control_targets(names: Sequence[str], entities: pd.DataFrame, y: np.ndarray, dataset: str, seed: int
                    ) -> dict[str, list[np.ndarray]]:  # fmt: skip
    """The target sets of the shared controls among ``names``: the permuted targets of ``shuffled`` and the
    alternative worlds of ``alt_world`` (the same ones :func:`run_controls` would draw)."""
    names = resolve_controls(names)
    out: dict[str, list[np.ndarray]] = {}
    if "shuffled" in names:
        out["shuffled"] = [shuffled_targets(entities["text"].reset_index(drop=True), y, seed=seed)]
    if "alt_world" in names:
        out["alt_world"] = alternative_worlds(group_keys(entities.reset_index(drop=True), dataset), y, seed=seed)
    return out


def alternative_worlds(groups: pd.Series, y: np.ndarray, *, seed: int) -> list[np.ndarray]:
    """:data:`ALT_WORLD_PERMUTATIONS` seeded alternative worlds (see :func:`alternative_world`)."""
    return [alternative_world(groups, y, seed=s)
            for s in np.random.default_rng(seed).integers(0, 2**31, ALT_WORLD_PERMUTATIONS)]  # fmt: skip


@dataclass
class ControlRun:
    """Tidy metric rows (columns of ``metrics.parquet``) and the fits behind them."""

    rows: pd.DataFrame
    fits: list[ControlFit]
    alt_world: AltWorldFit | None = None


class CacheLike(Protocol):
    """What the controls need of an activation cache (``worldprobe.extract.ActivationCache`` fits)."""

    manifest: dict[str, Any]
    entities: pd.DataFrame

    def layer(self, layer: int) -> np.ndarray: ...


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
    make_probe: Callable[[], BaseEstimator],
    predictions: dict[int, np.ndarray],
    seed: int,
    selected_layer: int | None = None,
    random_init_seeds: int = RANDOM_INIT_SEEDS,
    shared: dict[str, SharedFits] | None = None,
    progress: bool = True,
) -> ControlRun:
    """Run the named controls; return their tidy metric rows (columns of ``metrics.parquet``) and their fits.

    ``targets`` holds the target columns in cache order, ``predictions[layer]`` the main probe's predictions for every
    row (columns in target order); the split is ``cache.entities["is_test"]``. ``selected_layer`` is the probe's
    train-selected layer (default: the deepest of ``layers``); ``random_init`` runs ``random_init_seeds`` twins.
    ``shared`` holds fits the probe's layer sweep already made for shuffled / alt_world (not refitted here).
    ``names`` may be ``["all"]`` for every control in :data:`CONTROLS`.
    """
    names = resolve_controls(names)
    entities = cache.entities.reset_index(drop=True)
    if len(entities) != len(targets):
        raise WorldprobeError(f"{len(targets)} target rows for a cache of {len(entities)} entities", field="targets")
    if random_init_seeds < 1:
        raise WorldprobeError(f"random_init_seeds must be at least 1, not {random_init_seeds}", field="random_init")
    job = _Job(
        dataset=dataset, model=model, prompt=prompt, cache=cache, entities=entities,
        y=targets.to_numpy(dtype=np.float64), target_names=list(targets.columns), layers=list(layers),
        make_probe=make_probe, predictions=predictions, seed=seed, workspace=workspace,
        selected_layer=max(layers) if selected_layer is None else int(selected_layer),
        twin_seeds=[seed + i for i in range(random_init_seeds)], shared=shared or {}, progress=progress,
    )  # fmt: skip
    frames = [pd.DataFrame(_RUNNERS[name](job)) for name in tqdm(names, desc="controls", unit="control",
                                                                            disable=not progress)]
    rows = pd.concat(frames, ignore_index=True)[list(LAYER_ROW_COLUMNS)] if frames else pd.DataFrame(
        columns=list(LAYER_ROW_COLUMNS))  # fmt: skip
    return ControlRun(rows, job.fits, job.alt_world)


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
    """A ridge on TF-IDF character n-grams of the entity text: what the spelling alone gives away."""
    return job.flat("lexical", lexical_predictions(job.entities["text"], job.y, job.is_test, seed=job.seed))


def lexical_predictions(texts: pd.Series, y: np.ndarray, is_test: np.ndarray, *, seed: int) -> np.ndarray:
    """Predictions for every row of a ridge on TF-IDF char 1-4-grams fitted on train rows (z-scored targets, the
    penalty picked on a seeded 10% validation part of train)."""
    return lexical_predictions_many(texts, [y], is_test, seed=seed)[0]


def lexical_predictions_many(
    texts: pd.Series, ys: Sequence[np.ndarray], is_test: np.ndarray, *, seed: int
) -> list[np.ndarray]:
    """:func:`lexical_predictions` for several target sets on the same texts (one vectoriser; each set picks its
    own penalty on the same validation rows)."""
    train = np.flatnonzero(~is_test)
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=2, sublinear_tf=True, dtype=np.float32)
    vectorizer.fit(texts.iloc[train].astype(str))
    x = vectorizer.transform(texts.astype(str))
    ys = [np.asarray(y, dtype=np.float64).reshape(len(texts), -1) for y in ys]
    stacked = np.hstack(ys)
    sets = np.repeat(np.arange(len(ys)), [y.shape[1] for y in ys])
    mean, std = stacked[train].mean(axis=0), stacked[train].std(axis=0) + 1e-12
    z = (stacked - mean) / std
    valid = np.random.default_rng(seed).random(len(train)) < 0.1
    fit_rows, valid_rows = train[~valid], train[valid]
    scores = np.empty((len(LEXICAL_ALPHAS), len(ys)))
    for i, alpha in enumerate(LEXICAL_ALPHAS):
        guess = Ridge(alpha=alpha).fit(x[fit_rows], z[fit_rows]).predict(x[valid_rows]).reshape(len(valid_rows), -1)
        per_column = r2_columns(z[valid_rows], guess)
        scores[i] = [per_column[sets == s].mean() for s in range(len(ys))]
    best = scores.argmax(axis=0)
    out = np.empty_like(z)
    for alpha_index in np.unique(best):
        cols = np.flatnonzero(np.isin(sets, np.flatnonzero(best == alpha_index)))
        fitted = Ridge(alpha=LEXICAL_ALPHAS[alpha_index]).fit(x[train], z[train][:, cols])
        out[:, cols] = fitted.predict(x).reshape(len(texts), -1)
    pred = out * std + mean
    return [pred[:, sets == s] for s in range(len(ys))]


def _embedding(job: _Job) -> list[dict]:
    """The probe on layer 0 (the token embeddings), drawn as a flat line."""
    (pred,), _ = job.fit_predict_many(_require_layer(job, 0), [job.y])
    return job.flat("embedding", pred)


def _require_layer(job: _Job, layer: int) -> np.ndarray:
    available = list(getattr(job.cache, "layers", [layer]))
    if layer not in available:
        raise WorldprobeError(
            f"the activation cache has no layer {layer}", field="layers",
            hint=f"extract layer {layer} too (cached layers: {available})",
        )  # fmt: skip
    return job.layer(layer)


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
    """Correlation of the main probe with the truth after subtracting group means from both, per split."""
    groups = group_keys(job.entities, job.dataset)
    rows = []
    for layer in job.layers:
        pred = np.asarray(predictions_at(job, layer), dtype=np.float64)
        for split, mask in (("train", ~job.is_test), ("test", job.is_test)):
            metrics = within_group_metrics(
                groups[mask].reset_index(drop=True), job.y[mask], pred[mask], job.target_names
            )
            rows += job.rows("within_group", layer, split, metrics)
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
    """Jin & Rinard's semantic intervention: move whole groups to each other's positions, retrain the same probe on
    the same activations, and report R²(true) - R²(alternative) per layer, mean and spread over permutations.

    The same worlds are fitted from the lexical features and from each random-init twin (at its own selected layer)
    and kept in ``job.alt_world``: neighbouring groups often have similar spellings, so the model's gap is evidence
    only beyond theirs (science.md section 7)."""
    shared = job.shared.get("alt_world")
    worlds = shared.targets if shared else alternative_worlds(group_keys(job.entities, job.dataset), job.y,
                                                               seed=job.seed)  # fmt: skip
    fit = AltWorldFit(worlds, {}, {})
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
    fit.lexical = lexical_predictions_many(job.entities["text"], worlds, job.is_test, seed=job.seed)
    for twin_fit in (f for f in job.fits if f.control == "random_init"):
        layer = twin_fit.selected_layer
        preds, _ = job.fit_predict_many(job.layer(layer, job.twins[twin_fit.seed]), worlds)
        fit.random_init[twin_fit.seed] = (layer, preds)
    job.alt_world = fit
    return rows


def alternative_world(groups: pd.Series, y: np.ndarray, *, seed: int) -> np.ndarray:
    """Targets of a world where whole groups swap positions as rigid blocks.

    Group ``g`` moves to where group ``pi(g)`` was: each entity keeps its offset from its group's centroid (the mean
    target of the group) and takes ``pi(g)``'s centroid. ``pi`` is a seeded cyclic permutation, so no group stays put
    when there are at least two.
    """
    y = np.asarray(y, dtype=np.float64).reshape(len(groups), -1)
    codes, uniques = pd.factorize(groups)
    if len(uniques) < 2:
        raise WorldprobeError("the alternative world needs at least two groups", field=str(groups.name))
    centroids = pd.DataFrame(y).groupby(codes).mean().sort_index().to_numpy()
    order = np.random.default_rng(seed).permutation(len(uniques))
    destination = np.empty(len(uniques), dtype=int)
    destination[order] = np.roll(order, -1)
    return y - centroids[codes] + centroids[destination[codes]]


_RUNNERS: dict[str, Callable[[_Job], list[dict]]] = {
    "random_init": _random_init,
    "shuffled": _shuffled,
    "lexical": _lexical,
    "embedding": _embedding,
    "group_oracle": _group_oracle,
    "within_group": _within_group,
    "alt_world": _alt_world,
}
