"""A generator of realistic results folders (docs/design.md "Results") for the report tests, and its own checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from worldprobe.datasets.registry import DATASETS

MODELS = {"tiny-a": 12, "tiny-b": 18}
PLACES = {
    # dataset -> group column -> (group value, lat centre, lon centre, spread in degrees)
    "world_place": ("country", [("France", 46.5, 2.5, 2.5), ("Japan", 36.5, 138.5, 2.5), ("Brazil", -12, -50, 6),
                                ("Kenya", 0, 38, 2.5), ("Australia", -27, 135, 6), ("Canada", 54, -100, 7)]),
    "us_place": ("state_id", [("CA", 37, -120, 2), ("TX", 31, -99, 2.5), ("NY", 42.5, -75, 1.5),
                              ("FL", 28, -82, 1.5), ("IL", 40, -89, 1.5), ("CO", 39, -105.5, 1.5)]),
    "nyc_place": ("borough", [("Manhattan", 40.78, -73.97, 0.03), ("Brooklyn", 40.65, -73.95, 0.04),
                              ("Queens", 40.72, -73.82, 0.05), ("Bronx", 40.85, -73.88, 0.03),
                              ("Staten Island", 40.58, -74.15, 0.04)]),
}  # fmt: skip
FLAT_CONTROLS = {"lexical": 0.4, "group_oracle": 0.85}
"""Controls without layers; the controls stage repeats their value at every layer (a flat line)."""


def _entities(dataset: str, n: int, rng: np.random.Generator) -> pd.DataFrame:
    spec = DATASETS[dataset]
    frame = pd.DataFrame({"entity_id": [f"{dataset[:3]}{i}" for i in range(n)]})
    frame["name"] = [f"Entity {i} of {dataset}" for i in range(n)]
    frame["text"] = frame["name"]
    frame["is_test"] = rng.random(n) < 0.3
    if spec.kind == "place":
        column, groups = PLACES[dataset]
        picks = rng.integers(0, len(groups), n)
        frame[column] = [groups[p][0] for p in picks]
        frame["true_latitude"] = [groups[p][1] + rng.normal(0, groups[p][3]) for p in picks]
        frame["true_longitude"] = [groups[p][2] + rng.normal(0, groups[p][3]) for p in picks]
    else:
        frame["true_year"] = rng.uniform(-500, 2000, n)
        frame["century"] = (frame["true_year"] // 100).astype(int) * 100
        frame["decade"] = (frame["true_year"] // 10).astype(int) * 10
        frame["pub_year"] = frame["true_year"].astype(int)
    for column in (*spec.group_columns, "entity_type"):
        if column not in frame:
            frame[column] = rng.choice(["city", "structure", "natural"], n)
    return frame


def _predict(y: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """Predictions whose test R² is about ``quality``: shrunk towards the mean, plus noise."""
    noise = rng.normal(0, 1, y.shape) * (y.std(axis=0) * (1 - quality) + 1e-9)
    return y.mean(axis=0) + quality * (y - y.mean(axis=0)) + noise


def _layer_rows(control: str, layer: int, y, pred, is_test, names, seed: int = 0, score: float | None = None):
    from worldprobe.probes.controls import regression_metrics

    rows = []
    for split, mask in (("train", ~is_test), ("test", is_test)):
        for target, values in regression_metrics(y[mask], pred[mask], names).items():
            rows += [dict(control=control, layer=layer, split=split, target=target, metric=m, value=v, seed=seed)
                     for m, v in values.items()]  # fmt: skip
    if score is not None:
        rows.append(dict(control=control, layer=layer, split="train", target="mean", metric="selection_r2",
                         value=score, seed=seed))  # fmt: skip
    return rows


def _run(dataset: str, entities: pd.DataFrame, curve: dict[int, float], controls: bool, rng) -> tuple:
    """Per-layer rows, predictions, fits and the headline of one synthetic run, through the probe stage's own code
    (headline, verdict, interval merge), so the fixture follows the results contract by construction."""
    from worldprobe.probes.altworld import MatchedWorlds
    from worldprobe.probes.controls import FLAT, AltWorldFit, ControlFit, group_means, regression_metrics
    from worldprobe.probes.headline import RunData, headline
    from worldprobe.probes.residual import ResidualFit, residual_targets

    spec = DATASETS[dataset]
    names = list(spec.targets)
    y = entities[[f"true_{t}" for t in names]].to_numpy(dtype=float)
    is_test = entities["is_test"].to_numpy()
    groups = entities[spec.oracle_column].astype(str)
    selected = max(curve, key=curve.get)
    probe = {layer: _predict(y, q, rng) for layer, q in curve.items()}
    rows = [r for k in curve for r in _layer_rows("none", k, y, probe[k], is_test, names, score=curve[k])]
    fits, alt, residual = [], None, None
    if controls:
        shuffled = y[rng.permutation(len(y))]
        fits.append(ControlFit("shuffled", shuffled, {k: _predict(shuffled, 0.02, rng) for k in curve},
                               {k: 0.0 for k in curve}))  # fmt: skip
        for seed in (0, 1, 2):
            fits.append(ControlFit("random_init", y, {k: _predict(y, 0.4 * q, rng) for k, q in curve.items()},
                                   {k: 0.4 * q for k, q in curve.items()}, seed=seed))  # fmt: skip
        fits.append(ControlFit("embedding", y, {FLAT: _predict(y, curve[0] + 0.05, rng)}))
        for control, quality in FLAT_CONTROLS.items():
            pred = _predict(y, quality, rng) if control == "lexical" else group_means(groups, y, ~is_test)
            fits.append(ControlFit(control, y, {FLAT: pred}))
        for fit in fits:
            for layer in curve:
                at = fit.at(layer)
                rows += _layer_rows(fit.control, layer, fit.y, at, is_test, names, fit.seed or 0)
        codes, uniques = pd.factorize(groups)
        centroids = pd.DataFrame(y[~is_test]).groupby(codes[~is_test]).mean().reindex(range(len(uniques))).fillna(0)
        worlds = [y + (centroids.to_numpy()[np.roll(np.arange(len(uniques)), s)[codes]] - centroids.to_numpy()[codes])
                  for s in (1, 2, 3)]  # fmt: skip
        matched = MatchedWorlds(worlds, "", lexical_true=0.3, lexical_worlds=[0.3] * 3, candidates=3, matched=3)
        alt = AltWorldFit(matched, {k: [_predict(w, 0.6 * q, rng) for w in worlds] for k, q in curve.items()},
                          {k: 0.6 * q for k, q in curve.items()}, lexical=[_predict(w, 0.3, rng) for w in worlds])
        eligible, offsets, n_groups = residual_targets(groups, y, ~is_test)
        residual = ResidualFit(eligible, offsets, {k: np.where(eligible[:, None], _predict(np.nan_to_num(offsets),
                                                                                          0.3 * q, rng), np.nan)
                                                   for k, q in curve.items()},
                               {k: 0.3 * q for k, q in curve.items()},
                               np.where(eligible[:, None], _predict(np.nan_to_num(offsets), 0.05, rng), np.nan),
                               groups=n_groups)  # fmt: skip
        keep = is_test & eligible
        for layer, q in curve.items():
            at = dict(layer=layer, split="test", target="mean", seed=0)
            within = regression_metrics(offsets[keep], residual.predictions[layer][keep], names)["mean"]["pearson"]
            rows.append(at | dict(control="within_group", metric="pearson", value=within))
            rows += [at | dict(control="alt_world", metric=m, value=v) for m, v in
                     (("r2", 0.6 * q), ("r2_std", 0.03), ("r2_gap", 0.4 * q))]  # fmt: skip
    top = headline(RunData(
        kind=spec.kind, target_names=names, y=y, is_test=is_test, groups=groups.to_numpy(),
        entity_type=entities["entity_type"].astype(str).to_numpy(), probe=probe, selected_layer=selected, fits=fits,
        alt_world=alt, residual=residual, seed=0, resamples=200, test_resamples=1000,
    ))  # fmt: skip
    return rows, probe, fits, selected, top, residual


def write_results(
    root: Path,
    datasets: tuple[str, ...] = ("world_place", "us_place", "nyc_place", "historical_figure"),
    models: dict[str, int] | None = None,
    prompts: tuple[str, ...] = ("empty", "random"),
    controls: bool = True,
    holdouts: bool = True,
    neurons: bool = True,
    n: int = 300,
    seed: int = 0,
) -> Path:
    """Write ``root/results/<dataset>__<model>__<prompt>/`` folders as the probe stage does, and the datasets'
    build reports whose fingerprint they record (so they are current); return ``root/results``."""
    from worldprobe.probes.experiments import with_intervals
    from worldprobe.probes.verdict import verdict

    rng = np.random.default_rng(seed)
    results = root / "results"
    (root / "datasets").mkdir(parents=True, exist_ok=True)
    for dataset in datasets:
        entities = _entities(dataset, n, rng)
        spec = DATASETS[dataset]
        fingerprint = f"fixture-{dataset}-{n}-{seed}"
        (root / "datasets" / f"{dataset}.build.json").write_text(build_report_of(dataset, fingerprint))
        for model, n_layers in (models or MODELS).items():
            for prompt in prompts:
                penalty = 0.0 if prompt == "empty" else 0.15
                peak = {"nyc_place": 0.3, "historical_figure": 0.75}.get(dataset, 0.85) - penalty - n_layers / 200
                depth = np.arange(n_layers + 1) / n_layers
                curve = dict(enumerate((peak * (1 - np.exp(-6 * depth) - 0.15 * depth**2)).tolist()))
                rows, probe, fits, best, top, residual = _run(dataset, entities, curve, controls and prompt == "empty",
                                                              rng)  # fmt: skip
                n_test = int(entities["is_test"].sum())
                metrics = with_intervals(pd.DataFrame(rows), top.rows, fits, best, seed=0, n_train=n - n_test,
                                         n_test=n_test, own_layers={"within_group": residual.selected_layer}
                                         if residual is not None else None)  # fmt: skip
                metrics = metrics.assign(dataset=dataset, model=model, n_layers=n_layers, prompt=prompt, probe="ridge",
                                         standardize=True)  # fmt: skip
                metrics["rel_depth"] = metrics["layer"] / n_layers
                keep = [layer for layer in (0, n_layers // 2, best) if layer != best] + [best]
                frames = []
                for layer in keep:
                    frame = entities.copy()
                    for j, target in enumerate(spec.targets):
                        frame[f"pred_{target}"] = probe[layer][:, j]
                    frames.append(frame.assign(dataset=dataset, model=model, prompt=prompt, layer=layer, probe="ridge",
                                               control="none", seed=0))  # fmt: skip
                predictions = pd.concat(frames, ignore_index=True)
                folder = results / f"{dataset}__{model}__{prompt}"
                folder.mkdir(parents=True, exist_ok=True)
                metrics.to_parquet(folder / "metrics.parquet")
                predictions.to_parquet(folder / "predictions.parquet")
                summary = dict(run_key=f"fixture-{dataset}-{model}-{prompt}", dataset=dataset, model=model,
                               prompt=prompt, probe="ridge", kind=spec.kind, n_layers=n_layers, selected_layer=best,
                               headline=top.summary, complete=True,
                               verdict=verdict(top.summary, kind=spec.kind, group_column=spec.oracle_column,
                                               n_layers=n_layers),
                               cache={"dataset_fingerprint": fingerprint})  # fmt: skip
                (folder / "summary.json").write_text(json.dumps(summary))
                if holdouts and prompt == "empty":
                    base = dict(dataset=dataset, model=model, prompt=prompt, probe="ridge")
                    _holdouts(entities, base, best, spec.holdout_columns[0], rng).to_parquet(
                        folder / "holdouts.parquet"
                    )
                if neurons and prompt == "empty":  # the neurons command writes its own folder and record
                    search = results / f"{dataset}__{model}__{prompt}__neurons__0123456789abcdef"
                    search.mkdir()
                    (search / "neurons.json").write_text(json.dumps(
                        {"dataset": dataset, "model": model, "cache": {"dataset_fingerprint": fingerprint}}))
                    _neurons(dataset, model, n_layers, spec.targets, rng).to_parquet(search / "neurons.parquet")
    return results


def _holdouts(entities: pd.DataFrame, base: dict, layer: int, column: str, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for block, count in entities[column].value_counts().head(6).items():
        nominal = rng.uniform(0.05, 0.15)
        for setting, value in (("nominal", nominal), ("held_out", nominal + rng.uniform(0.02, 0.15))):
            rows.append(
                {k: base[k] for k in ("dataset", "model", "prompt", "probe")}
                | dict(layer=layer, column=column, block=str(block), n_rows=int(count), setting=setting)
                | dict(target="mean", metric="proximity", value=value)
            )
    table = pd.DataFrame(rows)
    mean = table.groupby(["setting", "metric"], as_index=False).agg(n_rows=("n_rows", "sum"), value=("value", "mean"))
    first = table.iloc[0]
    return pd.concat(
        [table, mean.assign(**{c: first[c] for c in table.columns if c not in mean and c != "block"}, block="(mean)")]
    )


def _neurons(dataset: str, model: str, n_layers: int, targets: tuple[str, ...], rng) -> pd.DataFrame:
    rows = []
    for target in targets:
        for rank in range(8):
            pearson = 0.7 - 0.05 * rank
            rows.append(
                dict(dataset=dataset, model=model, layer=int(rng.integers(1, n_layers)), kind="mlp")
                | dict(neuron=int(rng.integers(0, 1536)), target=target, rank=rank, train_pearson=pearson)
                | dict(test_spearman=pearson - rng.uniform(0, 0.1), test_r2=pearson**2 - 0.05)
                | dict(cos_in=rng.uniform(-0.3, 0.3), cos_out=rng.uniform(-0.3, 0.3))
            )
    return pd.DataFrame(rows)


def test_fixture_follows_the_design_columns(tmp_path):
    results = write_results(tmp_path, datasets=("world_place", "historical_figure"), prompts=("empty",), n=40)
    metrics = pd.read_parquet(results / "world_place__tiny-a__empty" / "metrics.parquet")
    from worldprobe.probes.results import METRIC_COLUMNS

    assert set(METRIC_COLUMNS) <= set(metrics.columns)
    predictions = pd.read_parquet(results / "historical_figure__tiny-b__empty" / "predictions.parquet")
    assert {"true_year", "pred_year", "century", "occupation", "entity_id", "is_test"} <= set(predictions.columns)
    assert len(list(results.iterdir())) == 4 + 4  # probe runs + neuron searches


def build_report_of(dataset: str, fingerprint: str) -> str:
    """A build report (``<dataset>.build.json``) of a fixture table: its fingerprint is what the stale check reads."""
    from worldprobe.datasets.table import BuildReport

    return BuildReport(dataset=dataset, source="fixture", inputs=[], rows_in=0, rows_out=0, dropped={}, split_rule="",
                       seed=0, fingerprint=fingerprint).to_json()  # fmt: skip
