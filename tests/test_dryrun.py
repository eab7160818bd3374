"""The dry run is a plan for the machine that will run the study: downloads, token, quantisation, memory, disk."""

from __future__ import annotations

import shutil
import sys
from collections import namedtuple

import pytest

from worldprobe import cli
from worldprobe.dryrun import ModelPlan, model_plans
from worldprobe.extract.models import PRESETS
from worldprobe.study import load_study

Usage = namedtuple("Usage", "total used free")


def dry_run(monkeypatch, capsys, tmp_path, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("WORLDPROBE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setattr(sys, "argv", ["worldprobe", "run", *args, "--dry-run"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    return done.value.code, capsys.readouterr().out


def test_the_paper_plan_exits_0_with_downloads_token_quantisation_memory_and_a_disk_warning(
    monkeypatch, capsys, tmp_path
):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, 50 * 10**9))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no token file either
    code, out = dry_run(monkeypatch, capsys, tmp_path, "paper")
    assert code == 0
    assert "disk: 2031.5 GB still needed, 50.0 GB free" in out and "warning: not enough disk here" in out
    assert "https://huggingface.co/meta-llama/Llama-2-7b-hf, 13.5 GB (float16 safetensors), HF_TOKEN (NOT set" in out
    assert out.count("release CSV: https://raw.githubusercontent.com/wesg52/world-models/") == 6
    seventy = next(line for line in out.splitlines() if line.strip().startswith("llama-2-70b "))
    assert seventy.split()[1:] == ["68.98", "B", "float16", "8bit", "69.5", "GB", "83.4", "GB"]  # int8 linears
    assert "extract    138 task(s): llama-2-7b 23, llama-2-13b 23, llama-2-70b 23, random:llama-2-7b 69" in out
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert "HF_TOKEN (set)" in dry_run(monkeypatch, capsys, tmp_path, "paper")[1]


def test_a_real_run_still_refuses_what_the_plan_warns_about(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, 10**9))
    monkeypatch.setattr(sys, "argv", ["worldprobe", "run", "paper"])
    monkeypatch.setenv("WORLDPROBE_WORKSPACE", str(tmp_path / "workspace"))
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code != 0 and "GB are free" in capsys.readouterr().err


def test_quantised_weights_keep_embeddings_in_the_compute_dtype():
    plan = ModelPlan("m", 1_000, 100, "float16", "4bit")
    assert plan.weight_bytes == 900 * 0.5 + 100 * 2 and plan.device_bytes == pytest.approx(650 * 1.2)
    assert ModelPlan("m", 1_000, 100, "float32", None).weight_bytes == 4_000
    assert ModelPlan("m", None, 0, "float16", None).device_bytes is None


def test_preset_parameter_counts_match_the_config_on_the_meta_device():
    """The hard-coded counts of the Llama-2 presets equal a LlamaConfig of the published shapes instantiated on the
    meta device (so the dry run needs neither the gated config nor the weights)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    shapes = {"llama-2-7b": (4096, 11008, 32, 32, 32), "llama-2-13b": (5120, 13824, 40, 40, 40),
              "llama-2-70b": (8192, 28672, 80, 64, 8)}  # fmt: skip
    for name, (hidden, mlp, layers, heads, kv_heads) in shapes.items():
        config = LlamaConfig(vocab_size=32_000, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv_heads)  # fmt: skip
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        preset = PRESETS[name]
        assert (preset.n_layers, preset.d_model) == (layers, hidden)
        assert preset.parameters == sum(p.numel() for p in model.parameters())
        assert preset.unquantized_parameters == 2 * 32_000 * hidden  # untied embedding and head


def test_a_hub_model_without_a_preset_is_counted_from_its_config(tiny_llama_dir, tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(f'[study]\nname = "t"\n[[datasets]]\nname = "world_place"\nlimit = 10\n'
                    f'[extract]\nmodels = ["{tiny_llama_dir}"]\nquantization = "8bit"\n')  # fmt: skip
    (plan,) = model_plans(load_study(path))
    assert plan.parameters and plan.quantization == "8bit" and 0 < plan.unquantized < plan.parameters


def test_a_limit_on_an_unbuilt_packaged_dataset_is_an_upper_bound_not_a_row_count(monkeypatch, capsys, tmp_path):
    """The quick study's datasets come from packaged sources at limit 2,000 (nyc_place has 820 rows): before they are
    built, the plan says 'at most' instead of taking the limit for the row count."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 0, 500 * 10**9))
    code, out = dry_run(monkeypatch, capsys, tmp_path, "quick")
    assert code == 0
    line = next(x for x in out.splitlines() if x.strip().startswith("nyc_place x smollm2-135m:"))
    assert "at most" in line and "the dataset's limit; the table is not built yet" in line
