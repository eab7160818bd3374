"""The steering map on a planted Llama where one direction at known layers moves the answer: every method finds what
it should (the difference of means and the encoding pattern the answer's coordinate, the ridge weights a tilted one),
the layer after the model has read the entity moves nothing, the choice is made on train entities only, and the
statistics (antisymmetric shift, ordered share) are what they say."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_interventions_steering import N_ENTITIES, _planted_workspace, _question, _tokenizer, planted_llama

from worldprobe.errors import WorldprobeError
from worldprobe.interventions import directions as dirs
from worldprobe.interventions import steerchoice, steermap
from worldprobe.interventions.options import Asking, Steering

NUISANCE = 2.0


@pytest.fixture(scope="module")
def deep_planted(one_torch_thread):
    prompt_length = len(_question(_tokenizer(N_ENTITIES), ["w0"])[0])
    return planted_llama(prompt_length, blocks=3, nuisance=NUISANCE)


# --- directions ----------------------------------------------------------------------------------------------------


def test_ridge_weights_cancel_a_nuisance_the_difference_of_means_keeps():
    """Haufe et al.'s example: x0 = t + n, x1 = n. The decoder (ridge) is ∝ (1, -1); the encoding pattern and the
    difference of means are ∝ (1, 0): the direction along which the value is written."""
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 10, 2000)
    n = rng.normal(0, 3, 2000)
    x = np.column_stack([t + n, n, rng.normal(0, 1, (2000, 6))])
    stats = dirs.layer_stats(4, x, t)
    found = {d.name: d for d in dirs.method_directions(["ridge", "pattern", "mean_diff", "pls1"], 4, x, t, stats, 8)}
    e0 = np.eye(8)[0]
    assert abs(found["ridge"].unit @ np.array([1, -1, 0, 0, 0, 0, 0, 0]) / np.sqrt(2)) > 0.99
    assert found["pattern"].unit @ e0 > 0.99 and found["mean_diff"].unit @ e0 > 0.99
    assert all(d.unit @ e0 > 0 and not np.isclose(np.linalg.norm(d.unit), 0) for d in found.values())
    # calibration: activations move ~1 unit of x0 per unit of t along e0
    assert found["mean_diff"].per_target_unit == pytest.approx(1.0, rel=0.05)
    assert stats.dmu_norm == pytest.approx(stats.target_gap, rel=0.05)


def test_a_direction_is_oriented_to_raise_the_target_and_a_user_file_is_read(tmp_path):
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 1, 300)
    x = np.column_stack([-t, rng.normal(0, 0.01, 300)])
    flipped = dirs.oriented("file", "mine", 0, np.array([1.0, 0.0]), x, t)
    assert flipped.flipped and flipped.unit[0] < 0
    path = tmp_path / "v.npy"
    np.save(path, np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    assert np.allclose(dirs.user_vector(path, 1, 2, 2), [0.0, 1.0])
    with pytest.raises(WorldprobeError, match="needs \\(2,\\) or \\(4, 2\\)"):
        dirs.user_vector(path, 1, 2, 3)
    with pytest.raises(WorldprobeError, match="unknown steering direction 'pca'"):
        dirs.raw_vector("pca", x, t, dirs.layer_stats(0, x, t))


# --- statistics ----------------------------------------------------------------------------------------------------


def _items(readings: dict[float, list[float]]) -> pd.DataFrame:
    rows = [{"entity": e, "dose": d, "reading": r, "edit_norm": abs(d), "relative_norm": 0.1, "dose_target_units": d,
             "parsed": np.isfinite(r)} for d, values in readings.items() for e, r in enumerate(values)]  # fmt: skip
    return pd.DataFrame(rows)


def test_antisymmetric_shift_cancels_a_push_and_the_ordered_share_counts_monotone_entities():
    baseline = pd.Series([100.0, 200.0, 300.0])
    # every dose pushes answers +50 (a perturbation effect); the direction adds 10 per unit on entities 0 and 1
    items = _items({-2.0: [130, 230, 350], -1.0: [140, 240, 350], 1.0: [160, 260, 350], 2.0: [170, 270, np.nan]})
    table = steermap.answers_by_dose(items, baseline, [-2, -1, 1, 2])
    grid = [-2.0, -1.0, 0.0, 1.0, 2.0]
    np.testing.assert_allclose(steermap.antisymmetric(table, grid, 2.0)[:2], [20.0, 20.0])
    assert np.isnan(steermap.antisymmetric(table, grid, 2.0)[2])
    np.testing.assert_array_equal(steermap.ordered(table), [0.0, 0.0, 0.0])  # the push breaks order at dose 0
    rising = steermap.answers_by_dose(_items({-1.0: [90, 180, 300], 1.0: [110, 220, 300]}), baseline, [-1, 1])
    np.testing.assert_array_equal(steermap.ordered(rising), [1.0, 1.0, 0.0])  # flat is not ordered
    w = steermap.weights(3, 200, 0)
    rows = steermap.cell_rows(items, baseline, [-2.0, -1.0, 1.0, 2.0], w, {"split": "select", "direction": "d"})
    assert [r["dose"] for r in rows] == [1.0, 2.0]
    assert rows[1]["antisymmetric_shift"] == pytest.approx(20.0) and rows[1]["n"] == 2
    assert rows[1]["antisymmetric_shift_per_dmu"] == pytest.approx(10.0)


def test_doses_need_their_negatives_and_positions_and_directions_are_checked():
    from worldprobe.interventions.options import checked_doses, checked_methods, checked_positions

    assert checked_doses([2, -1, 1, -2]) == [-2.0, -1.0, 1.0, 2.0]
    with pytest.raises(WorldprobeError, match="needs its negative"):
        checked_doses([-1, 1, 2])
    with pytest.raises(WorldprobeError, match="finite and non-zero"):
        checked_doses([0, 1, -1])
    with pytest.raises(WorldprobeError, match="finite and non-zero"):
        checked_doses([float("nan"), 1, -1])
    with pytest.raises(WorldprobeError, match="unknown position 'first'"):
        checked_positions(["first"])
    assert checked_methods(["pls4", "mean_diff"]) == ["pls4", "mean_diff"]
    with pytest.raises(WorldprobeError, match="no such direction file"):
        checked_methods(["missing.npy"])


# --- the whole run on the planted model ----------------------------------------------------------------------------

ASKING = Asking(format="fewshot", shots=0, max_new_tokens=1)
PLAN = dict(doses=[-0.5, -0.25, 0.25, 0.5], map_random=1, random_directions=3, random_init=False, select_limit=30)
RUN = dict(asking=ASKING, limit=30, resamples=200, progress=False)



@pytest.fixture(scope="module")
def steered(deep_planted, tmp_path_factory):
    from worldprobe.interventions.steer import run_steer
    from worldprobe.workspace import Workspace

    root = tmp_path_factory.mktemp("steer")
    workspace = Workspace(root / "ws")
    folder, _ = _planted_workspace(deep_planted, workspace, root)
    out = run_steer(
        "historical_figure",
        str(folder),
        workspace=workspace,
        steering=Steering(directions=["ridge", "pattern", "mean_diff", "pls1"], **PLAN),
        **RUN,
    )
    return workspace, folder, out


def test_the_map_finds_the_written_direction_at_the_layers_before_the_read(steered):
    _, _, out = steered
    table = pd.read_parquet(out / "steering_map.parquet")
    select = table[(table["split"] == "select") & (table["dose"] == 0.5)].set_index(["direction", "layer"])
    shift = select["antisymmetric_shift"]
    # layers 0 and 1 hold the entity before block 1 copies it to the answer's position; layer 2 comes after
    for layer in (0, 1):
        assert shift[("mean_diff", layer)] > 10 and shift[("pattern", layer)] > 10
        assert shift[("mean_diff", layer)] > shift[("ridge", layer)] + 3  # the decoder is tilted by the nuisance
    assert all(abs(shift[(d, 2)]) < 1 for d in ("ridge", "pattern", "mean_diff", "pls1"))
    assert select.loc[("mean_diff", 1), "ordered_share"] > 0.8
    assert abs(select.loc[("random-0", 1), "antisymmetric_shift"]) < shift[("mean_diff", 1)] / 2
    summary = json.loads((out / "summary.json").read_text())
    chosen = summary["chosen"]
    assert chosen["direction"] in ("mean_diff", "pattern") and chosen["layer"] in (0, 1)
    assert list(table.columns) == list(steermap.MAP_COLUMNS)
    assert set(table["split"]) == {"select", "test"}
    stats = summary["layer_stats"]["1"]
    assert 0 < stats["dmu_relative_norm"] < 1


def test_the_chosen_direction_is_tested_on_test_entities_beside_random_ones(steered):
    _, _, out = steered
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outcomes"]["follows"] == "above" and summary["outcomes"]["beyond_random"] == "above"
    comparisons = {c["key"]: c for c in summary["comparisons"]}
    assert comparisons["follows"]["estimate"]["low"] > 5 and comparisons["follows"]["estimate"]["n"] <= 30
    assert summary["ordered_share"]["value"] > 0.7
    assert summary["ridge_antisymmetric_shift"]["value"] < comparisons["follows"]["estimate"]["value"]
    assert "Chosen on train entities:" in summary["verdict"] and "above 0" in summary["verdict"]
    steering = pd.read_parquet(out / "steering.parquet")
    test = steering[steering["split"] == "test"]
    # every direction at one layer is added at the same norm for a dose
    norms = test[(test["dose"] == 0.5) & test["kind"].isin(["method", "random"])]["edit_norm"]
    assert np.allclose(norms, norms.iloc[0])
    assert set(test["kind"]) >= {"none", "method", "random", "neutral"}
    side = summary["side_effects"]
    assert "logprob_delta_chosen" in side and "logprob_delta_random" in side


def test_nothing_is_chosen_on_test_entities(steered, deep_planted):
    """Another sample of test entities (a different --limit) leaves the map on train entities and the choice as they
    were."""
    from worldprobe.interventions.steer import run_steer

    workspace, folder, out = steered
    other = run_steer(
        "historical_figure",
        str(folder),
        workspace=workspace,
        steering=Steering(directions=["ridge", "pattern", "mean_diff", "pls1"], **PLAN),
        **{**RUN, "limit": 12},
    )
    assert other != out
    first, second = (json.loads((o / "summary.json").read_text()) for o in (out, other))
    assert first["chosen"] == second["chosen"]
    maps = [pd.read_parquet(o / "steering_map.parquet").query("split == 'select'").reset_index(drop=True)
            for o in (out, other)]  # fmt: skip
    pd.testing.assert_frame_equal(maps[0], maps[1])
    assert second["n_test_entities"] == 12


def test_bad_steering_requests_are_refused_before_the_model_runs(steered):
    from worldprobe.interventions.steer import run_steer

    workspace, folder, _ = steered
    with pytest.raises(WorldprobeError, match="cannot reach the answer"):
        run_steer("historical_figure", str(folder), workspace=workspace, progress=False, steering=Steering(layers=[3]))
    with pytest.raises(WorldprobeError, match="needs its negative"):
        run_steer(
            "historical_figure", str(folder), workspace=workspace, progress=False, steering=Steering(doses=[1, 2])
        )
    with pytest.raises(WorldprobeError, match="unknown steering direction"):
        run_steer(
            "historical_figure", str(folder), workspace=workspace, progress=False, steering=Steering(directions=["lda"])
        )


def test_the_test_against_zero_reads_as_words():
    assert steerchoice.against_zero("above") == "above 0" and steerchoice.against_zero("below") == "below 0"
    assert steerchoice.against_zero("inconclusive") == "inconclusive against 0"


def test_an_edit_that_breaks_most_answers_is_not_chosen_on_the_few_it_leaves_readable():
    def cell(direction, kind, n, shift, layer=4):
        return {"split": "select", "direction": direction, "kind": kind, "layer": layer, "position": "last",
                "dose": 2.0, "n": n, "antisymmetric_shift": shift, "ordered_share": 0.5}  # fmt: skip

    table = pd.DataFrame([cell("das", "method", 4, 500.0), cell("mean_diff", "method", 16, 200.0),
                          cell("random-0", "random", 16, 3.0)])  # fmt: skip
    chosen = steerchoice.choose(table, [-2.0, 2.0])
    assert chosen["direction"] == "mean_diff" and chosen["readable"]
    broken = table[table["direction"] != "mean_diff"]
    fallback = steerchoice.choose(broken, [-2.0, 2.0])
    assert fallback["direction"] == "das" and not fallback["readable"]  # nothing readable: the best there is, said so
