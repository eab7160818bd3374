"""`worldprobe probe` end to end on small activation caches written in the documented format (extract's
CacheWriter): the layer sweep, results files, skipping finished work, held-out blocks, new targets, transfer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from worldprobe.errors import WorldprobeError
from worldprobe.extract.cache import entity_order_sha256, open_cache
from worldprobe.extract.writer import CacheWriter
from worldprobe.probes import compare_models, compare_prompts, cross_prompt_transfer, probe_cache, run_probe
from worldprobe.probes.options import ProbeOptions
from worldprobe.probes.results import METRIC_COLUMNS, read_metrics, read_summary

N_LAYERS, D = 4, 24
CENTRES = {"France": (46.0, 2.0), "Japan": (36.0, 138.0), "Brazil": (-10.0, -52.0), "United Kingdom": (54.0, -2.0),
           "Kenya": (0.0, 38.0), "Canada": (56.0, -100.0)}  # fmt: skip


def world_entities(per_country: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for country, (lat, lon) in CENTRES.items():
        for i in range(per_country):
            label = "England" if country == "United Kingdom" and i % 2 else country  # an alias to canonicalise
            rows.append({"latitude": lat + rng.normal(0, 3), "longitude": lon + rng.normal(0, 3), "country": label,
                         "entity_type": ("populated_place", "structure")[i % 2],
                         "population": float(rng.integers(0, 10**6)) if i % 7 else np.nan})  # fmt: skip
    table = pd.DataFrame(rows)
    table.insert(0, "entity_id", [f"w{i:04d}" for i in range(len(table))])
    table.insert(1, "name", [f"place {i}" for i in range(len(table))])
    table.insert(2, "text", table["name"])
    table["is_test"] = np.random.default_rng(seed + 1).random(len(table)) < 0.25
    table["source"] = "synthetic"
    return table


def write_cache(
    workspace, entities: pd.DataFrame, prompt: str = "empty", noise: float = 1.0, seed: int = 0,
    model: str = "tiny", n_layers: int = N_LAYERS,
):  # fmt: skip
    """A cache whose layer l encodes (lat, lon, log population) more cleanly as l grows (layer 0: nothing)."""
    rng = np.random.default_rng(seed)
    signal = np.column_stack([entities["latitude"], entities["longitude"], np.log10(entities["population"] + 1)])
    signal = np.nan_to_num(signal)
    mixing = rng.normal(size=(3, D))
    manifest = {
        "dataset": "world_place", "dataset_fingerprint": "synthetic", "model": model, "model_source": "test",
        "quantization": None, "dtype": "float32", "prompt": prompt, "aggregation": "last", "seed": 0,
        "layers": list(range(n_layers + 1)), "n_layers": n_layers, "d_model": D, "n_entities": len(entities),
        "entity_order_sha256": entity_order_sha256(entities["entity_id"]),
    }  # fmt: skip
    path = workspace.activations / f"world_place__{model}__{prompt}"
    with CacheWriter.open(path, manifest, entities) as writer:
        for layer in range(n_layers + 1):
            acts = (layer / n_layers) * signal @ mixing + rng.normal(0, noise, size=(len(entities), D))
            acts[:, 0] *= 50  # an outlier dimension
            writer.write(layer, np.arange(len(entities)), acts.astype(np.float32))
        writer.commit(1, len(entities), done=True)
        writer.finish()
    return open_cache(path)


@pytest.fixture
def cached(workspace):
    entities = world_entities()
    return workspace, write_cache(workspace, entities), entities


def test_layer_sweep_writes_results(cached):
    workspace, cache, entities = cached
    folder = run_probe("world_place", "tiny", "empty", workspace=workspace, progress=False)
    metrics = read_metrics(folder)
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert set(metrics["layer"]) == set(range(N_LAYERS + 1)) and set(metrics["split"]) == {"train", "test"}
    # without controls: the probe's rows only (its own within-group r at the selected layer is metric
    # within_group_pearson; the within_group control is the residual probe, not run here)
    assert set(metrics["control"]) == {"none"} and metrics["standardize"].all()
    assert len(metrics.query("metric == 'within_group_pearson'")) == 1
    plain = metrics.query("control == 'none' and subset == 'all'")
    r2 = plain.query("split == 'test' and target == 'mean' and metric == 'r2'").set_index("layer")["value"]
    assert r2[0] < 0.1 and r2[N_LAYERS] > 0.9  # layer 0 holds no signal, the last layer a clean one
    assert set(metrics.query("layer == 4 and split == 'test'")["metric"]) >= {
        "r2", "spearman", "pearson", "mae", "haversine_km", "proximity", "median_haversine_km"}  # fmt: skip
    assert metrics.query("metric == 'rel_depth'").empty and (metrics["rel_depth"] == metrics["layer"] / 4).all()
    summary = read_summary(folder)
    score = plain.query("metric == 'selection_r2'").set_index("layer")["value"]
    assert summary["selected_layer"] == int(score.idxmax()) == N_LAYERS and summary["complete"]
    assert "leave-one-out" in summary["selection_criterion"]
    assert (metrics["selected_layer"] == N_LAYERS).all()
    head = summary["headline"]
    assert head["probe"]["r2"]["value"] == pytest.approx(r2[N_LAYERS])
    assert head["probe"]["r2"]["low"] < r2[N_LAYERS] < head["probe"]["r2"]["high"]
    assert head["n_test"] == int(entities["is_test"].sum()) == head["probe"]["r2"]["n"]
    row = plain.query("layer == @N_LAYERS and split == 'test' and target == 'mean' and metric == 'r2'").iloc[0]
    assert (row["ci_low"], row["ci_high"], row["n"]) == (head["probe"]["r2"]["low"], head["probe"]["r2"]["high"],
                                                         head["n_test"])  # fmt: skip
    assert plain.query("layer == 0 and split == 'test'")["ci_low"].isna().all()  # intervals only where reported
    upper = summary["upper_bound"]
    assert upper["test_r2"] == pytest.approx(r2.max()) and "upper bound" in upper["note"]
    assert summary["verdict"]["label"] == "unchecked (no lexical control)"
    preds = pd.read_parquet(folder / "predictions.parquet")
    assert set(preds["layer"]) == {summary["selected_layer"]} and len(preds) == len(entities)
    assert {"true_latitude", "pred_latitude", "true_longitude", "pred_longitude", "country"} <= set(preds.columns)
    np.testing.assert_allclose(preds["true_latitude"], entities["latitude"])


def test_the_selected_layer_never_depends_on_test_rows(workspace):
    """Scrambling the test rows' targets changes test metrics but not the selection, nor anything on train rows."""
    entities = world_entities()
    write_cache(workspace, entities, model="tiny")
    scrambled = entities.copy()
    test = scrambled["is_test"].to_numpy()
    rng = np.random.default_rng(7)
    scrambled.loc[test, "latitude"] = rng.uniform(-80, 80, test.sum())
    scrambled.loc[test, "longitude"] = rng.uniform(-170, 170, test.sum())
    write_cache(workspace, scrambled, model="tiny-scrambled")  # same activations (same seed and signal on train)
    runs = [read_summary(run_probe("world_place", m, workspace=workspace, progress=False))
            for m in ("tiny", "tiny-scrambled")]  # fmt: skip
    metrics = [read_metrics(run_probe("world_place", m, workspace=workspace, progress=False))
               for m in ("tiny", "tiny-scrambled")]  # fmt: skip
    assert runs[0]["selected_layer"] == runs[1]["selected_layer"]
    assert runs[0]["selection"] == runs[1]["selection"]
    train = [m.query("split == 'train' and control == 'none'").sort_values(["layer", "target", "metric"])["value"]
             for m in metrics]  # fmt: skip
    np.testing.assert_allclose(train[0].to_numpy(), train[1].to_numpy())
    assert runs[0]["headline"]["probe"]["r2"]["value"] != runs[1]["headline"]["probe"]["r2"]["value"]


def test_same_inputs_are_skipped_and_results_are_deterministic(cached, monkeypatch):
    workspace, _, _ = cached
    first = run_probe("world_place", "tiny", workspace=workspace, layers=[2, 4], progress=False)
    before = read_metrics(first)
    import worldprobe.probes.experiments as experiments

    def boom(*args, **kwargs):
        raise AssertionError("recomputed a finished run")

    monkeypatch.setattr(experiments, "layer_sweep", boom)
    assert run_probe("world_place", "tiny", workspace=workspace, layers=[2, 4], progress=False) == first
    monkeypatch.undo()
    other = run_probe(
        "world_place",
        "tiny",
        workspace=workspace,
        layers=[2, 4],
        progress=False,
        options=ProbeOptions(standardize=False),
    )
    assert other != first
    (first / "summary.json").unlink()  # an unfinished run is recomputed, identically
    again = run_probe("world_place", "tiny", workspace=workspace, layers=[2, 4], progress=False)
    pd.testing.assert_frame_equal(read_metrics(again), before)
    assert set(pd.read_parquet(again / "predictions.parquet")["layer"]) == {2, 4}


def test_standardize_is_recorded_and_matters_with_outlier_dimensions(cached):
    workspace, _, _ = cached
    on = read_metrics(run_probe("world_place", "tiny", workspace=workspace, layers=[4], progress=False))
    off = read_metrics(
        run_probe(
            "world_place",
            "tiny",
            workspace=workspace,
            layers=[4],
            progress=False,
            options=ProbeOptions(standardize=False),
        )
    )
    assert on["standardize"].all() and not off["standardize"].any()
    alpha = lambda m: m.query("metric == 'alpha'")["value"].item()  # noqa: E731
    assert alpha(on) != alpha(off)


def test_holdout_blocks_by_country_and_type(cached):
    workspace, _, entities = cached
    folder = run_probe(
        "world_place",
        "tiny",
        workspace=workspace,
        progress=False,
        options=ProbeOptions(holdouts=("country", "entity_type")),
    )
    hold = pd.read_parquet(folder / "holdouts.parquet")
    countries = hold.query("column == 'country'")
    assert set(countries["block"]) == {*CENTRES, "(mean)"}  # "England" rows joined the United Kingdom block
    uk = countries.query("block == 'United Kingdom' and setting == 'held_out' and metric == 'haversine_km'")
    assert uk["n_rows"].item() == 60
    nominal = countries.query("block == 'United Kingdom' and setting == 'nominal' and metric == 'haversine_km'")
    assert nominal["n_rows"].item() == int(entities.query("country in ['United Kingdom', 'England']")["is_test"].sum())
    # never having seen a country costs accuracy, but the probe still places it on the right continent
    assert uk["value"].item() > nominal["value"].item()
    assert uk["value"].item() < 4000
    types = hold.query("column == 'entity_type' and block != '(mean)'")
    assert set(types["block"]) == {"populated_place", "structure"}
    mean = hold.query("block == '(mean)' and setting == 'held_out' and metric == 'r2' and target == 'mean'")
    per_block = hold.query("block != '(mean)' and setting == 'held_out' and metric == 'r2' and target == 'mean'")
    assert mean.groupby("column")["value"].first().to_dict() == pytest.approx(
        per_block.groupby("column")["value"].mean().to_dict()
    )


def test_new_target_on_an_old_cache(cached):
    workspace, cache, entities = cached
    folder = run_probe(
        "world_place",
        "tiny",
        workspace=workspace,
        target="population",
        layers=[0, 4],
        progress=False,
        options=ProbeOptions(log_target=True),
    )
    summary = read_summary(folder)
    assert summary["targets"] == ["log10_population"]
    dropped = int((entities["population"].isna() | (entities["population"] <= 0)).sum())
    assert summary["rows"]["dropped_no_target"] == dropped > 0
    r2 = read_metrics(folder).query("split == 'test' and metric == 'r2' and target == 'mean' and subset == 'all'")
    r2 = r2.set_index("layer")["value"]
    assert r2[4] > 0.6 and r2[0] < 0.1
    # the Python API takes any array aligned with the cache
    result = probe_cache(cache, np.log10(entities["population"]), layers=[4])
    assert result.dropped == dropped and result.selected_layer == 4
    assert result.metrics.query("split == 'test' and metric == 'r2' and target == 'mean'")["value"].item() == r2[4]
    with pytest.raises(WorldprobeError, match="not numeric"):
        run_probe("world_place", "tiny", workspace=workspace, target="country", progress=False)
    with pytest.raises(WorldprobeError, match="align"):
        probe_cache(cache, np.zeros(5))


def test_bad_requests_are_clear(cached):
    workspace, _, _ = cached
    with pytest.raises(WorldprobeError, match="not in the cache|outside"):
        run_probe("world_place", "tiny", workspace=workspace, layers=[9], progress=False)
    with pytest.raises(WorldprobeError, match="unknown probe"):
        run_probe("world_place", "tiny", workspace=workspace, probe="svm", progress=False)
    with pytest.raises(WorldprobeError, match="hold out"):
        run_probe(
            "world_place", "tiny", workspace=workspace, progress=False, options=ProbeOptions(holdouts=("continent",))
        )
    with pytest.raises(WorldprobeError, match="does not exist"):
        run_probe("world_place", "tiny", "coords", workspace=workspace, progress=False)


@pytest.mark.slow
def test_mlp_probe_and_controls_land_in_the_same_table(cached):
    workspace, _, _ = cached
    folder = run_probe("world_place", "tiny", workspace=workspace, probe="mlp", layers=[4],
                       controls=("shuffled", "group_oracle"), progress=False)  # fmt: skip
    metrics = read_metrics(folder)
    assert set(metrics["control"]) == {"none", "shuffled", "group_oracle"}
    assert (metrics["probe"] == "mlp").all() and metrics["standardize"].all()
    r2 = metrics.query("split == 'test' and metric == 'r2' and target == 'mean' and subset == 'all'")
    r2 = r2.set_index("control")["value"]
    assert r2["none"] > 0.8 and r2["shuffled"] < 0.2
    assert "weight_decay" in set(metrics["metric"])
    summary = read_summary(folder)
    assert "validation" in summary["selection_criterion"]
    assert summary["headline"]["controls"]["shuffled"]["own"]["diff_r2"]["low"] > 0.5


def test_cross_prompt_transfer(cached):
    workspace, _, entities = cached
    shuffled = entities.sample(frac=1.0, random_state=3).reset_index(drop=True)  # another cache order
    write_cache(workspace, shuffled, prompt="coords", seed=0)
    table = cross_prompt_transfer("world_place", "tiny", "empty", "coords", workspace=workspace, layers=[4])
    r2 = table.query("metric == 'r2' and target == 'mean'").set_index("setting")["value"]
    # both caches use the same mixing of the same signal, so a probe transfers once entities are matched by id
    assert r2["within"] > 0.9 and r2["transfer"] > 0.85


def test_cli_probe(cached, capsys):
    from typer.testing import CliRunner

    from worldprobe.cli import app

    workspace, _, _ = cached
    result = CliRunner().invoke(app, ["--workspace", str(workspace.root), "probe", "--dataset", "world_place",
                                      "--model", "tiny", "--layers", "3:4", "--holdout", "entity_type"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "layer 4/4, chosen on train rows" in result.output and "Test R²" in result.output
    folder = result.output.strip().splitlines()[-1]
    summary = json.loads((workspace.root / "results" / folder.split("/")[-1] / "summary.json").read_text())
    assert summary["layers"] == [3, 4] and summary["settings"]["holdouts"] == ["entity_type"]


def test_a_block_with_nothing_outside_it_is_skipped_and_recorded(cached, recwarn):
    """A dataset of one source cannot hold that source out: the block is recorded as skipped (rows outside it), not
    fitted, and nothing is printed as a Python warning."""
    workspace, _, _ = cached
    folder = run_probe("world_place", "tiny", workspace=workspace, layers=[4], progress=False,
                       options=ProbeOptions(holdouts=("source",)))  # fmt: skip
    table = pd.read_parquet(folder / "holdouts.parquet")
    assert table[["block", "setting", "metric", "value"]].values.tolist() == [["synthetic", "skipped", "rows_outside",
                                                                               0.0]]  # fmt: skip
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_held_out_rows_record_each_block_penalty(cached):
    workspace, _, _ = cached
    folder = run_probe("world_place", "tiny", workspace=workspace, layers=[4], progress=False,
                       options=ProbeOptions(holdouts=("entity_type",)))  # fmt: skip
    table = pd.read_parquet(folder / "holdouts.parquet")
    alphas = table[table["metric"] == "alpha"]
    blocks = set(table.loc[table["setting"] == "held_out", "block"]) - {"(mean)"}
    assert set(alphas["block"]) == blocks and len(blocks) > 1 and set(alphas["setting"]) == {"held_out"}
    assert (alphas["value"] > 0).all()


def test_prompt_and_model_comparisons_share_one_table(cached):
    workspace, _, entities = cached
    write_cache(workspace, entities, prompt="coords", noise=3.0)
    write_cache(workspace, entities, model="deeper", n_layers=8)
    prompts = compare_prompts("world_place", "tiny", ["empty", "coords"], workspace=workspace, progress=False)
    r2 = prompts.query("split == 'test' and metric == 'r2' and target == 'mean' and layer == 4 and subset == 'all'")
    assert r2.set_index("prompt")["value"]["empty"] > r2.set_index("prompt")["value"]["coords"]  # noisier cache
    models = compare_models("world_place", ["tiny", "deeper"], workspace=workspace, progress=False)
    assert models.groupby("model")["n_layers"].first().to_dict() == {"tiny": 4, "deeper": 8}
    assert models.query("model == 'deeper' and layer == 4")["rel_depth"].eq(0.5).all()


def test_time_targets_get_year_errors():
    from worldprobe.probes.sweep import score

    true = pd.DataFrame({"year": [1900.0, 1950.0, 2000.0, 2010.0]})
    pred = pd.DataFrame({"year": [1910.0, 1940.0, 2000.0, 2030.0]})
    values = {(t, m): v for t, m, v in score(true, pred, "time")}
    assert values[("year", "abs_error_years")] == pytest.approx(10.0)  # (10 + 10 + 0 + 20) / 4
    assert values[("year", "mae")] == pytest.approx(10.0)
    assert ("mean", "proximity") in values and ("mean", "haversine_km") not in values


def test_resplits_refit_the_probe_and_its_controls_on_redrawn_splits(cached):
    """--resplits K: K seeded, grouped re-drawn splits, each refitting the probe (layer chosen again on its train
    rows) and the lexical control; the spread is in the headline and the sentence, the same on a re-run."""
    workspace, _, entities = cached
    request = dict(workspace=workspace, layers=[2, 4], controls=("lexical",), progress=False,
                   options=ProbeOptions(resplits=3))  # fmt: skip
    folder = run_probe("world_place", "tiny", **request)
    spread = read_summary(folder)["headline"]["resplits"]
    assert spread["resplits"] == 3 and len(spread["draws"]) == 3
    assert {"r2", "spearman", "diff_r2_lexical"} <= set(spread) and "diff_r2_random_init" not in spread
    values = [d["r2"] for d in spread["draws"]]
    assert len(set(values)) == 3 and spread["r2"]["min"] == min(values) and spread["r2"]["sd"] > 0
    assert all(d["layer"] in (2, 4) for d in spread["draws"])
    assert "Refitted on 3 re-drawn train/test splits: R² " in read_summary(folder)["verdict"]["sentence"]
    (folder / "summary.json").unlink()
    again = run_probe("world_place", "tiny", **request)
    assert read_summary(again)["headline"]["resplits"] == spread
    with pytest.raises(WorldprobeError, match="resplits"):
        run_probe("world_place", "tiny", workspace=workspace, progress=False, options=ProbeOptions(resplits=-1))
    with pytest.raises(WorldprobeError, match="margin"):
        run_probe("world_place", "tiny", workspace=workspace, progress=False, options=ProbeOptions(margin_r2=1.5))


def test_a_run_returns_a_folder_that_reads_its_results(cached):
    """run_probe returns a RunFolder: a pathlib.Path that also reads the summary, tables and verdict; the stage
    packages list their public names for dir() and tab completion."""
    import worldprobe.interventions
    import worldprobe.probes
    from worldprobe.probes import RunFolder

    workspace, _, entities = cached
    run = run_probe("world_place", "tiny", workspace=workspace, layers=[2, 4], controls=("lexical",), progress=False)
    assert isinstance(run, RunFolder) and (run / "summary.json").exists()
    assert run.summary["headline"]["n_test"] == int(entities["is_test"].sum())
    assert set(run.tables) == {"metrics", "predictions", "holdouts"}
    pd.testing.assert_frame_equal(run.metrics, read_metrics(run))
    assert run.verdict.startswith("Test R²") and len(run.predictions) > 0
    tested = run.comparisons.set_index("comparison")
    lexical = run.summary["headline"]["controls"]["lexical"]["own"]["diff_r2"]
    assert tested.loc["lexical", ["value", "low", "high"]].tolist() == [lexical[k] for k in ("value", "low", "high")]
    assert tested.loc["lexical", "outcome"] in ("above", "below", "equivalent", "inconclusive")
    with pytest.raises(WorldprobeError, match="has no steering table"):
        run.table("steering")
    assert {"run_probe", "RidgeProbe", "RunFolder"} <= set(dir(worldprobe.probes))
    assert {"run_ask", "run_steer", "run_context"} <= set(dir(worldprobe.interventions))


def test_one_set_of_controls_is_one_run_whatever_its_spelling_and_old_runs_are_still_found(cached, monkeypatch):
    """`--control all`, the names in another order, and the names in CONTROLS order are the same work: one run key.
    A run finished before names were made canonical (keyed by their spelling) is still found, not recomputed."""
    import worldprobe.probes.experiments as experiments

    workspace, _, _ = cached
    names = ("group_oracle", "shuffled")
    first = run_probe("world_place", "tiny", workspace=workspace, layers=[2], controls=names, progress=False)

    def boom(*args, **kwargs):
        raise AssertionError("recomputed a finished run")

    monkeypatch.setattr(experiments, "layer_sweep", boom)
    assert run_probe("world_place", "tiny", workspace=workspace, layers=[2], controls=names[::-1],
                     progress=False) == first  # fmt: skip
    assert read_summary(first)["settings"]["controls"] == ["shuffled", "group_oracle"]  # CONTROLS order
    monkeypatch.undo()
    # an older worldprobe hashed the spelling: simulate its run, then ask again with that spelling
    monkeypatch.setattr(experiments, "resolve_controls", lambda requested: list(requested))
    legacy = run_probe("world_place", "tiny", workspace=workspace, layers=[4], controls=names, progress=False)
    monkeypatch.undo()
    monkeypatch.setattr(experiments, "layer_sweep", boom)
    assert run_probe("world_place", "tiny", workspace=workspace, layers=[4], controls=names, progress=False) == legacy
    from worldprobe.probes.controls import resolve_controls
    from worldprobe.probes.results import CONTROLS

    assert resolve_controls(["all"]) == resolve_controls(CONTROLS[::-1]) == list(CONTROLS)  # so "all" keys alike
