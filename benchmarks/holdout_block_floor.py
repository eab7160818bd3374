"""What one held-out block of the ridge probe costs, against the arithmetic it cannot avoid, at a cache's size.

    python benchmarks/holdout_block_floor.py                           # 40,000 x 4,096, a block of 1/6 of the rows
    python benchmarks/holdout_block_floor.py --n 40000 --d 4096 --sklearn   # also scikit-learn's stacked fit of it

A held-out block is fitted on every train row outside it with its own penalty, chosen by exact leave-one-out over
the 41 alphas of the grid on those rows (nothing is chosen on the block). ``RidgeProbe.iter_without_blocks`` takes
the block's Gram matrix as the pool's minus the block's rows, so what is left per block is (1) the eigendecomposition
of the d x d matrix and (2) the projection of every fit row onto its eigenvectors, which gives every row's leverage
and fitted value at every alpha at once. This prints, on one synthetic float16 layer made as
``probe_stage_bench.py synthetic`` makes it, in CPU seconds (median of ``--repeats``, ``--threads`` BLAS threads):
the block as the probe stage fits it; LAPACK's ``dsyevr`` on that matrix alone; the float64 product of the fit rows
and the eigenvectors alone (torch's and BLAS ``dgemm``'s, the faster counts); and their sum, the block's floor. With
``--sklearn`` it also times scikit-learn's best pipeline for the same block (``StandardScaler`` + ``RidgeCV(gcv_mode=
"svd", alpha_per_target=True)`` on the same rows, as ``probe_stage_bench.py``'s stacked side).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import scipy.linalg
import torch
from scipy.linalg import blas
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from worldprobe.probes.ridge import DEFAULT_ALPHAS, RidgeProbe


def synthetic_layer(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One float16 (n, d) layer with a planted 2-D place signal and its (n, 2) targets (``probe_stage_bench``'s
    recipe at strength 0.05)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 2))
    scales = np.exp(rng.normal(0, 1.0, size=d))
    mix = rng.normal(size=(2, d)) * 0.05
    x = ((rng.standard_normal((n, d), dtype=np.float32) + (latent @ mix).astype(np.float32)) * scales).astype(
        np.float16)  # fmt: skip
    return x, latent * [20.0, 60.0] + [30.0, 10.0]


def cpu_seconds(work: Callable[[], object], repeats: int) -> tuple[float, object]:
    """The median CPU seconds (every thread of this process) of ``work`` over ``repeats`` runs, and its last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.process_time()
        result = work()
        times.append(time.process_time() - start)
    return float(np.median(times)), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40000, help="rows of the layer (train rows: 80%%)")
    parser.add_argument("--d", type=int, default=4096)
    parser.add_argument("--block", type=float, default=1 / 6, help="share of the train rows in the block")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sklearn", action="store_true", help="also time scikit-learn's stacked fit of the block")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = synthetic_layer(args.n, args.d)
    rng = np.random.default_rng(1)
    train = np.flatnonzero(rng.random(args.n) >= 0.2)
    x, y = x[train], y[train]
    block = rng.random(len(x)) < args.block
    fit = np.flatnonzero(~block)
    print(f"{len(x):,} train rows x {args.d:,}; the block {int(block.sum()):,} rows, fitted on {len(fit):,}; "
          f"{args.threads} threads; {len(DEFAULT_ALPHAS)} alphas; CPU-s medians of {args.repeats}")  # fmt: skip

    with threadpool_limits(args.threads):
        probe = RidgeProbe(device="cpu")

        def two_blocks() -> float:  # the first block also streams the pool's moments; the second is a block's cost
            blocks = probe.iter_without_blocks(x, y, [block, block])
            next(blocks)
            start = time.process_time()
            next(blocks)
            return time.process_time() - start

        ours = float(np.median([two_blocks() for _ in range(args.repeats)]))

        xf = x[fit].astype(np.float64)
        xf -= xf.mean(axis=0)
        xf /= xf.std(axis=0)
        gram = xf.T @ xf
        eigh_s, (_, vecs) = cpu_seconds(lambda: scipy.linalg.eigh(gram, driver="evr", check_finite=False),
                                        args.repeats)  # fmt: skip
        xt, vt = torch.from_numpy(xf), torch.from_numpy(np.ascontiguousarray(vecs))
        torch_s, _ = cpu_seconds(lambda: xt @ vt, args.repeats)
        vf = np.asfortranarray(vecs)
        blas_s, _ = cpu_seconds(lambda: blas.dgemm(1.0, xf, vf), args.repeats)
        gemm_s = min(torch_s, blas_s)
        floor = eigh_s + gemm_s
        print(f"eigendecomposition ({args.d:,} x {args.d:,}, dsyevr): {eigh_s:.1f} CPU-s")
        print(f"projection ({len(fit):,} x {args.d:,} by {args.d:,} x {args.d:,}, float64): torch {torch_s:.1f}, "
              f"dgemm {blas_s:.1f} CPU-s ({2 * len(fit) * args.d**2 / gemm_s / 1e9:.0f} GFLOP per CPU-s)")  # fmt: skip
        print(f"floor (the two): {floor:.1f} CPU-s")
        print(f"one held-out block, as the probe stage fits it: {ours:.1f} CPU-s = {ours / floor:.2f}x its floor")
        if args.sklearn:
            def stacked() -> RidgeCV:
                z = StandardScaler().fit_transform(x[fit].astype(np.float64))
                yz = (y[fit] - y[fit].mean(axis=0)) / y[fit].std(axis=0)
                return RidgeCV(alphas=DEFAULT_ALPHAS, gcv_mode="svd", alpha_per_target=True).fit(z, yz)

            sk_s, _ = cpu_seconds(stacked, args.repeats)
            print(f"scikit-learn stacked, the same block: {sk_s:.1f} CPU-s = {sk_s / ours:.2f}x ours, "
                  f"{sk_s / floor:.2f}x our floor")  # fmt: skip


if __name__ == "__main__":
    main()
