"""benchmarks/gpu_check.py, prepared for a CUDA machine without network: its CPU-only run exercises every part
(rows per dtype, device placement and 8-bit, throughput of the Llama-2-7B configuration scaled down, steering) and
writes one JSON whose checks all pass; without CUDA and without --cpu-only it stops with one line."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from helpers import PROJECT_ROOT


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", PROJECT_ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_parts_of_the_gpu_check_run_and_pass(tmp_path, one_torch_thread, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check().main(["--cpu-only", "--entities", "40", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["ok"] and set(results["rows"]) == {"float32", "bfloat16", "float16"}
    assert results["rows"]["float32"]["value"] == 0.0 and results["rows"]["bfloat16"]["value"] > 0  # really rounded
    assert results["placement"]["8bit"].get("value", 0) < 0.15
    assert results["steering"]["moved"] and results["throughput"]["entities"] == 40
    assert results["throughput"]["layers"] == 3 and results["throughput"]["entities_per_second"] > 0
    config = json.loads((PROJECT_ROOT / "benchmarks" / "llama-2-7b-config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (4096, 32, 32000)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_gpu_check_says_so_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="no CUDA device: run on a GPU machine, or --cpu-only"):
        gpu_check().main(["--out", str(tmp_path / "x.json")])
