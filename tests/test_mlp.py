"""MLPProbe: learns a nonlinear target, restores its best epoch, picks the weight decay on validation, is seeded."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from worldprobe.probes.mlp import MLPProbe
from worldprobe.probes.ridge import RidgeProbe


def _data(n=1500, d=16, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = np.stack([np.abs(X[:, 0]) * 3 + X[:, 1], X[:, 2] ** 2 - X[:, 3]], axis=1) + rng.normal(size=(n, 2)) * 0.1
    return X, y


@pytest.mark.slow
def test_learns_what_a_linear_probe_cannot():
    X, y = _data(1000)
    Xt, yt = _data(500, seed=1)
    mlp = MLPProbe(n_threads=1, batch_size=64, seed=0).fit(X, y)
    assert mlp.score(Xt, yt) > 0.8
    assert RidgeProbe().fit(X, y).score(Xt, yt) < 0.5
    assert mlp.weight_decay_ in (0.01, 0.03, 0.1, 0.3)
    assert set(mlp.val_loss_) == {0.01, 0.03, 0.1, 0.3}
    assert mlp.val_loss_[mlp.weight_decay_] == min(mlp.val_loss_.values())


def test_same_seed_same_model_other_seed_differs():
    X, y = _data(600)
    a = MLPProbe(n_threads=1, max_epochs=3, weight_decays=(0.1,), seed=7).fit(X, y).predict(X)
    b = MLPProbe(n_threads=1, max_epochs=3, weight_decays=(0.1,), seed=7).fit(X, y).predict(X)
    c = MLPProbe(n_threads=1, max_epochs=3, weight_decays=(0.1,), seed=8).fit(X, y).predict(X)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_restores_the_best_epoch():
    """Pure-noise targets: validation loss is best early and then rises as the net memorises the noise, so the
    kept model must be the best epoch's (its validation loss equals the recorded best, not the last epoch's)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 64)).astype(np.float32)
    y = rng.normal(size=300)
    probe = MLPProbe(n_threads=1, weight_decays=(0.01,), max_epochs=20, patience=3, batch_size=32, seed=0).fit(X, y)
    wd = probe.weight_decay_
    assert probe.best_epoch_[wd] < 20
    order = np.random.default_rng(0).permutation(300)
    val = order[:30]
    z_pred = (probe.predict(X[val]) - probe.y_mean_[0]) / probe.y_scale_[0]
    z_true = (y[val] - probe.y_mean_[0]) / probe.y_scale_[0]
    assert np.mean((z_pred - z_true) ** 2) == pytest.approx(probe.val_loss_[wd], rel=1e-4)


def test_estimator_contract_and_single_target_shape():
    X, y = _data(400)
    probe = MLPProbe(n_threads=1, max_epochs=2, weight_decays=(0.1,))
    assert clone(probe).get_params() == probe.get_params()
    pred = probe.fit(X, y[:, 0]).predict(X)
    assert pred.shape == (400,)
    with pytest.raises(ValueError, match="NaN"):
        MLPProbe(
            n_threads=1,
        ).fit(X, np.full(400, np.nan))
