"""Extraction throughput and memory on world_place (run on demand, not in the tests).

    python benchmarks/extract_bench.py --entities 2000 --dtypes float32 bfloat16 --rss 2000 20000

Throughput: ``worldprobe extract`` (all layers, model already loaded) against two baselines run in the same process
on the same entities: (a) the bare forward pass over the same length-sorted batches (base decoder, no hooks, no
writes: the practical limit) and (b) the original study's way (dataset order, fixed batches of 128, right padding,
``output_hidden_states=True`` on the full LM, every layer copied to host, then the last token taken).
Times are wall clock and CPU time of this process (with one thread, CPU time is robust to other processes on a
shared machine). Peak RSS: one fresh process per entity count running the extraction, ``ru_maxrss`` of that child.
The world_place table is built from the paper's release CSV with the ``paper`` dataset source.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from worldprobe.config import DEFAULT_SEED
from worldprobe.datasets.builder import BuildOptions, build
from worldprobe.datasets.prompts import get_prompt
from worldprobe.datasets.table import load, sample_rows
from worldprobe.extract import runner
from worldprobe.extract.models import load_model
from worldprobe.extract.options import ModelRequest
from worldprobe.extract.runner import Batching, iter_batches, pad_token_id, run_extraction
from worldprobe.extract.tokens import encode_entities
from worldprobe.workspace import Workspace

Timing = tuple[float, float]  # (wall seconds, CPU seconds of this process)
CSV = Path(__file__).resolve().parents[2] / "shared" / "paper-data" / "world_place.csv"


def build_world_place(root: Path, csv: Path) -> Workspace:
    ws = Workspace(root)
    if not ws.dataset_table("world_place").exists():
        build("world_place", "paper", BuildOptions(from_path=str(csv)), ws)
    return ws


def time_extract(ws: Workspace, loaded, model: str, n: int, dtype: str, batch_size: int) -> tuple[Timing, Path]:
    """(wall, CPU) seconds of run_extraction, model preloaded (tokenise, hooked forward, memmap writes, manifest): the
    loader the runner calls (``load_model_kept``) hands it the loaded model, so no load is timed."""
    original, calls = runner.load_model_kept, []
    runner.load_model_kept = lambda *a, **k: calls.append(a) or loaded
    try:
        start, cpu = time.perf_counter(), time.process_time()
        path = run_extraction(
            "world_place",
            ModelRequest(model, dtype=dtype),
            workspace=ws,
            limit=n,
            progress=False,
            batching=Batching(batch_size=batch_size),
        )
        if not calls:
            raise RuntimeError("run_extraction no longer loads through runner.load_model_kept: time_extract would "
                               "time a model load; patch the loader it calls")  # fmt: skip
        return (time.perf_counter() - start, time.process_time() - cpu), path
    finally:
        runner.load_model_kept = original


def time_bare(loaded, encoded, batch_size: int) -> Timing:
    """(a) The same length-sorted batches through the base decoder: no hooks, no gathering, no writes."""
    base = loaded.model.model
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for batch in iter_batches(encoded, batch_size, pad_token_id(loaded.tokenizer)):
            base(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                 use_cache=False)  # fmt: skip
    return time.perf_counter() - start, time.process_time() - cpu


def time_original(loaded, texts: list[str]) -> Timing:
    """(b) The original study's loop: dataset order, batches of 128, right padding, all hidden states to host."""
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    bos = tokenizer.bos_token or ""
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for i in range(0, len(texts), 128):
            enc = tokenizer([bos + t for t in texts[i : i + 128]], return_tensors="pt", padding=True,
                            add_special_tokens=False)  # fmt: skip
            out = loaded.model(**enc, output_hidden_states=True)
            last = enc["attention_mask"].sum(1) - 1
            layers = [h.to("cpu", copy=True) for h in out.hidden_states]
            _ = torch.stack([h[torch.arange(h.shape[0]), last] for h in layers], 1).float().numpy()
    return time.perf_counter() - start, time.process_time() - cpu


def peak_rss_mb(root: Path, n: int, model: str, dtype: str) -> tuple[float, float]:
    """Peak RSS (MB) and seconds of a fresh process extracting ``n`` entities (all layers)."""
    code = (
        "import resource, sys, time, torch; torch.set_num_threads(1);"
        "from worldprobe.extract.options import ModelRequest; from worldprobe.extract.runner import run_extraction;"
        f"t = time.perf_counter(); run_extraction('world_place', ModelRequest({model!r}, dtype={dtype!r}),"
        f" workspace={str(root)!r}, limit={n}, progress=False);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    parser.add_argument("--rss", nargs="*", type=int, default=[2000, 20000], help="entity counts for peak RSS")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--csv", type=Path, default=CSV)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="extract-bench-"))
    ws = build_world_place(root / "ws", args.csv)
    table = sample_rows(load("world_place", ws), args.entities, DEFAULT_SEED)  # the rows run_extraction's limit takes
    texts = table["text"].tolist()
    results = []
    for dtype in args.dtypes:
        loaded = load_model(args.model, dtype=dtype, device="cpu")
        encoded = encode_entities(loaded.tokenizer, texts, get_prompt("world_place", "empty"))
        time_bare(loaded, encoded[:64], args.batch_size)  # warm-up
        bare = time_bare(loaded, encoded, args.batch_size)
        ws_dtype = build_world_place(root / f"ws-{dtype}", args.csv)
        extract, path = time_extract(ws_dtype, loaded, args.model, args.entities, dtype, args.batch_size)
        original = time_original(loaded, texts)
        n = len(texts)
        row = {
            "dtype": dtype,
            "entities": n,
            "layers": loaded.n_layers + 1,
            "threads": args.threads,
            "cache": str(path),
        }
        for clock, i in (("wall", 0), ("cpu", 1)):  # CPU time is robust to other processes sharing the machine
            row |= {
                f"{clock}_extract_entities_per_s": n / extract[i],
                f"{clock}_bare_forward_entities_per_s": n / bare[i],
                f"{clock}_original_way_entities_per_s": n / original[i],
                f"{clock}_extract_vs_bare": bare[i] / extract[i],
                f"{clock}_extract_vs_original": original[i] / extract[i],
            }  # fmt: skip
        results.append(row)
        print(json.dumps(row), flush=True)
        del loaded
    for n in args.rss:
        rss, seconds = peak_rss_mb(ws.root, n, args.model, "float32")
        row = {"peak_rss_mb": rss, "entities": n, "seconds": seconds, "entities_per_s": n / seconds}
        results.append(row)
        print(json.dumps(row), flush=True)
    (root / "extract_bench.json").write_text(json.dumps(results, indent=2))
    print(f"results in {root / 'extract_bench.json'}")


if __name__ == "__main__":
    main()
