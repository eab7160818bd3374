"""Controls that separate "the model knows" from "the probe learned it" (science.md section 7).

:func:`run_controls` is called by the probe stage with the main probe's predictions and returns tidy rows with the
columns of ``metrics.parquet`` and ``control != "none"``. Layer-free controls (lexical, group_oracle, embedding) repeat
their value at every probed layer so that they draw as flat lines beside the layer curve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from tqdm.auto import tqdm

from worldprobe.datasets.registry import get_spec
from worldprobe.errors import WorldprobeError
from worldprobe.probes.metrics import pearson_columns, r2_columns, spearman_columns
from worldprobe.workspace import Workspace

CONTROLS = ("random_init", "shuffled", "lexical", "embedding", "group_oracle", "within_group", "alt_world")
"""Every control :func:`run_controls` knows, in the order it runs them."""

ALT_WORLD_PERMUTATIONS = 5
"""How many seeded group permutations the alternative-world control averages over."""

LEXICAL_ALPHAS = (0.1, 1.0, 10.0, 100.0)
"""Ridge penalties tried by the lexical control (chosen on a seeded 10% validation part of train)."""

METRIC_COLUMNS = (
    "dataset", "model", "n_layers", "prompt", "layer", "rel_depth", "probe", "control",
    "standardize", "split", "target", "metric", "value", "seed",
)  # fmt: skip


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
) -> pd.DataFrame:
    """Run the named controls and return their tidy metric rows (columns of ``metrics.parquet``).

    ``targets`` holds the target columns in cache order, ``predictions[layer]`` the main probe's predictions for every
    row (columns in target order); the split is ``cache.entities["is_test"]``.
    ``names`` may be ``["all"]`` for every control in :data:`CONTROLS`.
    """
    names = resolve_controls(names)
    entities = cache.entities.reset_index(drop=True)
    if len(entities) != len(targets):
        raise WorldprobeError(f"{len(targets)} target rows for a cache of {len(entities)} entities", field="targets")
    job = _Job(
        dataset=dataset, model=model, prompt=prompt, cache=cache, entities=entities,
        y=targets.to_numpy(dtype=np.float64), target_names=list(targets.columns), layers=list(layers),
        make_probe=make_probe, predictions=predictions, seed=seed, workspace=workspace,
    )  # fmt: skip
    frames = []
    for name in tqdm(names, desc="controls", unit="control"):
        frames.append(_RUNNERS[name](job))
    if not frames:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(METRIC_COLUMNS)]


def resolve_controls(names: Sequence[str]) -> list[str]:
    """The controls to run, in :data:`CONTROLS` order; ``all`` stands for every one; unknown names are an error."""
    unknown = [n for n in names if n not in CONTROLS and n != "all"]
    if unknown:
        raise WorldprobeError(
            f"unknown control(s) {unknown}", field="control", hint=f"known: all, {', '.join(CONTROLS)}"
        )
    return [n for n in CONTROLS if n in names or "all" in names]


class _Job:
    """The inputs shared by every control of one (dataset, model, prompt) run, and the row writer."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)
        self.is_test = self.entities["is_test"].to_numpy(dtype=bool)
        self.n_layers = int(self.cache.manifest.get("n_layers", max(self.layers, default=0)))
        probe = self.make_probe()
        self.probe_name = probe_name(probe)
        self.standardize = bool(probe.get_params().get("standardize", False))

    def rows(self, control: str, layer: int, split: str, metrics: dict[str, dict[str, float]]) -> list[dict]:
        """Tidy rows for ``metrics[target][metric] = value`` at one layer and split."""
        base = {
            "dataset": self.dataset, "model": self.model, "n_layers": self.n_layers, "prompt": self.prompt,
            "layer": int(layer), "rel_depth": layer / self.n_layers if self.n_layers else np.nan,
            "probe": self.probe_name, "control": control, "standardize": self.standardize, "split": split,
            "seed": int(self.seed),
        }  # fmt: skip
        return [
            {**base, "target": target, "metric": metric, "value": float(value)}
            for target, values in metrics.items()
            for metric, value in values.items()
        ]

    def fit_predict(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fit a fresh probe on the train rows of ``x``/``y`` and predict every row."""
        return self.fit_predict_many(x, [y])[0]

    def fit_predict_many(self, x: np.ndarray, ys: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`fit_predict` for several target sets on the same ``x``, sharing one decomposition when the probe
        has ``fit_many`` (the ridge probe)."""
        probe, train = self.make_probe(), ~self.is_test
        if hasattr(probe, "fit_many"):
            fitted = probe.fit_many(x[train], [y[train] for y in ys])
        else:
            fitted = [self.make_probe().fit(x[train], y[train]) for y in ys]
        return [np.asarray(f.predict(x), dtype=np.float64).reshape(len(x), -1) for f in fitted]

    def layer(self, layer: int, cache: CacheLike | None = None) -> np.ndarray:
        return np.asarray((cache or self.cache).layer(layer), dtype=np.float32)

    def regression_rows(self, control: str, layers: Sequence[int], y: np.ndarray, pred: np.ndarray) -> list[dict]:
        """r2/spearman/pearson rows on train and test for ``pred`` against ``y``, repeated at each of ``layers``."""
        out = []
        for split, mask in (("train", ~self.is_test), ("test", self.is_test)):
            metrics = regression_metrics(y[mask], pred[mask], self.target_names)
            for layer in layers:
                out += self.rows(control, layer, split, metrics)
        return out


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


def _shuffled(job: _Job) -> pd.DataFrame:
    """The probe's floor: targets permuted across entities, entities sharing a text get the same new target."""
    y = shuffled_targets(job.entities["text"], job.y, seed=job.seed)
    rows = []
    for layer in tqdm(job.layers, desc="shuffled", unit="layer", leave=False):
        rows += job.regression_rows("shuffled", [layer], y, job.fit_predict(job.layer(layer), y))
    return pd.DataFrame(rows)


def shuffled_targets(texts: pd.Series, y: np.ndarray, *, seed: int) -> np.ndarray:
    """Permute targets across distinct texts: every entity of text ``a`` gets the target of the first entity of
    text ``pi(a)``, so identical inputs always get identical (shuffled) targets."""
    codes, uniques = pd.factorize(texts.astype(str))
    first = np.unique(codes, return_index=True)[1]
    perm = np.random.default_rng(seed).permutation(len(uniques))
    return np.asarray(y, dtype=np.float64)[first[perm[codes]]]


def _random_init(job: _Job) -> pd.DataFrame:
    """The same architecture and tokenizer with seeded random weights, through the same extraction and probe."""
    from worldprobe.extract import open_cache, run_extraction

    limit = int(job.cache.manifest.get("n_entities", len(job.entities)))
    path = run_extraction(
        job.dataset, f"random:{job.model}", job.prompt, workspace=job.workspace, layers=job.layers, limit=limit,
        seed=job.seed,
    )  # fmt: skip
    twin = open_cache(path)
    position = pd.Series(np.arange(len(twin.entities)), index=twin.entities["entity_id"].astype(str))
    wanted = job.entities["entity_id"].astype(str)
    if not wanted.isin(position.index).all():
        raise WorldprobeError(
            "the random-init cache lacks entities of the model's cache", file=path,
            hint="rebuild both caches from the same dataset table and --limit",
        )  # fmt: skip
    rows_of_twin = position[wanted].to_numpy()
    rows = []
    for layer in tqdm(job.layers, desc="random_init", unit="layer", leave=False):
        x = np.asarray(twin.layer(layer), dtype=np.float32)[rows_of_twin]
        rows += job.regression_rows("random_init", [layer], job.y, job.fit_predict(x, job.y))
    return pd.DataFrame(rows)


def _lexical(job: _Job) -> pd.DataFrame:
    """A ridge on TF-IDF character n-grams of the entity text: what the spelling alone gives away."""
    pred = lexical_predictions(job.entities["text"], job.y, job.is_test, seed=job.seed)
    return pd.DataFrame(job.regression_rows("lexical", job.layers, job.y, pred))


def lexical_predictions(texts: pd.Series, y: np.ndarray, is_test: np.ndarray, *, seed: int) -> np.ndarray:
    """Predictions for every row of a ridge on TF-IDF char 1-4-grams fitted on train rows (z-scored targets, the
    penalty picked on a seeded 10% validation part of train)."""
    train = np.flatnonzero(~is_test)
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=2, sublinear_tf=True, dtype=np.float32)
    vectorizer.fit(texts.iloc[train].astype(str))
    x = vectorizer.transform(texts.astype(str))
    mean, std = y[train].mean(axis=0), y[train].std(axis=0) + 1e-12
    z = (y - mean) / std
    rng = np.random.default_rng(seed)
    valid = rng.random(len(train)) < 0.1
    fit_rows, valid_rows = train[~valid], train[valid]
    scores = [
        r2_score(z[valid_rows], Ridge(alpha=a).fit(x[fit_rows], z[fit_rows]).predict(x[valid_rows]))
        for a in LEXICAL_ALPHAS
    ]
    best = LEXICAL_ALPHAS[int(np.argmax(scores))]
    pred = Ridge(alpha=best).fit(x[train], z[train]).predict(x)
    return pred.reshape(len(y), -1) * std + mean


def _embedding(job: _Job) -> pd.DataFrame:
    """The probe on layer 0 (the token embeddings), drawn as a flat line."""
    pred = job.fit_predict(_require_layer(job, 0), job.y)
    return pd.DataFrame(job.regression_rows("embedding", job.layers, job.y, pred))


def _require_layer(job: _Job, layer: int) -> np.ndarray:
    available = list(getattr(job.cache, "layers", [layer]))
    if layer not in available:
        raise WorldprobeError(
            f"the activation cache has no layer {layer}", field="layers",
            hint=f"extract layer {layer} too (cached layers: {available})",
        )  # fmt: skip
    return job.layer(layer)


def _group_oracle(job: _Job) -> pd.DataFrame:
    """Each entity predicted by its group's train mean (country, state, borough, century, decade, year)."""
    groups = group_keys(job.entities, job.dataset)
    pred = group_means(groups, job.y, ~job.is_test)
    return pd.DataFrame(job.regression_rows("group_oracle", job.layers, job.y, pred))


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


def _within_group(job: _Job) -> pd.DataFrame:
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
    return pd.DataFrame(rows)


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


def _alt_world(job: _Job) -> pd.DataFrame:
    """Jin & Rinard's semantic intervention: move whole groups to each other's positions, retrain the same probe on
    the same activations, and report R²(true) - R²(alternative) per layer, mean and spread over permutations."""
    groups = group_keys(job.entities, job.dataset)
    worlds = [
        alternative_world(groups, job.y, seed=s)
        for s in np.random.default_rng(job.seed).integers(0, 2**31, ALT_WORLD_PERMUTATIONS)
    ]
    rows = []
    names = [*job.target_names, "mean"]
    for layer in tqdm(job.layers, desc="alt_world", unit="layer", leave=False):
        x = job.layer(layer)
        true = regression_metrics(job.y[job.is_test], predictions_at(job, layer)[job.is_test], job.target_names)
        alt = [
            regression_metrics(y_alt[job.is_test], pred[job.is_test], job.target_names)
            for y_alt, pred in zip(worlds, job.fit_predict_many(x, worlds), strict=True)
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
    return pd.DataFrame(rows)


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


_RUNNERS: dict[str, Callable[[_Job], pd.DataFrame]] = {
    "random_init": _random_init,
    "shuffled": _shuffled,
    "lexical": _lexical,
    "embedding": _embedding,
    "group_oracle": _group_oracle,
    "within_group": _within_group,
    "alt_world": _alt_world,
}
