"""The tests behind the verdict's words (inference.py), the label and sentence on constructed comparisons, and the
headline on synthetic runs whose answer is planted: within-group information that only a residual probe sees, a tie
within the margin, a control that is better, a family where Holm changes a label, per-era breakdowns and the
concentration warning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from worldprobe.probes import inference
from worldprobe.probes.bootstrap import percentile_interval
from worldprobe.probes.controls import FLAT, ControlFit
from worldprobe.probes.headline import RunData, headline
from worldprobe.probes.inference import compare, family, holm, p_difference, p_equivalence
from worldprobe.probes.residual import fit_residual_probe
from worldprobe.probes.ridge import RidgeProbe
from worldprobe.probes.verdict import table_verdicts, verdict

# --- p-values and Holm ---------------------------------------------------------------------------------------------


def test_holm_matches_the_textbook_step_down():
    # sorted: .005 x 4 = .02, .01 x 3 = .03, .03 x 2 = .06, .04 x 1 = .04 -> monotone .06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.2, np.nan, 0.01])
    assert np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02) and adjusted[0] == pytest.approx(0.2)
    raw = np.array([0.9, 0.8, 0.3])
    assert ((holm(raw) <= 1) & (holm(raw) >= raw)).all()  # never above 1, never below the raw p


def test_shaffers_refinement_counts_one_possibly_true_null_per_comparison():
    p = [0.01, 0.02, 0.03, 0.04]
    np.testing.assert_allclose(holm(p), [0.04, 0.06, 0.06, 0.06])
    np.testing.assert_allclose(holm(p, ["a", "a", "b", "b"]), [0.02, 0.04, 0.06, 0.06])
    rng = np.random.default_rng(1)
    many = rng.uniform(0, 0.2, 40)
    pairs = np.repeat(np.arange(20), 2)
    assert (holm(many, pairs) <= holm(many) + 1e-15).all()  # never stricter than Holm
    assert (holm(many, pairs) >= many).all()


def test_bootstrap_p_values_agree_with_the_percentile_interval():
    rng = np.random.default_rng(0)
    for mean in (0.0, 0.05, 0.1, 0.2, -0.15):
        samples = rng.normal(mean, 0.05, 10_000)
        low, high = percentile_interval(samples)
        p = p_difference(samples)
        assert (p < 0.05) == (low > 0 or high < 0), (mean, p, low, high)
    assert p_difference(np.full(100, 1.0)) == pytest.approx(2 / 101)  # never 0: (count + 1) / (B + 1)
    # TOST: inside a ±.05 band only when the 90% interval is
    tight = rng.normal(0.01, 0.01, 10_000)
    wide = rng.normal(0.01, 0.05, 10_000)
    assert p_equivalence(tight, 0.05) < 0.05 < p_equivalence(wide, 0.05)


def _comparison(key, mean, sd, *, n=400, margin=0.05, seed=0, in_family=True):
    samples = np.random.default_rng(seed).normal(mean, sd, 10_000)
    return compare(key, "r_diff" if key == "within_group" else "r2_diff", mean, samples, n, margin=margin,
                   in_family=in_family)


def _head(*comparisons, within=None, alt=None):
    """A headline holding the given comparisons (and the within-group / alternative-world blocks they belong to)."""
    head = {
        "n_test": 400, "selected_layer": 24, "margins": {"r2": 0.05, "r": 0.05},
        "probe": {"r2": {"value": 0.36, "low": 0.30, "high": 0.41, "n": 400},
                  "spearman": {"value": 0.5, "low": 0.45, "high": 0.55, "n": 400}},
        "comparisons": [c.to_dict() for c in comparisons],
    }  # fmt: skip
    by_key = {c.key: c for c in comparisons}
    if "within_group" in by_key:
        est = {"value": 0.2, "low": 0.1, "high": 0.3, "n": 378}
        head["within_group"] = {"layer": 17, "groups": 150, "n": 378, "model_r": est, "lexical_r": est,
                                "diff_r": by_key["within_group"].estimate.to_dict()}  # fmt: skip
    elif within is not None:
        head["within_group"] = within
    if alt is not None:
        head["alt_world"] = alt
    return head


def say(head, kind="place", group="country"):
    return verdict(head, kind=kind, group_column=group, n_layers=30)


SHUFFLED = _comparison("shuffled", 0.35, 0.03)
ABOVE = dict(mean=0.15, sd=0.02)


def test_a_control_that_predicts_better_is_below():
    out = say(_head(SHUFFLED, _comparison("lexical", -0.07, 0.025), _comparison("random_init", 0.12, 0.02)))
    assert out["label"] == "below spelling"
    assert "Against the TF-IDF lexical control: ΔR² -.07" in out["sentence"] and "below (Holm p" in out["sentence"]
    assert "spelling of the names predicts the target better" in out["sentence"]
    assert "as well as" not in out["sentence"]


def test_a_tie_within_the_margin_is_equivalent():
    out = say(_head(SHUFFLED, _comparison("lexical", 0.005, 0.012)))
    assert out["label"] == "no more than spelling (±.05)"
    assert "equivalent within ±.05 R² (TOST, Holm p" in out["sentence"]


def test_a_lead_whose_interval_includes_zero_is_inconclusive_not_equal():
    """The reviewer's case: the model ahead by +.12 [-.01, .23] was printed as "as well as"."""
    lead = _comparison("lexical", 0.12, 0.062)
    assert lead.estimate.low < 0 < lead.estimate.high
    out = say(_head(SHUFFLED, lead))
    assert out["label"] == "inconclusive vs spelling"
    assert "inconclusive (neither a difference nor equivalence within ±.05 survives Holm" in out["sentence"]
    assert "as well as" not in out["sentence"] and "equal" not in out["sentence"]


def test_random_weights_that_read_as_much_are_equivalent():
    out = say(_head(SHUFFLED, _comparison("lexical", **ABOVE), _comparison("random_init", 0.0, 0.01)))
    assert out["label"] == "no more than random weights (±.05)"


def test_within_group_beyond_spelling_needs_the_residual_test():
    shown = say(_head(SHUFFLED, _comparison("lexical", **ABOVE), _comparison("random_init", **ABOVE),
                      _comparison("within_group", 0.19, 0.05)))  # fmt: skip
    assert shown["label"] == "beyond spelling, within the country"
    assert "including within a country" in shown["sentence"]
    hidden = say(_head(SHUFFLED, _comparison("lexical", **ABOVE), _comparison("random_init", **ABOVE),
                       _comparison("within_group", 0.04, 0.05)))  # fmt: skip
    assert hidden["label"] == "beyond spelling; within-country not shown"
    assert "only" not in hidden["label"] and "only" not in hidden["sentence"]
    assert "not shown: Δr at most +.14 (95% upper bound)" in hidden["sentence"]


def test_a_missing_twin_is_said_and_not_counted():
    out = say(_head(SHUFFLED, _comparison("lexical", **ABOVE), _comparison("within_group", 0.3, 0.05)), kind="time",
              group="century")  # fmt: skip
    assert out["label"] == "beyond spelling, within the century (no random-init control)"
    assert "random-init twin was not run" in out["sentence"]
    assert out["sentence"].count("beyond the spelling") == 1 and "and the architecture" not in out["sentence"]


def test_no_lexical_control_is_unchecked_and_no_readout_is_said():
    assert say(_head(SHUFFLED))["label"] == "unchecked (no lexical control)"
    weak = _comparison("shuffled", 0.01, 0.03)
    assert say(_head(weak, _comparison("lexical", **ABOVE)))["label"] == "no readout shown"


def test_holm_over_a_family_can_withdraw_a_label():
    """One run's lexical lead is significant alone (p ≈ .01) but not among 40 other hypotheses: the table's label is
    the corrected one and says what the uncorrected reading would have been."""
    lead = _comparison("lexical", 0.06, 0.024)
    assert 0.005 < lead.p["difference"] < 0.05
    alone = say(_head(SHUFFLED, lead))
    assert alone["label"] == "beyond spelling; within-country not tested (no random-init control)" and alone["holds"]
    others = {f"other {i}": _head(_comparison("shuffled", 0.3, 0.03, seed=i), _comparison("lexical", 0.01, 0.08,
                                                                                         seed=100 + i))
              for i in range(20)}  # fmt: skip
    runs = {"ours": _head(SHUFFLED, lead), **others}
    settings = {name: {"kind": "place", "group_column": "country", "n_layers": 30} for name in runs}
    verdicts, decided = table_verdicts(runs, settings=settings)
    ours = verdicts["ours"]
    assert decided.size == 2 * 2 * len(runs)
    assert ours["label"] == "inconclusive vs spelling" and not ours["holds"]
    assert ours["unadjusted_label"].startswith("beyond spelling")
    assert f"over the {decided.size} hypotheses ({len(runs) * 2} comparisons) of this table" in ours["sentence"]
    assert "without it the label would read 'beyond spelling" in ours["sentence"]


def test_comparisons_outside_the_family_are_printed_without_a_claim_of_side():
    embedding = _comparison("embedding", 0.3, 0.03, in_family=False)
    decided = family({"run": [SHUFFLED, embedding]})
    assert decided.size == 2  # the embedding's two hypotheses are not in the family
    out = say(_head(SHUFFLED, _comparison("lexical", **ABOVE), embedding))
    assert "Against the embedding layer: ΔR² +.30" in out["sentence"] and "not a label test" in out["sentence"]


def test_an_alternative_world_without_a_sound_version_says_why():
    alt = {"matching": {}, "not_applicable": "only 1 of 200 candidate worlds are as learnable from the spelling"}
    out = say(_head(SHUFFLED, _comparison("lexical", **ABOVE), alt=alt))
    assert "Alternative world: not applicable (only 1 of 200 candidate worlds" in out["sentence"]


# --- the headline on synthetic runs --------------------------------------------------------------------------------


def _synthetic(n=800, seed=0, lexical_quality=1.0):
    """Groups on a line; 'probe' knows position inside the group, 'lexical' only the group, a twin nothing."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(20), n // 20)
    centre = rng.uniform(-60, 60, 20)[groups]
    y = np.column_stack([centre + rng.normal(0, 5, n), rng.uniform(-150, 150, 20)[groups] + rng.normal(0, 5, n)])
    is_test = rng.random(n) < 0.3
    probe = y + rng.normal(0, 2, y.shape)
    group_mean = np.array([y[groups == g].mean(0) for g in range(20)])[groups]
    lexical = group_mean + rng.normal(0, lexical_quality, y.shape)
    twin = {layer: y.mean(0) + rng.normal(0, 20, y.shape) for layer in (0, 1, 2)}
    fits = [
        ControlFit("shuffled", rng.permutation(y), {k: y.mean(0) + rng.normal(0, 1, y.shape) for k in (1, 2)},
                   {1: 0.0, 2: 0.01}),
        ControlFit("lexical", y, {FLAT: lexical}),
        ControlFit("random_init", y, twin, {0: 0.1, 1: 0.3, 2: 0.2}, seed=0),
        ControlFit("random_init", y, {k: v + 1 for k, v in twin.items()}, {0: 0.4, 1: 0.3, 2: 0.2}, seed=1),
    ]  # fmt: skip
    return RunData(
        kind="place", target_names=["latitude", "longitude"], y=y, is_test=is_test, groups=groups.astype(str),
        entity_type=np.where(np.arange(n) % 4 == 0, "zip", "city"), probe={1: probe, 2: probe}, selected_layer=2,
        fits=fits, seed=3, resamples=500, test_resamples=2000,
    )  # fmt: skip


def test_headline_reads_each_control_at_its_own_layer_and_pairs_the_differences():
    data = _synthetic()
    head = headline(data).summary
    assert head["n_test"] == int(data.is_test.sum()) and head["selected_layer"] == 2
    assert head["probe"]["r2"]["low"] > 0.9 and head["probe"]["spearman"]["low"] > 0.9
    lexical = head["controls"]["lexical"]["own"]
    assert lexical["layers"] == [None] and lexical["diff_r2"]["low"] > 0  # probe beats "which group" on R²
    twin = head["controls"]["random_init"]
    assert twin["seeds"] == [0, 1] and twin["own"]["layers"] == [1, 0]  # each seed's own train-selected layer
    assert twin["at_probe_layer"]["layers"] == [2, 2]
    assert set(twin["own"]["r2_by_seed"]) == {"0", "1"}
    assert twin["own"]["diff_r2"]["low"] > 0.5
    assert head["baselines"]["group_oracle"]["median_error"]["value"] < head["baselines"]["train_mean"][
        "median_error"]["value"]
    types = head["subsets"]["types"]
    assert set(types) == {"zip", "city"} and types["zip"]["n"] + types["city"]["n"] == head["n_test"]
    comparisons = {c["key"]: c for c in head["comparisons"]}
    assert set(comparisons) == {"shuffled", "lexical", "random_init"}
    assert comparisons["lexical"]["resamples"] == 2000 and comparisons["lexical"]["in_family"]
    assert comparisons["lexical"]["estimate"] == lexical["diff_r2"]  # one interval per difference, not two


def test_headline_rows_carry_n_and_interval_and_are_deterministic():
    first, again = headline(_synthetic()), headline(_synthetic())
    assert first.rows == again.rows and first.summary["comparisons"] == again.summary["comparisons"]
    rows = {(r["control"], r["layer"], r["metric"], r["subset"], r["seed"]): r for r in first.rows}
    probe = rows[("none", 2, "r2", "all", None)]
    assert probe["ci_low"] < probe["value"] < probe["ci_high"] and probe["n"] == first.summary["n_test"]
    assert ("lexical", 2, "r2_diff", "all", None) in rows
    assert ("random_init", 1, "r2_diff", "all", 0) in rows and ("random_init", 0, "r2", "all", 1) in rows
    assert ("none", 2, "median_haversine_km", "entity_type=zip", None) in rows


def _within_planted(seed=0):
    """Features that hold each entity's offset inside its group on one weak dimension, beside strong group codes; the
    main probe's predictions know only the group; the names spell only the group."""
    rng = np.random.default_rng(seed)
    n_groups, per = 30, 40
    group = np.repeat(np.arange(n_groups), per)
    offset = rng.normal(0, 1, len(group))
    y = (rng.normal(0, 30, n_groups)[group] + offset)[:, None]
    codes = rng.normal(0, 3, (n_groups, 24))[group]
    x = np.column_stack([codes, 0.4 * offset + rng.normal(0, 0.3, len(group))]).astype(np.float32)
    is_test = rng.random(len(group)) < 0.25
    texts = pd.Series([f"{chr(65 + g % 26)}{g}ville n{i % 37}" for i, g in enumerate(group)])
    groups = pd.Series([f"G{g}" for g in group])
    group_mean = pd.Series(y[:, 0]).groupby(group).transform("mean").to_numpy()[:, None]
    main = group_mean + rng.normal(0, 0.5, y.shape)  # knows the group, nothing inside it
    residual = fit_residual_probe(lambda layer: x, [5], groups, texts, y, is_test, RidgeProbe, seed=0, progress=False)
    fits = [ControlFit("shuffled", rng.permutation(y), {5: np.full_like(y, y.mean())}, {5: 0.0}),
            ControlFit("lexical", y, {FLAT: group_mean + rng.normal(0, 2, y.shape)})]  # fmt: skip
    return RunData(kind="time", target_names=["year"], y=y, is_test=is_test, groups=groups.to_numpy(),
                   entity_type=np.full(len(y), "person"), probe={5: main}, selected_layer=5, fits=fits,
                   residual=residual, resamples=500, test_resamples=4000)  # fmt: skip


def test_within_group_information_the_main_probe_misses_is_found_by_the_residual_probe():
    head = headline(_within_planted()).summary
    main = head["probe"]["within_group_r"]
    assert main["low"] < 0.1  # the main probe's within-group r shows nothing
    within = head["within_group"]
    assert within["model_r"]["low"] > 0.5 and abs(within["lexical_r"]["value"]) < 0.15
    assert within["diff_r"]["low"] > 0.3
    out = verdict(head, kind="time", group_column="century", n_layers=5)
    assert out["label"] == "beyond spelling, within the century (no random-init control)", out["sentence"]
    assert "Within the century (a probe fitted to offsets from the century's train mean, layer 5" in out["sentence"]


def test_per_era_breakdown_and_a_warning_when_few_entities_carry_the_variance():
    rng = np.random.default_rng(4)
    n = 600
    ancient = rng.random(n) < 0.07
    year = np.where(ancient, rng.uniform(-500, 500, n), rng.uniform(1500, 2000, n))[:, None]
    pred = year + rng.normal(0, 40, year.shape)
    data = RunData(kind="time", target_names=["year"], y=year, is_test=rng.random(n) < 0.5,
                   groups=(year[:, 0] // 100).astype(int).astype(str), entity_type=np.full(n, "person"),
                   probe={3: pred}, selected_layer=3, resamples=300, test_resamples=500,
                   eras=np.where(year[:, 0] < 1500, "before 1500", "from 1500"))  # fmt: skip
    head = headline(data).summary
    assert head["scale"]["variance_share"] > 0.5 and "carry" in head["scale"]["warning"]
    eras = head["eras"]["types"]
    assert set(eras) == {"before 1500", "from 1500"}
    assert eras["from 1500"]["r2"]["value"] < head["probe"]["r2"]["value"]
    assert "spearman" in eras["from 1500"]
    said = verdict(head, kind="time", group_column="century", n_layers=3)["sentence"]
    assert "Note: the " in said and "By era: before 1500: R²" in said


def test_inference_constants_are_documented_defaults():
    from worldprobe.config import DEFAULT_MARGINS

    assert DEFAULT_MARGINS == {"r2": 0.05, "r": 0.05}
    assert 2 / (inference.TEST_RESAMPLES + 1) < inference.ALPHA / 100  # a family of 100 can still be passed


def test_the_family_is_described_in_good_grammar():
    from worldprobe.probes.inference import FamilyResult

    assert "2 hypotheses (1 comparison) of this run" in FamilyResult(2, {}, {}, 1).describe("this run")
    assert "(3 comparisons)" in FamilyResult(6, {}, {}, 3).describe()
