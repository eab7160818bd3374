"""Ridge probe benchmark: RidgeProbe against sklearn's RidgeCV (same alphas, same rows, same process), and the
standardisation measurement behind RidgeProbe's default.

    python benchmarks/probe_bench.py synthetic --n 40000 --d 4096            # one Llama-2-7B-wide layer
    python benchmarks/probe_bench.py cache -w /work/ws-shared -d world_place -m smollm2-135m
    python benchmarks/probe_bench.py standardize -w /work/ws-shared -d world_place -m smollm2-135m

Both fits use the train rows (is_test False); sklearn gets the targets z-scored the same way (the honest comparison:
ridge predictions are linear in y, and one alpha is chosen for both targets on the mean leave-one-out error), the
features as a float64 array (its conversion is not timed; ours reads the float16 memmap inside the timing).
Both libraries get the same number of CPU threads (``--threads``, default 1: on a CPU shared with other jobs, two
spinning threads per library made both 3-30x slower and the timings meaningless). Wall time and CPU time are both
reported: on a shared CPU the single-threaded CPU time is the fairer measure of the work done.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from threadpoolctl import threadpool_limits

from worldprobe.probes.ridge import DEFAULT_ALPHAS, RidgeProbe


def compare(x_train, y_train, x_test, sklearn_modes: list[str]) -> dict:
    """Fit both on the same rows; timings, alphas and the max relative difference of test predictions."""
    t, c = time.perf_counter(), time.process_time()
    ours = RidgeProbe(alphas=DEFAULT_ALPHAS, standardize=False).fit(x_train, y_train)
    out = {"ours_s": time.perf_counter() - t, "ours_cpu_s": time.process_time() - c, "alpha": ours.alpha_}
    out["on_edge"] = ours.alpha_on_edge_
    print(out, flush=True)
    pred = ours.predict(x_test)
    if not sklearn_modes:
        return out
    mean, std = y_train.mean(axis=0), y_train.std(axis=0)
    xf = np.asarray(x_train, dtype=np.float64)
    z = (y_train - mean) / std
    for mode in sklearn_modes:
        if mode == "auto-extrapolated":  # too slow to run in full: one-off cost + (grid - 1) x the cost of one alpha
            out["sk_auto_extrapolated_s"], out["sk_auto_extrapolated_cpu_s"] = [], []
            for k in (1, 2):
                t, c = time.perf_counter(), time.process_time()
                RidgeCV(alphas=DEFAULT_ALPHAS[:k]).fit(xf, z)
                out["sk_auto_extrapolated_s"].append(time.perf_counter() - t)
                out["sk_auto_extrapolated_cpu_s"].append(time.process_time() - c)
                print(f"sklearn auto with {k} alpha(s): {out['sk_auto_extrapolated_s'][-1]:.1f} s", flush=True)
            for name in ("s", "cpu_s"):
                one, two = out[f"sk_auto_extrapolated_{name}"]
                out[f"sk_auto_extrapolated_{name}"] = one + (len(DEFAULT_ALPHAS) - 1) * max(two - one, 0.0)
            continue
        t, c = time.perf_counter(), time.process_time()
        theirs = RidgeCV(alphas=DEFAULT_ALPHAS, gcv_mode=None if mode == "auto" else mode).fit(xf, z)
        out[f"sk_{mode}_s"], out[f"sk_{mode}_cpu_s"] = time.perf_counter() - t, time.process_time() - c
        expected = theirs.predict(np.asarray(x_test, dtype=np.float64)) * std + mean
        out[f"sk_{mode}_alpha_same"] = theirs.alpha_ == ours.alpha_
        out[f"sk_{mode}_max_rel_diff"] = float(np.max(np.abs(pred - expected)) / np.max(np.abs(expected)))
        print(out, flush=True)
    return out


def _print(rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print(
            "| " + " | ".join(f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys) + " |"
        )


def synthetic(args) -> None:
    rng = np.random.default_rng(0)
    n, d = args.n, args.d
    scales = np.exp(rng.normal(0, 1.0, size=d)).astype(np.float32)
    x = (rng.standard_normal((n, d), dtype=np.float32) * scales).astype(np.float16)
    y = x[:, :64].astype(np.float64) @ rng.normal(size=(64, 2)) + rng.normal(size=(n, 2)) * 5
    test = rng.random(n) < 0.2
    row = {"n_train": int((~test).sum()), "d": d, **compare(x[~test], y[~test], x[test], args.sklearn)}
    _print([row])


def _open(args):
    from worldprobe.extract import find_cache, open_cache

    return open_cache(find_cache(args.dataset, args.model, args.prompt, workspace=args.workspace))


def cache_bench(args) -> None:
    cache = _open(args)
    from worldprobe.datasets.registry import get_spec

    y = cache.entities[list(get_spec(args.dataset).targets)].to_numpy(dtype=np.float64)
    test = cache.entities["is_test"].to_numpy(dtype=bool)
    layers = cache.layers if args.layers == "all" else [int(v) for v in args.layers.split(",")]
    sk_layers = set(layers if args.sklearn_layers == "all" else [int(v) for v in args.sklearn_layers.split(",") if v])
    rows = []
    for layer in layers:
        x = cache.layer(layer)
        modes = args.sklearn if layer in sk_layers else []
        rows.append({"layer": layer, **compare(x[np.flatnonzero(~test)], y[~test], x[np.flatnonzero(test)], modes)})
        print(rows[-1], flush=True)
    _print(rows)
    ours = sum(r["ours_s"] for r in rows)
    print(f"\nours, all {len(rows)} layers: {ours:.1f} s (n_train {int((~test).sum())}, d {cache.d_model})")
    for mode in args.sklearn:
        timed = [r for r in rows if f"sk_{mode}_s" in r]
        if timed:
            sk, ou = sum(r[f"sk_{mode}_s"] for r in timed), sum(r["ours_s"] for r in timed)
            same = all(r[f"sk_{mode}_alpha_same"] for r in timed)
            worst = max(r[f"sk_{mode}_max_rel_diff"] for r in timed)
            print(f"sklearn {mode} on {len(timed)} layers: {sk:.1f} s vs ours {ou:.1f} s = {sk / ou:.1f}x; "
                  f"same alpha everywhere: {same}; worst max relative prediction difference {worst:.1e}")  # fmt: skip


def standardize(args) -> None:
    """Test R² (mean over targets) per layer with and without feature standardisation."""
    from worldprobe.probes.experiments import probe_cache, resolve_targets

    cache = _open(args)
    targets, kind = resolve_targets(cache.entities.reset_index(drop=True), args.dataset)
    layers = cache.layers if args.layers == "all" else [int(v) for v in args.layers.split(",")]
    rows, selected = {}, {}
    for std in (False, True):
        res = probe_cache(cache, targets, layers=layers, kind=kind, standardize=std)
        selected["std" if std else "raw"] = res.selected_layer
        m = res.metrics
        r2 = m.query("split == 'test' and target == 'mean' and metric == 'r2'").set_index("layer")["value"]
        edge = m.query("metric == 'alpha_on_edge'").set_index("layer")["value"]
        alpha = m.query("metric == 'alpha'").set_index("layer")["value"]
        for layer in layers:
            rows.setdefault(layer, {"layer": layer})
            tag = "std" if std else "raw"
            rows[layer].update({f"r2_{tag}": r2[layer], f"alpha_{tag}": alpha[layer], f"edge_{tag}": bool(edge[layer])})
    table = list(rows.values())
    _print(table)
    raw, std = rows[selected["raw"]]["r2_raw"], rows[selected["std"]]["r2_std"]
    better = sum(r["r2_std"] > r["r2_raw"] for r in table)
    edges = {tag: sum(r[f"edge_{tag}"] for r in table) for tag in ("raw", "std")}
    print(f"\n{args.dataset} x {args.model} ({len(cache.entities)} entities, {int(cache.entities['is_test'].sum())} "
          f"test): test R² at the layer chosen on train rows: raw {raw:.3f} (layer {selected['raw']}), standardised "
          f"{std:.3f} (layer {selected['std']}); standardising is better at {better}/{len(table)} layers; alpha on "
          f"the grid edge at {edges['raw']} layers raw, {edges['std']} standardised")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    syn = sub.add_parser("synthetic")
    syn.add_argument("--n", type=int, default=40_000)
    syn.add_argument("--d", type=int, default=4096)
    for name in ("cache", "standardize"):
        p = sub.add_parser(name)
        p.add_argument("-w", "--workspace", required=True)
        p.add_argument("-d", "--dataset", default="world_place")
        p.add_argument("-m", "--model", default="smollm2-135m")
        p.add_argument("-p", "--prompt", default="empty")
        p.add_argument("--layers", default="all")
        p.add_argument("--sklearn-layers", default="all", help="layers also fitted by sklearn (all or 0,8,16)")
    for p in (syn, sub.choices["cache"]):
        p.add_argument(
            "--sklearn", default="auto,svd", type=lambda s: [m for m in s.split(",") if m],
            help="sklearn RidgeCV gcv_modes to time (auto picks 'cov' when n > d; svd is its other exact "
            "leave-one-out path; auto-extrapolated times 1 and 2 alphas and extrapolates); empty to skip",
        )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and BLAS, both libraries")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print(f"threads: {args.threads} (torch {torch.get_num_threads()}; BLAS via threadpoolctl)", flush=True)
    {"synthetic": synthetic, "cache": cache_bench, "standardize": standardize}[args.what](args)


if __name__ == "__main__":
    main()
