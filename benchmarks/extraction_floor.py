"""The least time a study's extraction can take on this CPU: its linear layers' arithmetic at the measured peak.

    python benchmarks/extraction_floor.py WORKSPACE                      # the quick study's models and twins
    python benchmarks/extraction_floor.py WORKSPACE --models smollm2-135m --twins 0
    python benchmarks/extraction_floor.py WORKSPACE --forward            # also time the bare forward pass

For each model, every entity of every built dataset table in ``WORKSPACE/datasets`` is tokenised as extraction
tokenises it (``extract.tokens.encode_entities``, prompt ``empty``: BOS + the name); the tokens fed, padded to their
batch (``extract.runner.iter_batches``: longest-first batches of ``--batch-size``, 64 as on a CPU) are counted.
Each token passes through every block's linear layers (q, k, v, o and the MLP's gate, up and down projections, read
from the model's config): 2 x their weights' size in FLOPs. The peak is one torch thread's ``linear`` at the dtype
extraction uses, on a matrix of the extraction's shape (``--rows`` x hidden x intermediate), best of ``--repeats``.
The floor is those FLOPs over the peak times ``--workers`` cores; a random-init twin (``--twins`` per model) costs
what its model costs. Attention scores, norms, activations and the writes to the cache come on top, so a run takes
longer. ``--forward`` also times what extraction cannot go below, the model's own forward pass: one torch thread
runs ``extract.runner.forward_batches`` (every layer, the same batches, no cache written) over every table, and the
CPU seconds, times model + twins, are summed over the models and divided by ``--workers``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from worldprobe.datasets.prompts import get_prompt
from worldprobe.devices import resolve_dtype
from worldprobe.extract.models import describe_model, load_requested
from worldprobe.extract.options import ModelRequest
from worldprobe.extract.prefix import shared_prefix_length
from worldprobe.extract.runner import forward_batches, iter_batches
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


def forward_cpu_seconds(model: str, dtype: str, tables: dict[str, pd.DataFrame], batch_size: int) -> float:
    """CPU seconds of one torch thread running ``model``'s forward pass (every layer) over every table's entities."""
    torch.set_num_threads(1)
    loaded = load_requested(ModelRequest(model, dtype=dtype, device="cpu"))
    layers = range(loaded.n_layers + 1)
    start = time.process_time()
    for name, table in tables.items():
        encoded = encode_entities(loaded.tokenizer, table["text"].tolist(), get_prompt(name, "empty"))
        for _ in forward_batches(loaded, encoded, batch_size, layers=layers):
            pass
    return time.process_time() - start


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
    parser.add_argument("--forward", action="store_true", help="also time the bare forward pass over every table")
    args = parser.parse_args()
    from transformers import AutoConfig, AutoTokenizer

    tables = {p.stem: pd.read_parquet(p) for p in sorted((args.workspace / "datasets").glob("*.parquet"))}
    dtype_name = resolve_dtype(args.dtype, "cpu")
    seconds = flops_total = forward_total = 0.0
    for model in args.models:
        info = describe_model(model, dtype=args.dtype, device="cpu")
        config, tokenizer = AutoConfig.from_pretrained(info.folder), AutoTokenizer.from_pretrained(info.folder)
        text = getattr(config, "text_config", None) or config
        per_token = linear_flops_per_token(config)
        tokens = 0
        for name, table in tables.items():
            encoded = encode_entities(tokenizer, table["text"].tolist(), get_prompt(name, "empty"))
            shared = shared_prefix_length(encoded)  # run once, not per batch (``extract.prefix``)
            tokens += shared + sum(batch.input_ids.numel() - shared * len(batch.indices)
                                   for batch in iter_batches(encoded, args.batch_size, pad_id=0))  # fmt: skip
        flops = per_token * tokens * (1 + args.twins)
        peak = peak_flops(int(text.hidden_size), int(text.intermediate_size), getattr(torch, dtype_name), args.rows,
                          args.repeats)  # fmt: skip
        seconds += flops / (args.workers * peak)
        flops_total += flops
        print(f"{model}: {tokens:,} tokens fed (padded; a shared prefix once) x {per_token / 1e6:.1f} MFLOP/token "
              f"x {1 + args.twins} (model + twins) = {flops / 1e12:.1f} TFLOP; {dtype_name} linear at "
              f"{peak / 1e9:.0f} GFLOP/s per thread ({args.rows} x {text.hidden_size} x "
              f"{text.intermediate_size})")  # fmt: skip
        if args.forward:
            forward = forward_cpu_seconds(model, args.dtype, tables, args.batch_size) * (1 + args.twins)
            forward_total += forward
            print(f"{model}: forward pass {forward:.0f} CPU-s (model + twins, one thread) = "
                  f"{forward * peak / flops:.2f}x its linear layers' floor")  # fmt: skip
    print(f"floor: {flops_total / 1e12:.1f} TFLOP on {args.workers} cores = {seconds:.0f} s of linear layers alone")
    if args.forward:
        per_core = forward_total / args.workers
        print(f"forward passes: {forward_total:.0f} CPU-s on {args.workers} cores = {per_core:.0f} s")


if __name__ == "__main__":
    main()
