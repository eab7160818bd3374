"""The least time a study's extraction can take on this CPU: its linear layers' arithmetic at the measured peak.

    python benchmarks/extraction_floor.py WORKSPACE                      # the quick study's models and twins
    python benchmarks/extraction_floor.py WORKSPACE --models smollm2-135m --twins 0

For each model, every entity of every built dataset table in ``WORKSPACE/datasets`` is tokenised as extraction
tokenises it (``extract.tokens.encode_entities``, prompt ``empty``: BOS + the name); the tokens padded to their
batch (``extract.runner.iter_batches``: longest-first batches of ``--batch-size``, 64 as on a CPU) are counted.
Each token passes through every block's linear layers (q, k, v, o and the MLP's gate, up and down projections, read
from the model's config): 2 x their weights' size in FLOPs. The peak is one torch thread's ``linear`` at the dtype
extraction uses, on a matrix of the extraction's shape (``--rows`` x hidden x intermediate), best of ``--repeats``.
The floor is those FLOPs over the peak times ``--workers`` cores; a random-init twin (``--twins`` per model) costs
what its model costs. Attention scores, norms, activations and the writes to the cache come on top, so a run takes
longer.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from worldprobe.datasets.prompts import get_prompt
from worldprobe.devices import resolve_dtype
from worldprobe.extract.models import describe_model
from worldprobe.extract.runner import iter_batches
from worldprobe.extract.tokens import encode_entities


def linear_flops_per_token(config) -> int:
    """2 x the weights of one token's linear layers over every block (attention projections and the gated MLP)."""
    text = getattr(config, "text_config", None) or config
    hidden, inter = int(text.hidden_size), int(text.intermediate_size)
    heads, kv = int(text.num_attention_heads), int(getattr(text, "num_key_value_heads", text.num_attention_heads))
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    per_block = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2 + 3 * hidden * inter
    return 2 * per_block * int(text.num_hidden_layers)


def peak_flops(hidden: int, inter: int, dtype: torch.dtype, rows: int, repeats: int) -> float:
    """FLOP/s of one thread's ``linear`` on a (rows x hidden) by (hidden x inter) product, best of ``repeats``."""
    torch.set_num_threads(1)
    x, w = torch.randn(rows, hidden, dtype=dtype), torch.randn(inter, hidden, dtype=dtype)
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(10):
            torch.nn.functional.linear(x, w)
        best = min(best, (time.perf_counter() - start) / 10)
    return 2 * rows * hidden * inter / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--models", nargs="*", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--twins", type=int, default=1, help="random-init twins per model")
    parser.add_argument("--dtype", default="fast")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rows", type=int, default=640, help="rows of the timed product (batch x tokens)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from transformers import AutoConfig, AutoTokenizer

    tables = {p.stem: pd.read_parquet(p) for p in sorted((args.workspace / "datasets").glob("*.parquet"))}
    dtype_name = resolve_dtype(args.dtype, "cpu")
    seconds = flops_total = 0.0
    for model in args.models:
        info = describe_model(model, dtype=args.dtype, device="cpu")
        config, tokenizer = AutoConfig.from_pretrained(info.folder), AutoTokenizer.from_pretrained(info.folder)
        text = getattr(config, "text_config", None) or config
        per_token = linear_flops_per_token(config)
        tokens = 0
        for name, table in tables.items():
            encoded = encode_entities(tokenizer, table["text"].tolist(), get_prompt(name, "empty"))
            tokens += sum(batch.input_ids.numel() for batch in iter_batches(encoded, args.batch_size, pad_id=0))
        flops = per_token * tokens * (1 + args.twins)
        peak = peak_flops(int(text.hidden_size), int(text.intermediate_size), getattr(torch, dtype_name), args.rows,
                          args.repeats)  # fmt: skip
        seconds += flops / (args.workers * peak)
        flops_total += flops
        print(f"{model}: {tokens:,} tokens (padded) x {per_token / 1e6:.1f} MFLOP/token x {1 + args.twins} "
              f"(model + twins) = {flops / 1e12:.1f} TFLOP; {dtype_name} linear at {peak / 1e9:.0f} GFLOP/s per "
              f"thread ({args.rows} x {text.hidden_size} x {text.intermediate_size})")  # fmt: skip
    print(f"floor: {flops_total / 1e12:.1f} TFLOP on {args.workers} cores = {seconds:.0f} s of linear layers alone")


if __name__ == "__main__":
    main()
