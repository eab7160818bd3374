"""RidgeProbe: exact leave-one-out ridge against sklearn's RidgeCV, both regimes (n > d, n < d), the estimator API."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.model_selection import cross_val_score

from worldprobe.probes.ridge import DEFAULT_ALPHAS, RidgeProbe


def _data(n: int, d: int, k: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    scales = np.exp(rng.normal(0, 1.5, size=d))  # outlier dimensions, as in small LMs
    X = rng.normal(size=(n, d)) * scales + rng.normal(size=d) * 3
    w = rng.normal(size=(d, k)) / scales[:, None]
    y = X @ w + rng.normal(size=(n, k)) * 2 + np.array([30.0, -80.0][:k])
    return X, y


def _sklearn_on_zscored(X, y, alphas):
    """RidgeCV on the same z-scored targets our probe uses (alpha is chosen on the mean LOO error over targets);
    predictions mapped back to target units. Ridge predictions are linear in y, so this is the honest comparison."""
    mean, std = y.mean(axis=0), y.std(axis=0)
    model = RidgeCV(alphas=alphas).fit(X, (y - mean) / std)
    return model, lambda Z: model.predict(Z) * std + mean


@pytest.mark.parametrize(("n", "d"), [(400, 60), (80, 300), (150, 150)])
def test_matches_sklearn_ridgecv(n, d):
    X, y = _data(n, d)
    X_new, _ = _data(50, d, seed=1)
    ours = RidgeProbe(alphas=DEFAULT_ALPHAS, standardize=False).fit(X, y)
    theirs, predict = _sklearn_on_zscored(X, y, DEFAULT_ALPHAS)
    assert ours.alpha_ == theirs.alpha_
    expected = predict(X_new)
    assert np.max(np.abs(ours.predict(X_new) - expected)) <= 1e-6 * np.max(np.abs(expected))
    assert ours.loo_mse_[ours.alpha_index_] == pytest.approx(-theirs.best_score_, rel=1e-8)


def test_single_target_matches_sklearn_on_raw_targets():
    """With one target, z-scoring changes nothing: compare with RidgeCV fitted on the raw y."""
    X, y = _data(300, 40, k=1)
    y = y[:, 0]
    ours = RidgeProbe(alphas=DEFAULT_ALPHAS, standardize=False).fit(X, y)
    theirs = RidgeCV(alphas=DEFAULT_ALPHAS).fit(X, y)
    assert ours.alpha_ == theirs.alpha_
    assert ours.coef_.shape == (40,) and isinstance(ours.intercept_, float)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-6)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-6, atol=1e-9)
    assert ours.intercept_ == pytest.approx(theirs.intercept_, rel=1e-6)


def test_standardize_matches_sklearn_on_standardized_features():
    X, y = _data(300, 50)
    ours = RidgeProbe(alphas=DEFAULT_ALPHAS, standardize=True).fit(X, y)
    Xs = (X - X.mean(axis=0)) / X.std(axis=0)
    theirs, predict = _sklearn_on_zscored(Xs, y, DEFAULT_ALPHAS)
    assert ours.alpha_ == theirs.alpha_
    np.testing.assert_allclose(ours.predict(X), predict(Xs), rtol=1e-6)


def test_loo_error_is_the_real_leave_one_out_error():
    """Brute force: refit without each row and compare the held-out residuals with the closed form."""
    X, y = _data(40, 8, k=1)
    y = y[:, 0]
    probe = RidgeProbe(alphas=[3.0], standardize=False).fit(X, y)
    yz = (y - y.mean()) / y.std()
    errors = [
        yz[i] - Ridge(alpha=3.0).fit(np.delete(X, i, 0), np.delete(yz, i)).predict(X[i : i + 1])[0]
        for i in range(len(y))
    ]
    assert probe.loo_mse_[0] == pytest.approx(np.mean(np.square(errors)), rel=1e-9)


def test_alpha_on_edge_flag():
    X, y = _data(200, 20)
    assert RidgeProbe(alphas=[1e6, 1e7, 1e8], standardize=False).fit(X, y).alpha_on_edge_  # far too strong
    assert not RidgeProbe(standardize=False).fit(X, y).alpha_on_edge_


def test_reads_float16_memmap_and_rows(tmp_path):
    X, y = _data(500, 30)
    path = tmp_path / "layer.npy"
    np.save(path, X.astype(np.float16))
    mm = np.load(path, mmap_mode="r")
    a = RidgeProbe().fit(mm, y).predict(mm)
    b = RidgeProbe().fit(X.astype(np.float16).astype(np.float64), y).predict(X.astype(np.float16))
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_sklearn_estimator_contract():
    X, y = _data(200, 10, k=1)
    probe = RidgeProbe(alphas=[0.1, 1.0], standardize=True)
    assert probe.get_params() == {"alphas": [0.1, 1.0], "standardize": True, "device": "auto"}
    assert clone(probe).get_params()["alphas"] == [0.1, 1.0]
    scores = cross_val_score(probe, X, y[:, 0], cv=3)
    assert scores.shape == (3,) and (scores > 0.5).all()
    fitted = probe.fit(X, y[:, 0])
    assert fitted.score(X, y[:, 0]) == pytest.approx(1 - np.var(y[:, 0] - fitted.predict(X)) / np.var(y[:, 0]))


def test_rejects_bad_input():
    X, y = _data(50, 5)
    with pytest.raises(ValueError, match="NaN"):
        RidgeProbe().fit(X, np.where(np.arange(50)[:, None] == 3, np.nan, y))
    with pytest.raises(ValueError, match="rows"):
        RidgeProbe().fit(X, y[:10])
    with pytest.raises(ValueError, match="positive"):
        RidgeProbe(alphas=[0.0, 1.0]).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        RidgeProbe().fit(X, y).predict(X[:, :3])


def test_deterministic():
    X, y = _data(300, 40)
    a, b = RidgeProbe().fit(X, y), RidgeProbe().fit(X, y)
    assert np.array_equal(a.coef_, b.coef_) and a.alpha_ == b.alpha_


@pytest.mark.parametrize(("n", "d"), [(300, 40), (60, 200)])
def test_fit_many_equals_one_fit_per_target_set(n, d):
    X, y = _data(n, d)
    rng = np.random.default_rng(5)
    target_sets = [y, y[rng.permutation(n)], y[:, 0] * 1e3, (y @ [[1.0], [0.0]])[:, 0] + rng.normal(0, 50, n)]
    probe = RidgeProbe(standardize=True)
    many = probe.fit_many(X, target_sets)
    assert len(many) == len(target_sets) and not hasattr(probe, "coef_")
    alphas = set()
    for fitted, target in zip(many, target_sets, strict=True):
        alone = clone(probe).fit(X, target)
        alphas.add(fitted.alpha_)
        assert fitted.alpha_ == alone.alpha_ and np.shape(fitted.coef_) == np.shape(alone.coef_)
        np.testing.assert_allclose(fitted.predict(X), alone.predict(X), rtol=1e-9, atol=1e-9 * np.abs(target).max())
        np.testing.assert_allclose(fitted.loo_mse_, alone.loo_mse_, rtol=1e-9)
    assert len(alphas) > 1  # each target set picked its own penalty


@pytest.mark.parametrize(("n", "d"), [(600, 40), (120, 200)])
@pytest.mark.parametrize("standardize", [True, False])
def test_fit_without_blocks_equals_one_fit_per_block(n, d, standardize):
    """Downdating the pool's Gram matrix gives the probe fitted on the rows outside each block: same alpha, same
    predictions. Features far from zero (mean 1e4 x their spread) would expose cancellation in the downdate, and a
    column constant outside one block must keep scale 1 as a direct fit does."""
    X, y = _data(n, d)
    X[:, 3] += 1e4 * X[:, 3].std()
    rng = np.random.default_rng(7)
    groups = rng.integers(0, 6, size=n)
    X[groups != 0, 5] = 2.5  # varies only inside block 0
    blocks = [groups == g for g in range(5)] + [np.flatnonzero(groups == 5)]  # masks and row indices
    probe = RidgeProbe(standardize=standardize)
    fitted = probe.fit_without_blocks(X, y, blocks)
    assert len(fitted) == len(blocks) and not hasattr(probe, "coef_")
    for one, block in zip(fitted, blocks, strict=True):
        outside = np.ones(n, dtype=bool)
        outside[block] = False
        alone = clone(probe).fit(X[outside], y[outside])
        assert one.alpha_ == alone.alpha_
        np.testing.assert_allclose(one.loo_mse_, alone.loo_mse_, rtol=1e-7)
        np.testing.assert_allclose(one.feature_scale_, alone.feature_scale_, rtol=1e-9)
        np.testing.assert_allclose(one.predict(X), alone.predict(X), rtol=1e-8, atol=1e-8 * np.abs(y).max())


def test_fit_without_blocks_rejects_a_block_leaving_too_few_rows():
    X, y = _data(50, 5)
    with pytest.raises(ValueError, match="at least 3 rows outside"):
        RidgeProbe().fit_without_blocks(X, y, [np.arange(48)])


@pytest.mark.parametrize(("n", "d"), [(400, 60), (80, 300)])
def test_the_scipy_path_of_wide_fits_matches_sklearn_and_the_torch_path(n, d, monkeypatch):
    """Wide CPU fits (``SCIPY_MIN_WIDTH`` and up) take the Gram matrix from BLAS syrk and the eigendecomposition from
    LAPACK's MRRR driver; lowered to these widths, both paths and scikit-learn agree (the kernel path, n < d, too)."""
    from worldprobe.probes import ridge

    X, y = _data(n, d)
    X_new, _ = _data(50, d, seed=1)
    blocks = [np.arange(n) % 4 == b for b in range(4)]
    torch_path = RidgeProbe(standardize=True).fit(X, y)
    torch_blocks = RidgeProbe(standardize=True).fit_without_blocks(X, y, blocks)
    monkeypatch.setattr(ridge, "SCIPY_MIN_WIDTH", 8)
    scipy_path = RidgeProbe(standardize=True).fit(X, y)
    for one, other in zip(RidgeProbe(standardize=True).fit_without_blocks(X, y, blocks), torch_blocks, strict=True):
        assert one.alpha_ == other.alpha_
        np.testing.assert_allclose(one.predict(X_new), other.predict(X_new), rtol=1e-8, atol=1e-8 * np.abs(y).max())
    many = scipy_path.fit_many(X, [y, y[::-1]])
    assert scipy_path.alpha_ == torch_path.alpha_ and many[0].alpha_ == torch_path.alpha_
    expected = torch_path.predict(X_new)
    assert np.max(np.abs(scipy_path.predict(X_new) - expected)) <= 1e-9 * np.max(np.abs(expected))
    np.testing.assert_allclose(many[0].predict(X_new), expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    theirs, predict = _sklearn_on_zscored((X - X.mean(0)) / X.std(0), y, DEFAULT_ALPHAS)
    assert scipy_path.alpha_ == theirs.alpha_
