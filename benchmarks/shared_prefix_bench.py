"""Extraction with the shared prompt prefix run once against feeding every token: the same rows, for less work.

    python benchmarks/shared_prefix_bench.py WORKSPACE                               # SmolLM2, world_place, 3 prompts
    python benchmarks/shared_prefix_bench.py WORKSPACE -m gemma3-270m --dtype float32 --prompts coords

For each prompt, ``--limit`` entities of the dataset table in ``WORKSPACE/datasets`` are encoded as extraction encodes
them and every layer's rows come from ``extract.runner.forward_batches`` twice, with ``share_prefix`` on and off (one
torch thread, batches of 64, ``--repeats`` interleaved repetitions; CPU seconds, median). Printed per prompt: the
shared tokens and the tokens per row, both CPU times and their ratio, and how far apart the two sets of rows are
(|a - b| / |b| per row and layer: median and max). In float32 the rows agree to rounding; in bfloat16 the two are as
far from each other as either is from float32, so ``--reference`` also prints each one's distance to a float32 pass
without sharing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from worldprobe.datasets.prompts import get_prompt
from worldprobe.extract.models import load_requested
from worldprobe.extract.options import ModelRequest
from worldprobe.extract.prefix import shared_prefix_length
from worldprobe.extract.runner import forward_batches
from worldprobe.extract.tokens import encode_entities


def all_rows(loaded, encoded, share: bool) -> tuple[np.ndarray, float]:
    """(entities, layers, d) rows of every layer and the CPU seconds of the pass."""
    layers = range(loaded.n_layers + 1)
    out = np.zeros((len(encoded), len(layers), loaded.d_model), dtype=np.float32)
    start = time.process_time()
    for batch, rows in forward_batches(loaded, encoded, 64, layers=layers, share_prefix=share):
        out[batch.indices] = np.stack([rows[layer] for layer in layers], axis=1)
    return out, time.process_time() - start


def distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Median and max over rows and layers of |a - b| / |b|."""
    rel = np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(b, axis=-1), 1e-12)
    return float(np.median(rel)), float(rel.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("-m", "--model", default="smollm2-135m")
    parser.add_argument("-d", "--dataset", default="world_place")
    parser.add_argument("--prompts", nargs="*", default=["empty", "coords", "all_caps"])
    parser.add_argument("--dtype", default="fast")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also compare each side with float32")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loaded = load_requested(ModelRequest(args.model, dtype=args.dtype, device="cpu"))
    reference = load_requested(ModelRequest(args.model, dtype="float32", device="cpu")) if args.reference else None
    texts = pd.read_parquet(args.workspace / "datasets" / f"{args.dataset}.parquet")["text"].head(args.limit).tolist()
    print(f"{args.model} ({loaded.dtype}), {len(texts):,} {args.dataset} entities, one thread, batches of 64, "
          f"CPU-s medians of {args.repeats}")  # fmt: skip
    for prompt in args.prompts:
        encoded = encode_entities(loaded.tokenizer, texts, get_prompt(args.dataset, prompt))
        times: dict[bool, list[float]] = {True: [], False: []}
        rows = {}
        for _ in range(args.repeats):
            for share in (False, True):
                rows[share], seconds = all_rows(loaded, encoded, share)
                times[share].append(seconds)
        full, fast = (float(np.median(times[s])) for s in (False, True))
        median, largest = distance(rows[True], rows[False])
        tokens = sum(len(e) for e in encoded) / len(encoded)
        print(f"{prompt}: {shared_prefix_length(encoded)} shared of {tokens:.1f} tokens per row; every token "
              f"{full:.1f} CPU-s, shared prefix {fast:.1f} ({full / fast:.2f}x); rows apart by {median:.1e} "
              f"(median), {largest:.1e} (max)")  # fmt: skip
        if reference is not None:
            exact, _ = all_rows(reference, encoded, False)
            for share in (False, True):
                median, largest = distance(rows[share], exact)
                print(f"  {'shared prefix' if share else 'every token'} against float32: {median:.1e} (median), "
                      f"{largest:.1e} (max)")  # fmt: skip


if __name__ == "__main__":
    main()
