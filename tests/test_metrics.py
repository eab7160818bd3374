"""Metrics against hand-computed cases; haversine in (lat, lon) order; swapped or unnamed columns are caught."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from worldprobe.errors import WorldprobeError
from worldprobe.probes import metrics


def test_r2_per_target_and_mean_by_hand():
    true = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 0.0, 3.0]})
    pred = pd.DataFrame({"b": [0.0, 1.0, 2.0], "a": [1.0, 2.0, 4.0]})  # columns in another order: matched by name
    # a: SS_res = 1, SS_tot = 2 -> 0.5;  b: SS_res = 2, SS_tot = 6 -> 2/3
    per = metrics.r2_per_target(true, pred)
    assert per["a"] == pytest.approx(0.5) and per["b"] == pytest.approx(2 / 3)
    assert metrics.r2(true, pred) == pytest.approx((0.5 + 2 / 3) / 2)


def test_correlations_and_mae_by_hand():
    true = pd.DataFrame({"year": [1.0, 2.0, 3.0, 4.0]})
    pred = pd.DataFrame({"year": [1.0, 3.0, 2.0, 4.0]})
    # ranks equal values here: 1 - 6 * sum(d²) / (n (n²-1)) = 1 - 6*2/60 = 0.8
    assert metrics.spearman_per_target(true, pred)["year"] == pytest.approx(0.8)
    assert metrics.pearson_per_target(true, pred)["year"] == pytest.approx(0.8)
    assert metrics.mae_per_target(true, pred)["year"] == pytest.approx(0.5)
    np.testing.assert_allclose(metrics.abs_error_years([1900.0, 2000.5], [1910.0, 1990.0]), [10.0, 10.5])


def test_missing_target_column_raises():
    with pytest.raises(WorldprobeError, match="lack target"):
        metrics.r2(pd.DataFrame({"a": [1.0, 2.0]}), pd.DataFrame({"b": [1.0, 2.0]}))


@pytest.mark.parametrize("lon", [-179.0, -120.0, -30.0, 0.0, 45.0, 100.0, 179.0])
def test_one_degree_of_latitude_is_111_km_at_any_longitude(lon):
    true = pd.DataFrame({"latitude": [10.0, -45.0], "longitude": [lon, lon]})
    pred = pd.DataFrame({"latitude": [11.0, -44.0], "longitude": [lon, lon]})
    np.testing.assert_allclose(metrics.haversine_km(true, pred), 111.195, rtol=1e-3)


def test_haversine_by_hand():
    # one degree of longitude on the equator = 1/360 of the circumference; at 60° latitude half of that
    # (along a small circle; the great-circle distance is a hair shorter)
    equator = metrics.haversine_km(np.array([[0.0, 0.0]]), np.array([[0.0, 1.0]]))[0]
    assert equator == pytest.approx(2 * np.pi * metrics.EARTH_RADIUS_KM / 360)
    sixty = metrics.haversine_km(np.array([[60.0, 0.0]]), np.array([[60.0, 1.0]]))[0]
    assert sixty == pytest.approx(equator / 2, rel=1e-4)
    antipode = metrics.haversine_km(np.array([[0.0, 0.0]]), np.array([[0.0, 180.0]]))[0]
    assert antipode == pytest.approx(np.pi * metrics.EARTH_RADIUS_KM)


def test_named_columns_in_any_order_give_the_same_distance():
    true = pd.DataFrame({"latitude": [40.7], "longitude": [-74.0]})  # New York
    pred = pd.DataFrame({"latitude": [51.5], "longitude": [-0.13]})  # London
    flipped = pred[["longitude", "latitude"]]
    d = metrics.haversine_km(true, pred)[0]
    assert d == pytest.approx(5570, rel=0.01)
    assert metrics.haversine_km(true, flipped)[0] == d


def test_swapped_columns_are_caught():
    # (lon, lat) passed where (lat, lon) is expected: New York's longitude -74 passes as a latitude, but
    # a US west-coast point (lon -122) cannot be a latitude
    swapped = np.array([[-74.0, 40.7], [-122.4, 37.8]])
    with pytest.raises(WorldprobeError, match="swapped"):
        metrics.haversine_km(swapped, swapped)
    mislabeled = pd.DataFrame({"latitude": [-122.4], "longitude": [37.8]})
    with pytest.raises(WorldprobeError, match="swapped"):
        metrics.haversine_km(mislabeled, mislabeled)


def test_unnamed_columns_are_refused():
    with pytest.raises(WorldprobeError, match="named"):
        metrics.haversine_km(pd.DataFrame([[1.0, 2.0]]), pd.DataFrame([[1.0, 2.0]]))
    with pytest.raises(WorldprobeError, match="named"):
        metrics.haversine_km(pd.DataFrame({"lat": [1.0], "lon": [2.0]}), np.array([[1.0, 2.0]]))


def test_proximity_error_by_hand_time():
    true = np.array([0.0, 10.0, 20.0, 30.0])
    pred = np.array([0.0, 14.0, 20.0, 10.0])
    # i=0: own error 0 -> nobody closer -> 0.   i=1 (true 10): own 4; others' predictions 0, 20, 10 are at 10, 10, 0
    # -> one closer (the 10 of i=3) -> 1/3.   i=2: own 0 -> 0.   i=3 (true 30): own 20; 0->30, 14->16, 20->10
    # -> two closer -> 2/3
    np.testing.assert_allclose(metrics.proximity_error(true, pred, kind="time"), [0, 1 / 3, 0, 2 / 3])
    np.testing.assert_allclose(metrics.proximity_error(true, pred, kind="time", rows=np.array([3, 1])), [2 / 3, 1 / 3])


def test_proximity_error_blocks_equal_one_pass_and_random_is_half():
    rng = np.random.default_rng(0)
    true = pd.DataFrame({"latitude": rng.uniform(-60, 60, 700), "longitude": rng.uniform(-180, 180, 700)})
    pred = true.sample(frac=1.0, random_state=1).reset_index(drop=True)  # predictions unrelated to the truth
    small = metrics.proximity_error(true, pred, kind="place", block_size=64)
    whole = metrics.proximity_error(true, pred, kind="place", block_size=10_000)
    np.testing.assert_array_equal(small, whole)
    assert 0.4 < small.mean() < 0.6
    assert metrics.proximity_error(true, true, kind="place").max() == 0.0


def test_predictions_beyond_the_globe_are_measured_not_refused():
    """A linear probe can predict latitude 95 or longitude 200: clip latitude to the pole, wrap longitude."""
    true = pd.DataFrame({"latitude": [89.0, 0.0], "longitude": [0.0, 170.0]})
    pred = pd.DataFrame({"latitude": [95.0, 0.0], "longitude": [0.0, 200.0]})  # 200°E is 160°W, 30° from 170°E
    np.testing.assert_allclose(metrics.haversine_km(true, pred), [111.195, 30 * 111.195], rtol=1e-3)
    with pytest.raises(WorldprobeError, match="swapped"):
        metrics.haversine_km(pred, true)  # true points are checked strictly


def test_column_metrics_match_sklearn_and_scipy_including_ties_and_constants():
    from scipy import stats
    from sklearn.metrics import r2_score

    from worldprobe.probes.metrics import pearson_columns, r2_columns, spearman_columns

    rng = np.random.default_rng(0)
    true = np.column_stack([rng.normal(size=60), rng.integers(0, 5, 60).astype(float)])  # second column has ties
    pred = true + rng.normal(size=true.shape)
    pred[:, 1] = np.round(pred[:, 1])
    for j in range(2):
        assert r2_columns(true, pred)[j] == pytest.approx(r2_score(true[:, j], pred[:, j]), rel=1e-12)
        assert pearson_columns(true, pred)[j] == pytest.approx(stats.pearsonr(true[:, j], pred[:, j])[0], rel=1e-12)
        assert spearman_columns(true, pred)[j] == pytest.approx(stats.spearmanr(true[:, j], pred[:, j])[0], rel=1e-12)
    constant = np.full(10, 3.0)
    assert r2_columns(constant, constant)[0] == 1.0 and r2_columns(constant, constant + 1)[0] == 0.0
    assert np.isnan(pearson_columns(constant, np.arange(10.0))[0])
    assert np.isnan(spearman_columns(np.ones(1), np.ones(1))[0])


def test_proximity_error_on_the_sphere_counts_as_great_circle_distances_do():
    """The dot-product ordering gives the counts of haversine distances, pair by pair (brute force). Predictions stay
    off the poles, where points of every longitude coincide and rounding alone breaks their ties (either way)."""
    rng = np.random.default_rng(3)
    true = np.column_stack([rng.uniform(-80, 80, 300), rng.uniform(-180, 180, 300)])
    pred = np.clip(true + rng.normal(0, 25, size=true.shape), -89, 89)
    expected = []
    for i in range(len(true)):
        d = metrics.haversine_km(np.repeat(true[i : i + 1], len(true), axis=0), pred)
        expected.append((d < d[i]).sum() / (len(true) - 1))
    np.testing.assert_array_equal(metrics.proximity_error(true, pred, kind="place"), expected)

