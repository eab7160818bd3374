"""Controls: each one measured on synthetic caches where the right answer is known."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score

from worldprobe.errors import WorldprobeError
from worldprobe.probes import altworld, controls
from worldprobe.probes.controls import (
    MainProbe,
    group_keys,
    group_means,
    run_controls,
    shuffled_targets,
    within_group_metrics,
)
from worldprobe.probes.lexical import lexical_predictions
from worldprobe.probes.results import LAYER_ROW_COLUMNS as METRIC_COLUMNS

ALPHAS = np.logspace(-3, 3, 13)


def make_probe():
    """The project's RidgeProbe when it exists, else sklearn's RidgeCV (same estimator contract)."""
    try:
        from worldprobe.probes.ridge import RidgeProbe

        return RidgeProbe()
    except ImportError:
        return RidgeCV(alphas=ALPHAS)


@dataclass
class FakeCache:
    """An in-memory stand-in for ``worldprobe.extract.ActivationCache``."""

    entities: pd.DataFrame
    arrays: dict[int, np.ndarray]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.arrays)

    def layer(self, layer: int) -> np.ndarray:
        return self.arrays[layer]


def world(n_groups: int = 12, per_group: int = 40, seed: int = 0):
    """Places in equal-size countries: country centroids spread over the map, cities scattered around them.

    Layer 0: noise. Layer 1: only which country (a random code per country). Layer 2: the position itself, linearly.
    """
    rng = np.random.default_rng(seed)
    centroids = np.column_stack([rng.uniform(-60, 60, n_groups), rng.uniform(-170, 170, n_groups)])
    group = np.repeat(np.arange(n_groups), per_group)
    y = centroids[group] + rng.normal(0, 4, (len(group), 2))
    n, d = len(group), 32
    codes = rng.normal(size=(n_groups, d))
    mixing = rng.normal(size=(2, d))
    arrays = {
        0: rng.normal(size=(n, d)),
        1: codes[group] + 0.01 * rng.normal(size=(n, d)),
        2: (y - y.mean(0)) / y.std(0) @ mixing + 0.05 * rng.normal(size=(n, d)),
    }
    entities = pd.DataFrame(
        {
            "entity_id": [f"e{i}" for i in range(n)],
            "text": [f"town{i % 300} {chr(97 + g)}land" for i, g in enumerate(group)],
            "country": [f"C{g}" for g in group],
            "entity_type": "populated_place",
            "is_test": rng.random(n) < 0.25,
        }
    )
    targets = pd.DataFrame({"latitude": y[:, 0], "longitude": y[:, 1]})
    cache = FakeCache(entities, {k: v.astype(np.float32) for k, v in arrays.items()}, {"n_layers": 2, "n_entities": n})
    return cache, targets


def main_predictions(cache: FakeCache, targets: pd.DataFrame) -> dict[int, np.ndarray]:
    train = ~cache.entities["is_test"].to_numpy()
    out = {}
    for layer in cache.layers:
        probe = make_probe().fit(cache.layer(layer)[train], targets.to_numpy()[train])
        out[layer] = probe.predict(cache.layer(layer))
    return out


def run(names, cache, targets, workspace, predictions=None, **options):
    """The controls' metric rows (``run_controls(...).rows``; ``fits=True`` returns the whole ControlRun)."""
    fits = options.pop("fits", False)
    main = MainProbe(make_probe, predictions or main_predictions(cache, targets), shared=options.pop("shared", None),
                     worlds=options.pop("worlds", None))  # fmt: skip
    done = run_controls(
        names, workspace=workspace, dataset="world_place", model="tiny", prompt="empty", cache=cache,
        targets=targets, layers=cache.layers, main=main, seed=0, **options,
    )  # fmt: skip
    return done if fits else done.rows


def value(frame, control, layer, metric, target="mean", split="test"):
    sel = frame.query("control == @control and layer == @layer and metric == @metric and target == @target")
    sel = sel[sel["split"] == split]
    assert len(sel) == 1, sel
    return float(sel["value"].iloc[0])


def _matched(cache, targets, seed=0):
    entities = cache.entities
    return altworld.matched_worlds(group_keys(entities, "world_place"), entities["text"], targets.to_numpy(),
                                   ~entities["is_test"].to_numpy(), seed=seed, margin=0.05)  # fmt: skip


def test_matched_worlds_swap_groups_as_rigid_blocks_with_train_centroids():
    cache, targets = world()
    matched = _matched(cache, targets)
    assert matched.applicable and len(matched.worlds) == altworld.WORLDS, matched.reason
    groups = cache.entities["country"].to_numpy()
    train = ~cache.entities["is_test"].to_numpy()
    y = targets.to_numpy()
    centroids = {g: y[train & (groups == g)].mean(0) for g in set(groups)}
    for alt in matched.worlds:
        shift = alt - y
        moved = 0
        for g in set(groups):
            rows = groups == g
            np.testing.assert_allclose(shift[rows], np.broadcast_to(shift[rows][0], shift[rows].shape), atol=1e-9)
            assert any(np.allclose(centroids[g] + shift[rows][0], c) for c in centroids.values())  # onto a centroid
            moved += not np.allclose(shift[rows][0], 0)
        assert moved >= 2
    assert all(abs(v - matched.lexical_true) <= altworld.LEARNABILITY_TOLERANCE for v in matched.lexical_worlds)
    again = _matched(cache, targets)
    for a, b in zip(matched.worlds, again.worlds, strict=True):
        np.testing.assert_array_equal(a, b)  # seeded


def test_alternative_worlds_never_read_test_rows():
    """Changing every test row's target changes no world's shift and no train row's world target."""
    cache, targets = world()
    test = cache.entities["is_test"].to_numpy()
    changed = targets.copy()
    changed.loc[test] = np.random.default_rng(5).normal(0, 50, (test.sum(), 2))
    first, second = _matched(cache, targets), _matched(cache, changed)
    assert len(first.worlds) == len(second.worlds) > 0
    for a, b in zip(first.worlds, second.worlds, strict=True):
        np.testing.assert_allclose(a - targets.to_numpy(), b - changed.to_numpy())
        np.testing.assert_allclose(a[~test], b[~test])


def test_alternative_worlds_are_not_applicable_when_the_spelling_prefers_the_true_world():
    """Names that spell out the position (a neighbourhood code shared by neighbouring groups) make every swap less
    learnable from the spelling than the truth: the control says why it does not apply."""
    rng = np.random.default_rng(3)
    n_groups, per = 16, 30
    centre = np.column_stack([np.arange(n_groups) * 10.0, np.zeros(n_groups)])
    group = np.repeat(np.arange(n_groups), per)
    y = centre[group] + rng.normal(0, 1, (len(group), 2))
    text = pd.Series([f"{'ab' * (g // 4)}{'cd' * (g % 4)} x{i % 97}" for i, g in enumerate(group)])
    groups = pd.Series([f"G{g}" for g in group])
    matched = altworld.matched_worlds(groups, text, y, rng.random(len(y)) > 0.25, seed=0, margin=0.05)
    assert not matched.applicable and not matched.worlds
    assert "learnable from the spelling" in matched.reason or "prefers the true world" in matched.reason


def test_alt_world_gap_separates_geometry_from_group_lookup(workspace):
    cache, targets = world()
    frame = run(["alt_world"], cache, targets, workspace)
    assert set(frame["control"]) == {"alt_world"}
    geometry_gap = value(frame, "alt_world", 2, "r2_gap")
    lookup_gap = value(frame, "alt_world", 1, "r2_gap")
    assert geometry_gap > 0.05, geometry_gap  # the real map fits better than one with neighbours swapped
    assert abs(lookup_gap) < 0.03, lookup_gap  # "which country" fits any arrangement of countries equally well
    assert value(frame, "alt_world", 2, "n_permutations") == altworld.WORLDS
    assert value(frame, "alt_world", 2, "r2_gap_std") >= 0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda y: y * np.array([-1.0, 1.0]), id="mirror"),
        pytest.param(lambda y: y @ np.array([[0.6, -0.8], [0.8, 0.6]]) + np.array([5.0, -7.0]), id="rotate"),
        pytest.param(lambda y: 2020.0 - y[:, :1], id="reverse-time"),
    ],
)
def test_affine_changes_do_not_lower_a_linear_probe(change):
    """Mirroring, rotating or reversing time is no control: a linear probe fits them exactly as well."""
    cache, targets = world(seed=1)
    train = ~cache.entities["is_test"].to_numpy()
    x, y = cache.layer(2), targets.to_numpy()

    def test_r2(t):
        pred = make_probe().fit(x[train], t[train]).predict(x[~train]).reshape((~train).sum(), -1)
        return r2_score(t[~train], pred)

    base = test_r2(y[:, :1]) if change(y).shape[1] == 1 else test_r2(y)
    assert base > 0.9
    assert test_r2(change(y)) >= base - 0.01


def test_shuffled_targets_follow_the_text():
    texts = pd.Series(["x", "y", "x", "z", "y", "w"])
    y = np.arange(6, dtype=float).reshape(-1, 1) * 10
    shuffled = shuffled_targets(texts, y, seed=0)
    for text in texts.unique():
        rows = (texts == text).to_numpy()
        assert len(set(shuffled[rows, 0])) == 1  # identical inputs, identical targets
    firsts = {0.0, 10.0, 30.0, 50.0}  # the first entity's target of each distinct text
    assert set(shuffled[:, 0]) == firsts
    np.testing.assert_array_equal(shuffled, shuffled_targets(texts, y, seed=0))


def test_group_oracle_and_means():
    groups = pd.Series(["a", "a", "b", "b", "c"])
    y = np.array([1.0, 3.0, 10.0, 20.0, 7.0])
    fit = np.array([True, True, True, False, False])
    np.testing.assert_allclose(group_means(groups, y, fit)[:, 0], [2, 2, 10, 10, np.mean([1, 3, 10])])


def test_within_group_correlation_sees_only_what_is_beyond_the_group():
    rng = np.random.default_rng(0)
    groups = pd.Series(np.repeat(list("abcdefgh"), 50))
    centre = np.repeat(rng.normal(0, 100, 8), 50)
    y = (centre + rng.normal(0, 1, 400)).reshape(-1, 1)
    lookup = centre.reshape(-1, 1) + rng.normal(0, 0.01, (400, 1))  # knows only the group
    knows = y + rng.normal(0, 0.5, (400, 1))  # knows the position inside the group too
    assert abs(within_group_metrics(groups, y, lookup, ["year"])["year"]["pearson"]) < 0.2
    assert within_group_metrics(groups, y, knows, ["year"])["year"]["pearson"] > 0.8
    # both have a near-perfect plain correlation
    assert np.corrcoef(y[:, 0], lookup[:, 0])[0, 1] > 0.99


def test_lexical_control_reads_spelling_only():
    rng = np.random.default_rng(0)
    n = 600
    region = rng.integers(0, 3, n)
    y = np.column_stack([region * 30.0 + rng.normal(0, 1, n)])
    stems = ["".join(rng.choice(list("bcdfgklmnprst"), 5)) for _ in range(n)]
    suffix = np.array(["ford", "ville", "grad"])[region]
    is_test = rng.random(n) < 0.3
    spelled = lexical_predictions(pd.Series([s + x for s, x in zip(stems, suffix, strict=True)]), y, is_test, seed=0)
    assert r2_score(y[is_test], spelled[is_test]) > 0.8
    blind = lexical_predictions(pd.Series(stems), y, is_test, seed=0)
    assert r2_score(y[is_test], blind[is_test]) < 0.2


@pytest.mark.slow
def test_run_controls_writes_tidy_rows_for_every_control(workspace, monkeypatch):
    cache, targets = world()
    # the twin holds the same entities in another order: rows must be matched by entity_id
    twin = FakeCache(cache.entities[::-1].reset_index(drop=True), {k: v[::-1] for k, v in cache.arrays.items()})
    calls = []

    def fake_find_twin(manifest, *, seed, layers, workspace):
        calls.append((manifest, seed, list(layers)))
        return workspace.activations / "twin"

    from worldprobe.extract import cache as cache_mod

    monkeypatch.setattr(cache_mod, "find_twin", fake_find_twin)
    monkeypatch.setattr(cache_mod, "find_pooled", lambda manifest, workspace: workspace.activations / "pooled")
    monkeypatch.setattr(cache_mod, "open_cache", lambda path: twin)  # the pooled embeddings too (layer 0: noise)
    done = run(list(controls.CONTROLS), cache, targets, workspace, fits=True)
    frame = done.rows

    assert list(frame.columns) == list(METRIC_COLUMNS)
    assert set(frame["control"]) == set(controls.CONTROLS)
    assert "none" not in set(frame["control"])
    assert set(frame["target"]) == {"latitude", "longitude", "mean"}
    assert frame["value"].notna().all()
    # one twin per seed, looked up (never extracted) for the model cache's manifest and the layers probed
    assert [c[1] for c in calls] == [0, 1, 2]
    assert all(c[0] is cache.manifest and c[2] == list(cache.layers) for c in calls)
    seed_1 = frame.query("control == 'random_init' and seed == 1")
    assert value(seed_1, "random_init", 0, "r2") < 0.1  # layer 0 is noise
    assert value(seed_1, "random_init", 2, "r2") > 0.9  # the same activations, matched row by row
    # every fit is kept for the bootstrap; layered ones carry their own train-selected layer
    kept = {(f.control, f.seed): f for f in done.fits}
    assert set(kept) == {("random_init", 0), ("random_init", 1), ("random_init", 2), ("shuffled", None),
                         ("lexical", None), ("embedding", None), ("group_oracle", None)}  # fmt: skip
    assert kept[("random_init", 0)].selected_layer == 2 and not kept[("lexical", None)].layered
    alt = done.alt_world
    assert alt is not None and len(alt.lexical) == len(alt.worlds) == altworld.WORLDS
    assert sorted(alt.random_init) == [0, 1, 2] and all(layer == 2 for layer, _ in alt.random_init.values())
    assert value(frame, "shuffled", 2, "r2") < 0.1  # the floor
    assert value(frame, "group_oracle", 2, "r2") > 0.9  # countries explain most of a map
    for layer in cache.layers:  # layer-free controls draw as flat lines
        assert value(frame, "group_oracle", layer, "r2") == value(frame, "group_oracle", 0, "r2")
        assert value(frame, "embedding", layer, "r2") == value(frame, "embedding", 0, "r2")
    assert value(frame, "within_group", 2, "pearson") > 0.5  # layer 2 knows positions inside countries
    assert value(frame, "within_group", 1, "pearson") < 0.3  # layer 1 knows only the country
    np.testing.assert_array_equal(frame["rel_depth"].unique(), [0.0, 0.5, 1.0])

    again = run(list(controls.CONTROLS), cache, targets, workspace)
    pd.testing.assert_frame_equal(frame, again)  # deterministic under the seed
    assert frame.query("metric == 'selection_r2'")["split"].eq("train").all()


def test_control_names_resolve_in_a_fixed_order():
    assert controls.resolve_controls(["alt_world", "shuffled"]) == ["shuffled", "alt_world"]
    assert controls.resolve_controls(["all"]) == list(controls.CONTROLS)
    with pytest.raises(WorldprobeError, match="unknown control"):
        controls.resolve_controls(["shuffle"])


def test_run_controls_rejects_bad_requests(workspace):
    cache, targets = world(n_groups=3, per_group=10)
    with pytest.raises(WorldprobeError, match="unknown control"):
        run(["bogus"], cache, targets, workspace)
    with pytest.raises(WorldprobeError, match="target rows"):
        run(["shuffled"], cache, targets.iloc[:5], workspace, predictions=main_predictions(cache, targets))
    unpooled = FakeCache(cache.entities, cache.arrays, {"dataset": "world_place", "model": "tiny", "prompt": "empty",
                                                        "dtype": "float32", "n_layers": 2})  # fmt: skip
    with pytest.raises(WorldprobeError, match="the embedding control reads layer 0 averaged") as error:
        run(["embedding"], unpooled, targets, workspace)
    assert "--control embedding" in error.value.hint


def test_controls_fitted_in_the_probes_own_sweep_equal_their_own_fits(workspace):
    """shuffled and alt_world fitted beside the probe (one decomposition per layer) give the rows they give alone."""
    from worldprobe.probes.sweep import layer_sweep

    cache, targets = world()
    y = targets.to_numpy()
    extra = controls.control_targets(["shuffled", "alt_world"], cache.entities, y, "world_place", seed=0)
    result = layer_sweep(cache.layer, targets, cache.entities["is_test"].to_numpy(), cache.layers, make_probe,
                         kind="place", progress=False, extra=extra.sets)  # fmt: skip
    alone = run(["shuffled", "alt_world"], cache, targets, workspace, predictions=result.predictions)
    shared = run(["shuffled", "alt_world"], cache, targets, workspace, predictions=result.predictions,
                 shared=result.shared, worlds=extra.worlds)  # fmt: skip
    assert len(result.shared["alt_world"].targets) == altworld.WORLDS
    pd.testing.assert_frame_equal(alone.drop(columns="value"), shared.drop(columns="value"))
    np.testing.assert_allclose(shared["value"], alone["value"], rtol=1e-8, atol=1e-10)


def test_kernel_ridge_on_the_ngrams_equals_scikit_learns_ridge():
    """The alternative worlds' exact kernel fits (``lexical.holdout_predictions``, ``lexical.CrossFit``) are the
    lexical ridge with an unpenalised intercept: the same predictions as scikit-learn's Ridge on the dense n-grams."""
    from sklearn.linear_model import Ridge

    from worldprobe.probes.lexical import CrossFit, holdout_predictions, vectorizer

    rng = np.random.default_rng(0)
    texts = pd.Series(["".join(rng.choice(list("abcdefghij"), 8)) for _ in range(300)])
    y = rng.normal(size=(300, 2)) + np.array([5.0, -3.0])
    fit = rng.random(300) < 0.7
    mine = holdout_predictions(texts, [y], fit, ~fit, alpha=3.0)[0]
    words = vectorizer()
    x = words.fit_transform(texts[fit]).toarray()
    theirs = Ridge(alpha=3.0, solver="cholesky").fit(x, y[fit]).predict(words.transform(texts[~fit]).toarray())
    np.testing.assert_allclose(mine[~fit], theirs, atol=1e-5)
    assert np.isnan(mine[fit]).all()
    cross = CrossFit(texts, fit, alpha=3.0, folds=4, seed=1)
    (folded,) = cross.predict([y])
    assert len(cross.rows) == fit.sum() and folded.shape == (fit.sum(), 2)
    # each row predicted without itself: far from the fitted values of a fit that saw it
    seen = Ridge(alpha=3.0, solver="cholesky").fit(x, y[fit]).predict(x)
    assert np.abs(folded - seen).mean() > 0.1
