"""The probes keep scikit-learn's estimator contract: every check of ``check_estimator`` passes (cloning, fitted
attributes, input validation in scikit-learn's words, NaN/inf refused in fit and predict, multi-output targets)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from worldprobe.probes.mlp import MLPProbe
from worldprobe.probes.ridge import RidgeProbe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@parametrize_with_checks([RidgeProbe(), MLPProbe()])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_a_nan_in_a_cached_layer_is_refused_by_name():
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float16)
    y = X[:, 0].astype(np.float64)
    X[17, 2] = np.nan  # e.g. a float16 overflow written into a cache
    for probe in (RidgeProbe(), MLPProbe()):
        with pytest.raises(ValueError, match="X contains NaN or inf .*worldprobe verify"):
            probe.fit(X, y)
