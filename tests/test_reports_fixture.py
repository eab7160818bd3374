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
        frame["century"] = (frame["true_year"] // 100).astype(int)
    for column in spec.group_columns:
        if column not in frame:
            frame[column] = rng.choice(["city", "structure", "natural"], n)
    return frame


def _predict(entities: pd.DataFrame, quality: float, rng: np.random.Generator) -> pd.DataFrame:
    out = entities.copy()
    for true in [c for c in entities.columns if c.startswith("true_")]:
        values = entities[true].to_numpy()
        noise = rng.normal(0, values.std() * (1 - quality) + 1e-9, len(values))
        out["pred_" + true[5:]] = values.mean() + quality * (values - values.mean()) + noise
    return out


def _metric_rows(base: dict, layer: int, n_layers: int, r2: float, control: str, seed: int = 0) -> list[dict]:
    rows = []
    targets = {"mean": 0.0} | {t: 0.02 * (-1) ** i for i, t in enumerate(DATASETS[base["dataset"]].targets)}
    for split, shift in (("train", 0.05), ("test", 0.0)):
        for target, offset in targets.items():
            for metric, value in (("r2", r2 + shift), ("spearman", min(0.99, r2 + 0.08 + shift))):
                rows.append(
                    base
                    | dict(layer=layer, rel_depth=layer / n_layers, control=control, split=split, target=target)
                    | dict(metric=metric, value=value + offset, seed=seed)
                )
    return rows


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
    """Write ``root/results/<dataset>__<model>__<prompt>/`` folders as the probe stage does; return ``root/results``."""
    rng = np.random.default_rng(seed)
    results = root / "results"
    for dataset in datasets:
        entities = _entities(dataset, n, rng)
        spec = DATASETS[dataset]
        for model, n_layers in (models or MODELS).items():
            for prompt in prompts:
                penalty = 0.0 if prompt == "empty" else 0.15
                peak = {"nyc_place": 0.3, "historical_figure": 0.75}.get(dataset, 0.85) - penalty - n_layers / 200
                depth = np.arange(n_layers + 1) / n_layers
                curve = dict(enumerate((peak * (1 - np.exp(-6 * depth) - 0.15 * depth**2)).tolist()))
                best = max(curve, key=curve.get)
                base = dict(dataset=dataset, model=model, n_layers=n_layers, prompt=prompt, probe="ridge")
                base |= dict(standardize=True)
                rows = [r for layer, v in curve.items() for r in _metric_rows(base, layer, n_layers, v, "none")]
                if controls and prompt == "empty":
                    for layer, value in curve.items():
                        rows += _metric_rows(base, layer, n_layers, 0.02, "shuffled")
                        rows += _metric_rows(base, layer, n_layers, value * 0.4, "random_init")
                        rows += _metric_rows(base, layer, n_layers, curve[0] + 0.05, "embedding")
                        for control, flat in FLAT_CONTROLS.items():
                            rows += _metric_rows(base, layer, n_layers, flat, control)
                        at = base | dict(layer=layer, rel_depth=layer / n_layers, split="test", target="mean", seed=0)
                        rows.append(at | dict(control="within_group", metric="pearson", value=0.3 * value))
                        for metric, alt in (("r2", 0.6 * value), ("r2_std", 0.03), ("r2_gap", 0.4 * value)):
                            rows.append(at | dict(control="alt_world", metric=metric, value=alt))
                metrics = pd.DataFrame(rows)
                keep = [layer for layer in (0, n_layers // 2, best) if layer != best] + [best]
                predictions = pd.concat(
                    [
                        _predict(entities, curve[layer], rng).assign(
                            dataset=dataset, model=model, prompt=prompt, layer=layer, probe="ridge", control="none"
                        )
                        for layer in keep
                    ],
                    ignore_index=True,
                )
                folder = results / f"{dataset}__{model}__{prompt}"
                folder.mkdir(parents=True, exist_ok=True)
                metrics.to_parquet(folder / "metrics.parquet")
                predictions.to_parquet(folder / "predictions.parquet")
                summary = dict(dataset=dataset, model=model, prompt=prompt, best_layer=best, n_layers=n_layers)
                (folder / "summary.json").write_text(json.dumps(summary | {"test_r2": curve[best]}))
                if holdouts and prompt == "empty":
                    _holdouts(entities, base, best, spec.holdout_columns[0], rng).to_parquet(
                        folder / "holdouts.parquet"
                    )
                if neurons and prompt == "empty":  # the neurons command writes its own folder, without a summary
                    search = results / f"{dataset}__{model}__{prompt}__neurons__0123456789abcdef"
                    search.mkdir()
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
    assert {"dataset", "model", "n_layers", "prompt", "layer", "rel_depth", "probe", "control", "standardize", "split",
            "target", "metric", "value", "seed"} <= set(metrics.columns)  # fmt: skip
    predictions = pd.read_parquet(results / "historical_figure__tiny-b__empty" / "predictions.parquet")
    assert {"true_year", "pred_year", "century", "occupation", "entity_id", "is_test"} <= set(predictions.columns)
    assert len(list(results.iterdir())) == 4 + 4  # probe runs + neuron searches
