"""Would float32 streaming keep the ridge probes' answers? (issue 16) Per cache and layer, in one run.

    python benchmarks/float32_gram_check.py -w workspace              # every finished trained-model cache there
    python benchmarks/float32_gram_check.py -w workspace --every 4    # every 4th layer

The probe stage accumulates X'X in float64 (``ridge._moments``). The cheaper variant measured here multiplies each
chunk of centred rows in float32 (what a float32 GEMM would stream) and sums the chunks in float64; the eigenbasis,
the leave-one-out errors and the alpha choice stay float64. For each cache's own targets, on its train rows, both fits
are compared: the same alpha? the largest prediction difference relative to the largest prediction, over all rows.
The issue's bar is 1e-6. Prints one line per cache, then ``adopt float32: yes|no`` with the worst case.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from worldprobe.extract import open_cache
from worldprobe.extract.cache import iter_manifests
from worldprobe.probes import ridge
from worldprobe.probes.experiments import resolve_targets
from worldprobe.probes.ridge import DEFAULT_ALPHAS, RidgeProbe
from worldprobe.workspace import as_workspace

BAR = 1e-6
_float64_moments = ridge._moments


def _float32_gram_moments(X, rows, y2, dev, *, with_gram, shift=None):
    """``ridge._moments`` with each chunk's Gram product in float32, summed in float64."""
    moments = _float64_moments(X, rows, y2, dev, with_gram=False, shift=shift)
    if not with_gram:
        return moments
    gram = torch.zeros(X.shape[1], X.shape[1], dtype=torch.float64, device=dev)
    shift32 = moments.shift.float()
    for chunk in ridge._chunks(len(rows)):
        x = ridge._rows(X, rows[chunk], dev).float() - shift32
        gram += (x.T @ x).double()
    return replace(moments, gram=gram)


def fit(x: np.ndarray, train: np.ndarray, y: np.ndarray, float32: bool) -> tuple[float, np.ndarray]:
    """(alpha, predictions of every row) of the probe fitted on ``train`` rows."""
    ridge._moments = _float32_gram_moments if float32 else _float64_moments
    try:
        probe = RidgeProbe(alphas=DEFAULT_ALPHAS).fit(x[train], y[train])
    finally:
        ridge._moments = _float64_moments
    return float(probe.alpha_), probe.predict(x)


def check_cache(cache, every: int) -> tuple[int, int, float]:
    """(layers with the same alpha, layers, largest relative prediction difference) over the cache's layers."""
    entities = cache.entities.reset_index(drop=True)
    targets, _ = resolve_targets(entities, cache.manifest["dataset"])
    y = targets.to_numpy(dtype=np.float64)
    keep = np.isfinite(y).all(axis=1)
    train = np.flatnonzero(keep & ~entities["is_test"].to_numpy(dtype=bool))
    same, worst, layers = 0, 0.0, cache.layers[::every]
    for layer in layers:
        x = np.asarray(cache.layer(layer))
        alpha64, pred64 = fit(x, train, y, float32=False)
        alpha32, pred32 = fit(x, train, y, float32=True)
        same += alpha64 == alpha32
        worst = max(worst, float(np.max(np.abs(pred32 - pred64)) / np.max(np.abs(pred64))))
    return same, len(layers), worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-w", "--workspace", required=True)
    parser.add_argument("--every", type=int, default=1, help="check every k-th cached layer")
    args = parser.parse_args()
    worst_all, ok = 0.0, True
    for path, manifest in iter_manifests(as_workspace(args.workspace)):
        if not manifest.get("complete") or str(manifest["model"]).startswith("random:"):
            continue
        same, n, worst = check_cache(open_cache(path), args.every)
        passes = same == n and worst <= BAR
        ok &= passes
        worst_all = max(worst_all, worst)
        print(f"{manifest['dataset']:<16} {manifest['model']:<22} {manifest['dtype']:<9} {manifest['n_entities']:>6} "
              f"rows  alphas same {same}/{n}  max rel. prediction diff {worst:.1e}  {'ok' if passes else 'FAILS'}",
              flush=True)  # fmt: skip
    print(f"adopt float32: {'yes' if ok else 'no'} (worst relative prediction difference {worst_all:.1e}, bar {BAR:g})")


if __name__ == "__main__":
    main()
