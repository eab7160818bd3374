"""Input checks shared by the probes, in scikit-learn's words (its ``check_estimator`` passes), without copying X: a
layer's float16 memmap stays a memmap, and its finiteness is checked chunk by chunk as a probe reads it."""

from __future__ import annotations

import numpy as np
import scipy.sparse


def check_features(X, min_samples: int = 1):
    """``X`` as a 2-D real array-like (any object with ``shape``, ``dtype`` and row indexing is kept as it is)."""
    if scipy.sparse.issparse(X):
        raise TypeError("sparse X is not supported: the probes read dense activations (pass X.toarray())")
    if not all(hasattr(X, attr) for attr in ("shape", "dtype", "__getitem__")):
        X = np.asarray(X)
    if np.issubdtype(X.dtype, np.complexfloating):
        raise ValueError("Complex data not supported")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        X = np.asarray(X, dtype=np.float64)  # strings of numbers convert; anything else raises here
    if len(X.shape) != 2:
        raise ValueError(f"Expected a 2-D X (n_samples, n_features), got shape {X.shape}. Reshape your data, "
                         "e.g. X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample")  # fmt: skip
    if X.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    if X.shape[0] < min_samples:
        raise ValueError(f"Found array with {X.shape[0]} sample(s) (shape={X.shape}) while a minimum of "
                         f"{min_samples} is required (n_samples = {X.shape[0]}).")  # fmt: skip
    return X


def check_targets(y, n: int) -> np.ndarray:
    """Targets (n,) or (n, k) as float64, finite."""
    if y is None:
        raise ValueError("this probe requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError("Complex data not supported")
    y = y.astype(np.float64)
    if y.ndim not in (1, 2) or y.shape[0] != n:
        raise ValueError(f"y must be (n,) or (n, k) with n = {n} rows of X; got shape {y.shape}")
    check_finite(y, "y")
    return y


def check_finite(values, name: str = "X") -> None:
    """Raise when ``values`` (an array or a tensor chunk) holds NaN or inf."""
    finite = values.isfinite().all() if hasattr(values, "isfinite") else np.isfinite(values).all()
    if not bool(finite):
        hint = " (a damaged activation cache? `worldprobe verify` checks it)" if name == "X" else ": drop those rows"
        raise ValueError(f"{name} contains NaN or inf{hint}")


def check_n_features(X, expected: int, name: str) -> None:
    """``predict``'s X has the columns ``fit`` saw."""
    if X.shape[1] != expected:
        raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting {expected} features as input")
