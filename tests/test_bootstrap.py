"""The vectorised bootstrap: each weighted statistic equals the plain statistic on the explicitly resampled rows,
the point value equals the project's metrics, and 95% intervals cover a known R² about 95% of the time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from worldprobe.probes import bootstrap as bs
from worldprobe.probes.controls import within_group_metrics
from worldprobe.probes.metrics import pearson_columns, r2_columns, spearman_columns


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.column_stack([rng.normal(size=n), rng.integers(0, 5, n).astype(float)])  # second column with ties
    pred = y + rng.normal(scale=0.8, size=y.shape)
    pred[:, 1] = np.round(pred[:, 1])  # ties in the predictions too
    groups = rng.integers(0, 6, n).astype(str)
    return y, pred, groups


def _explicit(w_row):
    """Row indices of one resample given its counts."""
    return np.repeat(np.arange(len(w_row)), w_row)


def test_counts_are_seeded_resamples_of_n():
    w = bs.resample_counts(50, 200, seed=3)
    assert w.shape == (200, 50) and (w.sum(axis=1) == 50).all() and (w >= 0).all()
    assert np.array_equal(w, bs.resample_counts(50, 200, seed=3))
    assert not np.array_equal(w, bs.resample_counts(50, 200, seed=4))


@pytest.mark.parametrize("b", range(5))
def test_weighted_statistics_equal_plain_statistics_on_the_drawn_rows(b):
    y, pred, groups = _data()
    w = bs.resample_counts(len(y), 5, seed=11)
    idx = _explicit(w[b])
    one = w[b : b + 1]
    np.testing.assert_allclose(bs.weighted_r2(y, pred, one)[0], r2_columns(y[idx], pred[idx]), atol=1e-10)
    np.testing.assert_allclose(bs.weighted_pearson(y, pred, one)[0], pearson_columns(y[idx], pred[idx]), atol=1e-10)
    np.testing.assert_allclose(bs.weighted_spearman(y, pred, one)[0], spearman_columns(y[idx], pred[idx]), atol=1e-10)
    err = np.abs(y[:, 0] - pred[:, 0])
    assert bs.weighted_median(err, one)[0] == pytest.approx(np.median(err[idx]))
    assert bs.weighted_mean(err, one)[0] == pytest.approx(err[idx].mean())


def test_weighted_ranks_match_scipy_with_ties():
    x = np.array([3.0, 1.0, 3.0, 2.0, 1.0, 5.0])
    w = np.array([[2, 0, 1, 1, 1, 1]])
    idx = _explicit(w[0])
    expected = stats.rankdata(x[idx])
    ranks = bs.weighted_ranks(x, w)[0]
    assert [ranks[i] for i in idx] == pytest.approx(list(expected))


def test_within_group_r_point_value_equals_the_controls_metric():
    y, pred, groups = _data(n=80)
    value = bs.weighted_within_group_r(groups, y, pred, np.ones((1, len(y))))[0]
    expected = within_group_metrics(pd.Series(groups), y, pred, ["a", "b"])
    assert value[0] == pytest.approx(expected["a"]["pearson"])
    assert value[1] == pytest.approx(expected["b"]["pearson"])


def test_within_group_r_on_a_resample_equals_the_metric_on_the_drawn_rows():
    y, pred, groups = _data(n=80, seed=5)
    w = bs.resample_counts(len(y), 3, seed=2)
    idx = _explicit(w[1])
    # the metric on the drawn rows, with the sample's singleton groups removed first (they are left out either way)
    sizes = pd.Series(groups).value_counts()
    keep = np.array([sizes[g] > 1 for g in groups])[idx]
    expected = within_group_metrics(pd.Series(groups[idx][keep]), y[idx][keep], pred[idx][keep], ["a", "b"])
    value = bs.weighted_within_group_r(groups, y, pred, w[1:2])[0]
    assert value[0] == pytest.approx(expected["a"]["pearson"], abs=1e-9)


def test_estimate_value_is_the_sample_statistic_and_the_interval_surrounds_it():
    y, pred, _ = _data(n=200)
    w = bs.resample_counts(len(y), 1000, seed=0)
    est = bs.estimate(lambda w: bs.weighted_r2(y, pred, w)[:, 0], w)
    assert est.value == pytest.approx(r2_columns(y, pred)[0])
    assert est.low < est.value < est.high and est.n == 200


def test_paired_difference_of_identical_predictions_is_exactly_zero():
    y, pred, _ = _data(n=100)
    w = bs.resample_counts(len(y), 300, seed=1)
    diff = bs.estimate(lambda w: bs.weighted_r2(y, pred, w)[:, 0] - bs.weighted_r2(y, pred, w)[:, 0], w)
    assert (diff.value, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert not diff.excludes_zero


def test_95_percent_intervals_cover_a_known_r2():
    """A fixed predictor p = y + e with Var(y) = 1 and Var(e) = 0.5: population R² = 1 - 0.5/1 = 0.5."""
    rng = np.random.default_rng(123)
    trials, n, covered = 200, 300, 0
    for trial in range(trials):
        y = rng.normal(size=n)
        pred = y + rng.normal(scale=np.sqrt(0.5), size=n)
        w = bs.resample_counts(n, 1000, seed=trial)
        est = bs.estimate(lambda w, y=y, pred=pred: bs.weighted_r2(y, pred, w)[:, 0], w)
        covered += est.low <= 0.5 <= est.high
    assert 0.90 <= covered / trials <= 0.99, covered / trials


def test_text_drops_leading_zeros():
    assert bs.Estimate(0.361, 0.3, 0.41, 10).text() == ".36 [.30, .41]"
    assert bs.Estimate(-0.052, -0.1, 0.01, 10).text(signed=True) == "-.05 [-.10, .01]"
    assert bs.fmt(1.2) == "1.20"
