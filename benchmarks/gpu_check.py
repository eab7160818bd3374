"""worldprobe on one CUDA GPU: a check to run on a machine without network, writing one JSON of results.

The machine's Python must already have torch (a CUDA build), transformers, pandas, pyarrow, scikit-learn, scipy,
typer, tqdm, jinja2 and seaborn. Copy these wheels beside the repository (43.8 MB in all; `pip download --no-deps
platformdirs==4.14.9 psutil==7.2.2 accelerate==1.16.0 bitsandbytes==0.50.2` on a machine with network) and install
them without an index; worldprobe itself is not installed (its other dependencies are not needed here):

    platformdirs==4.14.9   platformdirs-4.14.9-py3-none-any.whl                      94 KB   the download cache
    psutil==7.2.2          psutil-7.2.2-cp36-abi3-manylinux2010_x86_64...whl        156 KB   accelerate needs it
    accelerate==1.16.0     accelerate-1.16.0-py3-none-any.whl                       389 KB   device_map="auto"
    bitsandbytes==0.50.2   bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl  43.1 MB   8-bit weights

    pip install --no-index --no-deps wheels/*.whl
    PYTHONPATH=. python benchmarks/gpu_check.py --out gpu_check.json

Parts (each check has its measured value, its tolerance and ``ok``; the exit code is 1 when any check fails):

(a) ``rows``: a seeded tiny Llama's activation cache extracted on ``cuda:0`` in float32, bfloat16 and float16,
    against the same cache on the CPU in float32: the largest relative row error ‖gpu − cpu‖ / ‖cpu‖ over rows and
    layers (tolerances 1e-3, 3e-2, 5e-3: the cache stores float16).
(b) ``placement``: the same extraction with ``device="cuda"`` (``device_map="auto"`` through accelerate) against the
    CPU, and with 8-bit weights (bitsandbytes) against the CPU in float32 (tolerance 0.15: int8 linears).
(c) ``throughput``: a random-init model with Llama-2-7B's configuration (``benchmarks/llama-2-7b-config.json``; no
    weights needed), float16 on the GPU, ``--entities`` synthetic place names (default 2,000; a BPE tokenizer trained
    on them), all 33 layers: entities per second of ``run_extraction``, peak GPU memory, the cache's size. The
    model's fingerprint (``register_model``: one pass over its weights) is timed apart.
(d) ``steering``: the steering hook on the GPU against the CPU (float32): the mean log-probability of a continuation
    with an edit at layer 2 (and without), largest absolute difference over prompts; the edit must move it.

Budget: under 8 minutes on one 24 GB GPU (the 7B model in float16 is 13.5 GB). ``--cpu-only`` runs every part on the
CPU against the CPU with a scaled-down (a) model and a 2-layer, 128-wide (c) model, on a few entities: the code paths,
not the GPU (CI runs it: tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from worldprobe.extract.options import Batching, ModelRequest

HERE = Path(__file__).resolve().parent
CONFIG_7B = HERE / "llama-2-7b-config.json"
ROW_TOLERANCE = {"float32": 1e-3, "bfloat16": 3e-2, "float16": 5e-3}
EIGHT_BIT_TOLERANCE = 0.15
STEERING_TOLERANCE = 1e-3


def place_names(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct, seeded, place-like names (no dataset download on the GPU machine)."""
    rng = np.random.default_rng(seed)
    syllables = ["ka", "ro", "mi", "sel", "tan", "vor", "lu", "ben", "dra", "os", "ti", "gar", "hel", "un", "pe", "zo"]
    endings = ["", " City", "burg", "port", " Springs", "ville", "stad", " Bay"]
    names: dict[str, None] = {}
    while len(names) < n:
        word = "".join(rng.choice(syllables, rng.integers(2, 4))).capitalize()
        names[word + str(rng.choice(endings))] = None
    return list(names)


def tokenizer_for(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (the GPU machine has no hub access)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator(texts * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="</s>")  # fmt: skip


def tiny_model(folder: Path, texts: list[str], *, hidden: int = 64, layers: int = 4) -> Path:
    """A seeded random Llama saved as safetensors with its tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer_for(texts, 400)
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def workspace_with(root: Path, texts: list[str]) -> Any:
    """A workspace holding a world_place table of ``texts`` (coordinates are not read here)."""
    from worldprobe.datasets.table import BuildReport, write_table
    from worldprobe.workspace import Workspace

    rng = np.random.default_rng(0)
    n = len(texts)
    table = pd.DataFrame({
        "entity_id": [f"e{i}" for i in range(n)], "name": texts, "text": texts,
        "latitude": rng.uniform(-60, 60, n), "longitude": rng.uniform(-170, 170, n), "entity_type": "city",
        "country": rng.choice(["A", "B", "C"], n), "is_test": np.arange(n) % 5 == 0, "source": "gpu_check",
    })  # fmt: skip
    ws = Workspace(root)
    write_table(table, BuildReport("world_place", "gpu_check", [], n, n, {}, "every 5th row", 0), ws)
    return ws


def cache_rows(path: Path) -> np.ndarray:
    """(layers, entities, d) float64 of a cache, entities in id order."""
    from worldprobe.extract import open_cache

    cache = open_cache(path)
    order = np.argsort(cache.entities["entity_id"].astype(str).to_numpy())
    return np.stack([np.asarray(cache.layer(v), dtype=np.float64)[order] for v in cache.layers])


def relative_error(rows: np.ndarray, reference: np.ndarray) -> float:
    """Largest ‖rows − reference‖ / ‖reference‖ over (layer, entity) rows."""
    diff = np.linalg.norm(rows - reference, axis=-1)
    return float((diff / np.maximum(np.linalg.norm(reference, axis=-1), 1e-12)).max())


def check(value: float, tolerance: float, **extra: Any) -> dict[str, Any]:
    return {"value": value, "tolerance": tolerance, "ok": bool(np.isfinite(value) and value <= tolerance), **extra}


def extract(root: Path, texts: list[str], model: str, **options: Any) -> np.ndarray:
    """Rows of a fresh extraction of ``model`` loaded with ``options`` in its own workspace (a cache's identity does
    not name the device, so each device gets its own)."""
    from worldprobe.extract.runner import run_extraction

    ws = workspace_with(root, texts)
    request = ModelRequest(model, **options)
    return cache_rows(run_extraction("world_place", request, workspace=ws, progress=False,
                                     batching=Batching(batch_size=16)))  # fmt: skip


def part_rows(tmp: Path, texts: list[str], model: Path, gpu: str) -> dict[str, Any]:
    reference = extract(tmp / "a-cpu", texts, str(model), device="cpu", dtype="float32")
    out = {}
    for dtype in ROW_TOLERANCE:
        rows = extract(tmp / f"a-{dtype}", texts, str(model), device=gpu, dtype=dtype)
        out[dtype] = check(relative_error(rows, reference), ROW_TOLERANCE[dtype])
    return out


def part_placement(tmp: Path, texts: list[str], model: Path, gpu: str, cpu_only: bool) -> dict[str, Any]:
    reference = extract(tmp / "b-cpu", texts, str(model), device="cpu", dtype="float32")
    out: dict[str, Any] = {}
    device = "cpu" if cpu_only else "cuda"  # "cuda": device_map="auto" (accelerate)
    rows = extract(tmp / "b-auto", texts, str(model), device=device, dtype="float32")
    out["device_map_auto"] = check(relative_error(rows, reference), ROW_TOLERANCE["float32"], device=device)
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        out["8bit"] = {"ok": True, "skipped": "bitsandbytes is not installed (see the docstring's wheels)"}
        return out
    rows = extract(tmp / "b-8bit", texts, str(model), device=gpu, dtype="float32", quantization="8bit")
    out["8bit"] = check(relative_error(rows, reference), EIGHT_BIT_TOLERANCE, device=gpu)
    return out


def part_throughput(tmp: Path, entities: int, gpu: str, cpu_only: bool) -> dict[str, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    from worldprobe.extract.models import register_model
    from worldprobe.extract.runner import run_extraction

    settings = json.loads(CONFIG_7B.read_text())
    if cpu_only:
        settings.update(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4)  # fmt: skip
    texts = place_names(entities, seed=1)
    tokenizer = tokenizer_for(texts, min(settings["vocab_size"], 8000))
    config = LlamaConfig(**settings)
    dtype = torch.float32 if cpu_only else torch.float16
    torch.manual_seed(0)
    clock = time.perf_counter()
    with torch.device(gpu):
        model = LlamaForCausalLM._from_config(config, dtype=dtype).eval()
    made = time.perf_counter() - clock
    clock = time.perf_counter()
    name = register_model(model, tokenizer)
    fingerprint = time.perf_counter() - clock
    ws = workspace_with(tmp / "c", texts)
    if not cpu_only:
        torch.cuda.reset_peak_memory_stats()
    clock, cpu = time.perf_counter(), time.process_time()
    path = run_extraction(
        "world_place",
        ModelRequest(name, dtype="float32" if cpu_only else "float16", device=gpu),
        workspace=ws,
        layers="all",
        progress=False,
        batching=Batching(batch_size=64),
    )
    seconds, cpu_seconds = time.perf_counter() - clock, time.process_time() - cpu
    size = sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())
    return {
        "model": "random-init Llama-2-7B configuration" + (" scaled down (--cpu-only)" if cpu_only else ""),
        "layers": config.num_hidden_layers + 1, "entities": entities, "dtype": str(dtype).removeprefix("torch."),
        "entities_per_second": entities / seconds, "extraction_seconds": seconds, "cpu_seconds": cpu_seconds,
        "model_init_seconds": made, "fingerprint_seconds": fingerprint,
        "peak_gpu_memory_gb": None if cpu_only else torch.cuda.max_memory_allocated() / 1e9,
        "cache_gb": size / 1e9, "ok": bool(np.isfinite(cache_rows(path)).all()),
    }  # fmt: skip


def part_steering(texts: list[str], model: Path, gpu: str) -> dict[str, Any]:
    from worldprobe.extract.models import load_model
    from worldprobe.interventions.generate import Edit, continuation_logprobs
    from worldprobe.interventions.questions import encode_prompts

    prompts = [f"Where is {t}? It is far away." for t in texts[:24]]
    spans = [(len("Where is "), len("Where is ") + len(t)) for t in texts[:24]]
    values = {}
    for device in ("cpu", gpu):
        loaded = load_model(str(model), device=device, dtype="float32")
        encoded = encode_prompts(loaded.tokenizer, prompts, spans)
        vectors = np.random.default_rng(0).normal(0, 4.0, (len(prompts), loaded.d_model)).astype(np.float32)
        plain = continuation_logprobs(loaded, encoded, progress=False)
        steered = continuation_logprobs(loaded, encoded, edit=Edit({2: vectors}), progress=False)
        values[device] = (plain, steered)
    (cpu_plain, cpu_steered), (gpu_plain, gpu_steered) = values["cpu"], values[gpu]
    moved = float(np.abs(cpu_steered - cpu_plain).max())
    diff = float(max(np.abs(gpu_plain - cpu_plain).max(), np.abs(gpu_steered - cpu_steered).max()))
    return check(diff, STEERING_TOLERANCE, edit_moves_logprob_by=moved, moved=moved > 1e-3) | {
        "ok": bool(diff <= STEERING_TOLERANCE and moved > 1e-3)}


def run(out: Path, *, entities: int, cpu_only: bool) -> dict[str, Any]:
    """Every part; the results as written to ``out``."""
    if not cpu_only and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or --cpu-only to check the code paths")
    gpu = "cpu" if cpu_only else "cuda:0"
    texts = place_names(40)
    results: dict[str, Any] = {
        "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_only": cpu_only,
        "device_name": None if cpu_only else torch.cuda.get_device_name(0),
    }  # fmt: skip
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        model = tiny_model(tmp / "tiny", texts, hidden=64, layers=4)
        results["rows"] = part_rows(tmp, texts, model, gpu)
        results["placement"] = part_placement(tmp, texts, model, gpu, cpu_only)
        results["steering"] = part_steering(texts, model, gpu)
        results["throughput"] = part_throughput(tmp, entities, gpu, cpu_only)
    results["seconds"] = time.perf_counter() - clock
    results["ok"] = all(_oks(results))
    out.write_text(json.dumps(results, indent=2))
    return results


def _oks(node: Any) -> list[bool]:
    if isinstance(node, dict):
        return ([bool(node["ok"])] if "ok" in node else []) + [o for k, v in node.items() if k != "ok" for o in _oks(v)]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="where the JSON goes")
    parser.add_argument("--entities", type=int, default=2000, help="entities of the throughput part")
    parser.add_argument("--cpu-only", action="store_true", help="every part on the CPU (the code paths, not the GPU)")
    args = parser.parse_args(argv)
    results = run(args.out, entities=args.entities, cpu_only=args.cpu_only)
    print(json.dumps(results, indent=2))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
