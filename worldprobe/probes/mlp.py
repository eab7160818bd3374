"""The paper's MLP probe (Table 2; docs/explanation/probes.md) as a seeded scikit-learn style estimator.

Linear(d, 256) -> ReLU -> Linear(256, k) on z-scored targets, AdamW (lr 1e-3), batch 512, at most 20 epochs with
patience 3 on a validation split (10% of the fit rows), restoring the best epoch. The weight decay is picked from
a grid by the best validation loss; the kept model is that weight decay's best epoch.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from worldprobe.config import DEFAULT_SEED
from worldprobe.probes.ridge import DEFAULT_STANDARDIZE, pick_device
from worldprobe.probes.validation import check_features, check_finite, check_n_features, check_targets


@contextmanager
def _torch_threads(n: int | None):
    """Run with ``n`` torch CPU threads (None: leave torch's setting). Small batches on a busy CPU are far faster
    on one thread than on several that wait for each other."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class MLPProbe(RegressorMixin, BaseEstimator):
    """One-hidden-layer MLP probe with early stopping; same interface as ``RidgeProbe``.

    Attributes after ``fit``: ``weight_decay_`` (chosen), ``val_loss_`` (best validation MSE per weight decay, in
    z-scored target units), ``best_epoch_`` (per weight decay, 1-based), ``n_features_in_``. ``n_threads`` sets torch's
    CPU threads while training (None: torch's default).
    """

    def __init__(
        self,
        hidden: int = 256,
        weight_decays: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3),
        lr: float = 1e-3,
        batch_size: int = 512,
        max_epochs: int = 20,
        patience: int = 3,
        val_fraction: float = 0.1,
        standardize: bool = DEFAULT_STANDARDIZE,
        seed: int = DEFAULT_SEED,
        device: str = "auto",
        n_threads: int | None = None,
    ) -> None:
        self.hidden = hidden
        self.weight_decays = weight_decays
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.val_fraction = val_fraction
        self.standardize = standardize
        self.seed = seed
        self.device = device
        self.n_threads = n_threads

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y may be (n, k): latitude and longitude together
        return tags

    def fit(self, X, y) -> MLPProbe:
        """Fit on rows of ``X`` and targets ``y`` (n,) or (n, k); deterministic for a given ``seed``."""
        X = np.asarray(check_features(X), dtype=np.float32)
        check_finite(X)
        y = check_targets(y, X.shape[0])
        self._single = y.ndim == 1
        y2 = y[:, None] if self._single else y
        n = X.shape[0]
        n_val = max(1, int(round(self.val_fraction * n)))
        if n - n_val < 2:
            raise ValueError(f"need more rows to fit an MLP probe with a validation split, got n_samples = {n}")
        self.feature_mean_ = X.mean(axis=0)
        std = X.std(axis=0) if self.standardize else np.ones(X.shape[1], dtype=np.float32)
        self.feature_scale_ = np.where(std > 0, std, 1.0).astype(np.float32)
        self.y_mean_, self.y_scale_ = y2.mean(axis=0), y2.std(axis=0)
        self.y_scale_[self.y_scale_ == 0] = 1.0
        dev = pick_device(self.device)
        xs = torch.as_tensor((X - self.feature_mean_) / self.feature_scale_, device=dev)
        ys = torch.as_tensor(((y2 - self.y_mean_) / self.y_scale_).astype(np.float32), device=dev)
        order = np.random.default_rng(self.seed).permutation(n)
        val, train = torch.as_tensor(order[:n_val], device=dev), torch.as_tensor(order[n_val:], device=dev)

        self.val_loss_, self.best_epoch_, best = {}, {}, None
        for wd in self.weight_decays:
            with _torch_threads(self.n_threads):
                model, loss, epoch = self._train(xs, ys, train, val, float(wd), dev)
            self.val_loss_[float(wd)], self.best_epoch_[float(wd)] = loss, epoch
            if best is None or loss < best[1]:
                best = (float(wd), loss, model)
        self.weight_decay_, _, self.model_ = best
        self.n_features_in_ = X.shape[1]
        return self

    def _train(self, xs, ys, train, val, wd: float, dev) -> tuple[torch.nn.Module, float, int]:
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        torch.manual_seed(self.seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(xs.shape[1], self.hidden), torch.nn.ReLU(), torch.nn.Linear(self.hidden, ys.shape[1])
        ).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=wd)
        best_loss, best_epoch, best_state, waited = float("inf"), 0, None, 0
        for epoch in range(1, self.max_epochs + 1):
            model.train()
            perm = train[torch.randperm(len(train), generator=gen).to(dev)]
            for start in range(0, len(perm), self.batch_size):
                idx = perm[start : start + self.batch_size]
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(model(xs[idx]), ys[idx])
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                val_loss = float(torch.nn.functional.mse_loss(model(xs[val]), ys[val]))
            if val_loss < best_loss:
                best_loss, best_epoch, best_state, waited = val_loss, epoch, copy.deepcopy(model.state_dict()), 0
            else:
                waited += 1
                if waited >= self.patience:
                    break
        model.load_state_dict(best_state)
        return model, best_loss, best_epoch

    def predict(self, X) -> np.ndarray:
        """Predictions (n,) or (n, k) in the targets' units."""
        check_is_fitted(self, "model_")
        X = np.asarray(check_features(X), dtype=np.float32)
        check_n_features(X, self.n_features_in_, type(self).__name__)
        check_finite(X)
        dev = next(self.model_.parameters()).device
        with torch.no_grad():
            z = self.model_(torch.as_tensor((X - self.feature_mean_) / self.feature_scale_, device=dev))
        out = z.cpu().numpy().astype(np.float64) * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._single else out
