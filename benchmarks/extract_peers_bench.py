"""Extraction against a bare forward pass, nnsight and TransformerLens on identical batches (run on demand).

    pip install -e ".[bench]"            # nnsight and TransformerLens, the peers
    python benchmarks/extract_peers_bench.py --models smollm2-135m gemma3-270m --entities 500 --repeats 3

Every side reads the same entities (the seeded sample ``run_extraction``'s ``limit`` takes from world_place, built
from the paper's release CSV), encoded once by worldprobe (the entity's last token found from offsets) and cut into
the same length-sorted, right-padded batches (``extract.runner.iter_batches``); each returns the residual stream at
the entity's last token at every layer (the embedding output and each block's output) as one array, and the
arrays are compared with worldprobe's (largest absolute difference), so the timed work is the same answer:

- ``worldprobe``: ``extract.runner.forward_batches`` (hooks on the decoder blocks, rows gathered right after each
  block, the forward stopping after the deepest block asked for, the prompt prefix every row shares run once);
  ``worldprobe_every_token`` the same feeding every token as the peers do (``share_prefix=False``: the rows the
  peers' are compared with); ``worldprobe+write`` is ``run_extraction`` with the model already loaded (tokenising,
  the hooked forward and the memory-mapped cache writes);
- ``bare``: the base decoder over the same batches, no hooks, nothing gathered (the practical limit);
- ``nnsight``: a ``LanguageModel`` around the same loaded model, one ``trace`` per batch saving each layer's rows and
  stopping after the last block (``tracer.stop()``);
- ``transformer_lens``: a ``TransformerBridge`` booted from the same weights (TransformerLens 4 forces eager
  attention so that its hooks see the scores), ``run_with_cache`` per batch keeping ``hook_embed`` and each
  ``hook_resid_post`` (the only names cached) and stopping after the last block (``stop_at_layer``).

Every side stops where worldprobe does, after the last block: no final norm and no vocabulary projection, which is
most of Gemma-3's forward pass (262,144 tokens; an early run that let the peers compute their logits had them 3.2x
slower on Gemma-3 for that reason alone).

Repetitions are interleaved (each repetition runs every side once, in an order rotated by one, so no side is
always first) and CPU seconds are reported
beside wall seconds (min / median / max over repetitions): on a shared machine the CPU time of one thread is the
steadier figure. Ratios are worldprobe's time over the peer's (above 1: the peer is faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from extract_bench import CSV, build_world_place, time_extract

from worldprobe.config import DEFAULT_SEED
from worldprobe.datasets.prompts import get_prompt
from worldprobe.datasets.table import load, sample_rows
from worldprobe.extract.models import describe_model, load_model
from worldprobe.extract.runner import forward_batches, iter_batches, pad_token_id
from worldprobe.extract.tokens import encode_entities

Side = Callable[[], np.ndarray | None]


def worldprobe_side(loaded, encoded, batch_size: int, share_prefix: bool = True) -> Side:
    layers = list(range(loaded.n_layers + 1))

    def run() -> np.ndarray:
        out = np.empty((len(encoded), len(layers), loaded.d_model), dtype=np.float32)
        for batch, rows in forward_batches(loaded, encoded, batch_size, layers=layers, share_prefix=share_prefix):
            out[batch.indices] = np.stack([rows[v] for v in layers], axis=1)
        return out

    return run


def bare_side(loaded, encoded, batch_size: int) -> Side:
    base, pad = loaded.model.model, pad_token_id(loaded.tokenizer)

    def run() -> None:
        with torch.inference_mode():
            for batch in iter_batches(encoded, batch_size, pad):
                base(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     position_ids=batch.position_ids, use_cache=False)  # fmt: skip
        return None

    return run


def nnsight_side(loaded, encoded, batch_size: int) -> Side:
    from nnsight import LanguageModel

    lm, pad = LanguageModel(loaded.model, tokenizer=loaded.tokenizer), pad_token_id(loaded.tokenizer)
    embed, blocks = lm.model.embed_tokens, list(lm.model.layers)

    def run() -> np.ndarray:
        out = np.empty((len(encoded), len(blocks) + 1, loaded.d_model), dtype=np.float32)
        with torch.no_grad():
            for batch in iter_batches(encoded, batch_size, pad):
                rows, saved = torch.arange(len(batch.last)), []
                inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                          "position_ids": batch.position_ids}  # fmt: skip
                with lm.trace(inputs) as tracer:
                    saved.append(embed.output[rows, batch.last].save())
                    for block in blocks:
                        hidden = block.output[0] if isinstance(block.output, tuple) else block.output
                        saved.append(hidden[rows, batch.last].save())
                    tracer.stop()  # no final norm, no logits: the vocabulary projection is most of Gemma-3's forward
                out[batch.indices] = torch.stack([s.float() for s in saved], 1).numpy()
        return out

    return run


def transformer_lens_side(model: str, dtype: str, encoded, batch_size: int) -> Side:
    from transformer_lens.model_bridge import TransformerBridge

    loaded = load_model(model, dtype=dtype, device="cpu")  # its own copy: the bridge switches attention to eager
    bridge = TransformerBridge.boot_transformers(str(describe_model(model).folder), hf_model=loaded.model,
                                                 tokenizer=loaded.tokenizer, device="cpu",
                                                 dtype=getattr(torch, dtype))  # fmt: skip
    names = ["hook_embed", *[f"blocks.{i}.hook_resid_post" for i in range(loaded.n_layers)]]
    wanted, pad = set(names), pad_token_id(loaded.tokenizer)

    def run() -> np.ndarray:
        out = np.empty((len(encoded), len(names), loaded.d_model), dtype=np.float32)
        with torch.no_grad():
            for batch in iter_batches(encoded, batch_size, pad):
                _, cache = bridge.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask,
                                                 names_filter=lambda name: name in wanted,
                                                 stop_at_layer=loaded.n_layers)  # fmt: skip
                rows = torch.arange(len(batch.last))
                out[batch.indices] = torch.stack([cache[n][rows, batch.last].float() for n in names], 1).numpy()
        return out

    return run


def timed(side: Side) -> tuple[float, float, np.ndarray | None]:
    start, cpu = time.perf_counter(), time.process_time()
    rows = side()
    return time.perf_counter() - start, time.process_time() - cpu, rows


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def bench_model(model: str, dtype: str, texts: list[str], args: argparse.Namespace, root: Path) -> dict:
    loaded = load_model(model, dtype=dtype, device="cpu")
    encoded = encode_entities(loaded.tokenizer, texts, get_prompt("world_place", "empty"))
    sides: dict[str, Side] = {"worldprobe": worldprobe_side(loaded, encoded, args.batch_size),
                              "worldprobe_every_token": worldprobe_side(loaded, encoded, args.batch_size, False),
                              "bare": bare_side(loaded, encoded, args.batch_size)}  # fmt: skip
    if "nnsight" in args.peers:
        sides["nnsight"] = nnsight_side(loaded, encoded, args.batch_size)
    if "transformer_lens" in args.peers:
        sides["transformer_lens"] = transformer_lens_side(model, dtype, encoded, args.batch_size)
    wall: dict[str, list[float]] = {name: [] for name in [*sides, "worldprobe+write"]}
    cpu: dict[str, list[float]] = {name: [] for name in wall}
    largest_difference: dict[str, float] = {}
    reference = None
    for repeat in range(args.repeats):
        order = list(sides)[repeat % len(sides):] + list(sides)[: repeat % len(sides)]
        for name in order:
            seconds, cpu_seconds, rows = timed(sides[name])
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
            if name == "worldprobe_every_token":  # the peers' arithmetic: every token fed
                reference = rows
            elif rows is not None:
                largest_difference[name] = rows  # compared once the reference exists
        (seconds, cpu_seconds), _ = time_extract(build_world_place(root / f"ws-{repeat}", args.csv), loaded, model,
                                                 len(texts), dtype, args.batch_size)  # fmt: skip
        wall["worldprobe+write"].append(seconds)
        cpu["worldprobe+write"].append(cpu_seconds)
    differences = {name: float(np.max(np.abs(rows - reference))) for name, rows in largest_difference.items()}
    row = {"model": model, "dtype": dtype, "entities": len(texts), "layers": loaded.n_layers + 1,
           "batch_size": args.batch_size, "threads": torch.get_num_threads(), "repeats": args.repeats,
           "wall_seconds": {k: spread(v) for k, v in wall.items()},
           "cpu_seconds": {k: spread(v) for k, v in cpu.items()},
           "largest_abs_difference_from_worldprobe_every_token": differences}  # fmt: skip
    for side in ("worldprobe", "worldprobe_every_token"):
        ours = statistics.median(cpu[side])
        row[f"cpu_ratio_{side}_over"] = {k: ours / statistics.median(v) for k, v in cpu.items() if k != side}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--peers", nargs="*", default=["nnsight", "transformer_lens"])
    parser.add_argument("--csv", type=Path, default=CSV)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="extract-peers-"))
    ws = build_world_place(root / "ws", args.csv)
    texts = sample_rows(load("world_place", ws), args.entities, DEFAULT_SEED)["text"].tolist()
    machine = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__}
    results = []
    for model in args.models:
        row = {**bench_model(model, args.dtype, texts, args, root), "machine": machine}
        results.append(row)
        print(json.dumps(row), flush=True)
    (root / "extract_peers_bench.json").write_text(json.dumps(results, indent=2))
    print(f"results in {root / 'extract_peers_bench.json'}")


if __name__ == "__main__":
    main()
