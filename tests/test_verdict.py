"""The headline's estimates on synthetic runs whose answer is known, and the verdict sentence on constructed cases:
probe above, equal to and below the lexical control; a random twin that reads as much; within-group evidence."""

from __future__ import annotations

import numpy as np
import pytest

from worldprobe.probes.controls import FLAT, AltWorldFit, ControlFit
from worldprobe.probes.headline import RunData, headline
from worldprobe.probes.verdict import verdict


def _est(value, low, high, n=400):
    return {"value": value, "low": low, "high": high, "n": n}


def _head(lexical=None, random_init=None, within=(0.02, -0.05, 0.09), beyond=None, shuffled=(0.5, 0.4, 0.6)):
    controls = {"shuffled": {"seeds": [], "own": {"diff_r2": _est(*shuffled)}}}
    if lexical is not None:
        controls["lexical"] = {"seeds": [], "own": {"diff_r2": _est(*lexical)}}
    if random_init is not None:
        controls["random_init"] = {"seeds": [0, 1, 2], "own": {"diff_r2": _est(*random_init)}}
    head = {
        "n_test": 400, "selected_layer": 24,
        "probe": {"r2": _est(0.36, 0.30, 0.41), "within_group_r": _est(*within)},
        "controls": controls,
    }  # fmt: skip
    if beyond is not None:
        head["alt_world"] = {"beyond_lexical": _est(*beyond)}
    return head


def say(head, kind="place", group="country"):
    return verdict(head, kind=kind, group_column=group, n_layers=30)


def test_probe_below_the_lexical_control_is_not_shown():
    out = say(_head(lexical=(-0.07, -0.12, -0.02), random_init=(0.12, 0.07, 0.17)))
    assert out["label"] == "not shown beyond spelling"
    assert "Below: the TF-IDF lexical control (-.07 [-.12, -.02])" in out["sentence"]
    assert "Above: shuffled targets" in out["sentence"] and "the random-init twin (3 seeds) (+.12 [.07, .17])" in (
        out["sentence"]
    )
    assert "So: not shown." in out["sentence"]
    assert "n = 400 test entities; layer 24/30, chosen on train rows" in out["sentence"]


def test_probe_equal_to_the_lexical_control_is_not_shown_either():
    out = say(_head(lexical=(0.03, -0.02, 0.08), random_init=(0.12, 0.07, 0.17)))
    assert out["label"] == "not shown beyond spelling" and out["sides"]["lexical"] == "tie"
    assert "Not distinguishable from: the TF-IDF lexical control (+.03 [-.02, .08])" in out["sentence"]


def test_probe_above_lexical_but_not_the_random_twin():
    out = say(_head(lexical=(0.10, 0.05, 0.15), random_init=(0.01, -0.04, 0.06)))
    assert out["label"] == "not shown beyond random weights"
    assert "random weights reads out as much" in out["sentence"]


def test_probe_above_every_control_without_within_group_evidence_knows_the_group_only():
    out = say(_head(lexical=(0.10, 0.05, 0.15), random_init=(0.12, 0.07, 0.17), beyond=(0.01, -0.03, 0.05)))
    assert out["label"] == "which country only"
    assert "Within-country r .02 [-.05, .09]" in out["sentence"]
    assert "Alternative-world gap beyond the lexical features +.01 [-.03, .05]" in out["sentence"]
    assert "knows which country, not (shown) where inside it" in out["sentence"]


def test_within_group_evidence_for_time():
    out = say(_head(lexical=(0.2, 0.1, 0.3), random_init=(0.2, 0.1, 0.3), within=(0.3, 0.2, 0.4)), kind="time",
              group="century")  # fmt: skip
    assert out["label"] == "beyond the century" and "evidence of when beyond the century" in out["sentence"]


def test_a_missing_random_init_control_is_said_not_counted_as_beaten():
    out = say(_head(lexical=(0.10, 0.05, 0.15), within=(0.3, 0.2, 0.4)))
    assert out["label"] == "beyond the country (no random-init control)"
    assert "random-init twin was not run" in out["sentence"]
    assert out["sentence"].endswith("evidence of where beyond the country and the spelling.")


def test_no_lexical_control_is_unchecked_and_no_readout_is_said():
    assert say(_head())["label"] == "unchecked (no lexical control)"
    assert say(_head(lexical=(0.1, 0.05, 0.15), shuffled=(0.01, -0.02, 0.04)))["label"] == "no readout"


# --- the headline on a synthetic run -------------------------------------------------------------------------------


def _synthetic(n=800, seed=0):
    """Groups on a line; 'probe' knows position inside the group, 'lexical' only the group, a twin nothing."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(20), n // 20)
    centre = rng.uniform(-60, 60, 20)[groups]
    y = np.column_stack([centre + rng.normal(0, 5, n), rng.uniform(-150, 150, 20)[groups] + rng.normal(0, 5, n)])
    is_test = rng.random(n) < 0.3
    probe = y + rng.normal(0, 2, y.shape)
    group_mean = np.array([y[groups == g].mean(0) for g in range(20)])[groups]
    lexical = group_mean + rng.normal(0, 1, y.shape)
    twin = {layer: y.mean(0) + rng.normal(0, 20, y.shape) for layer in (0, 1, 2)}
    fits = [
        ControlFit("lexical", y, {FLAT: lexical}),
        ControlFit("random_init", y, twin, {0: 0.1, 1: 0.3, 2: 0.2}, seed=0),
        ControlFit("random_init", y, {k: v + 1 for k, v in twin.items()}, {0: 0.4, 1: 0.3, 2: 0.2}, seed=1),
    ]
    return RunData(
        kind="place", target_names=["latitude", "longitude"], y=y, is_test=is_test, groups=groups.astype(str),
        entity_type=np.where(np.arange(n) % 4 == 0, "zip", "city"), probe={1: probe, 2: probe}, selected_layer=2,
        fits=fits, seed=3, resamples=500,
    )  # fmt: skip


def test_headline_reads_each_control_at_its_own_layer_and_pairs_the_differences():
    data = _synthetic()
    head = headline(data).summary
    assert head["n_test"] == int(data.is_test.sum()) and head["selected_layer"] == 2
    assert head["probe"]["r2"]["low"] > 0.9 and head["probe"]["within_group_r"]["low"] > 0.5
    lexical = head["controls"]["lexical"]["own"]
    assert lexical["layers"] == [None] and lexical["diff_r2"]["low"] > 0  # probe beats "which group" on R²
    assert lexical["within_group_r"]["high"] < 0.3  # the group means carry nothing within a group
    twin = head["controls"]["random_init"]
    assert twin["seeds"] == [0, 1] and twin["own"]["layers"] == [1, 0]  # each seed's own train-selected layer
    assert twin["at_probe_layer"]["layers"] == [2, 2]
    assert set(twin["own"]["r2_by_seed"]) == {"0", "1"}
    assert head["controls"]["random_init"]["own"]["diff_r2"]["low"] > 0.5
    assert head["baselines"]["train_mean"]["r2"]["value"] < 0.01
    assert head["baselines"]["group_oracle"]["median_error"]["value"] < head["baselines"]["train_mean"][
        "median_error"]["value"]
    types = head["subsets"]["types"]
    assert set(types) == {"zip", "city"} and types["zip"]["n"] + types["city"]["n"] == head["n_test"]


def test_headline_rows_carry_n_and_interval_and_are_deterministic():
    first, again = headline(_synthetic()), headline(_synthetic())
    assert first.rows == again.rows
    rows = {(r["control"], r["layer"], r["metric"], r["subset"], r["seed"]): r for r in first.rows}
    probe = rows[("none", 2, "r2", "all", None)]
    assert probe["ci_low"] < probe["value"] < probe["ci_high"] and probe["n"] == first.summary["n_test"]
    assert ("lexical", 2, "r2_diff", "all", None) in rows
    assert ("random_init", 1, "r2_diff", "all", 0) in rows and ("random_init", 0, "r2", "all", 1) in rows
    assert ("none", 2, "median_haversine_km", "entity_type=zip", None) in rows


def test_alternative_world_gap_beyond_the_lexical_features():
    """Lexical features that know the groups fit a permuted world as well as the real one (gap ~ 0) when the
    probe holds positions within groups; a probe that only knows groups has no gap beyond them."""
    data = _synthetic()
    rng = np.random.default_rng(1)
    import pandas as pd

    from worldprobe.probes.controls import alternative_world

    groups = pd.Series(data.groups)
    worlds = [alternative_world(groups, data.y, seed=s) for s in range(3)]
    group_of = {g: np.flatnonzero(data.groups == g) for g in np.unique(data.groups)}

    def group_level(target):  # what "knows the group only" predicts: the group's mean of the target
        out = np.empty_like(target)
        for rows in group_of.values():
            out[rows] = target[rows].mean(0)
        return out

    data.alt_world = AltWorldFit(
        worlds=worlds,
        model={2: [w + rng.normal(0, 2, w.shape) for w in worlds]},  # the probe fits any world equally well
        model_selection={2: 0.5},
        lexical=[group_level(w) for w in worlds],
    )
    alt = headline(data).summary["alt_world"]
    assert abs(alt["gap"]["value"]) < 0.02  # features that fit every world: no gap
    assert alt["permutations"] == 3 and alt["own_layer"] == 2
    assert "beyond_lexical" in alt and alt["beyond_lexical"]["n"] == int(data.is_test.sum())
    assert alt["gap_lexical"]["value"] == pytest.approx(alt["gap"]["value"] - alt["beyond_lexical"]["value"])
