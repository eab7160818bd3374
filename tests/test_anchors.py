"""The anchor table: for each family, the residual anchor is the block output the extraction caches and the MLP
activation anchor receives the MLP's neuron activations; unknown families name the table; no torch on import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from worldprobe import anchors
from worldprobe.errors import WorldprobeError

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "gpt2", "gpt_neox"]
"""The families of the anchor table tested here on a tiny model (``gemma3``, the multimodal wrapper, is not)."""


def _tiny(family: str) -> torch.nn.Module:
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GemmaConfig,
        GemmaForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    torch.manual_seed(0)
    small = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**small, num_key_value_heads=2))
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**small, num_key_value_heads=2))
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(**small, num_key_value_heads=2))
    if family == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**small, num_key_value_heads=2, head_dim=8))
    if family == "gemma":
        return GemmaForCausalLM(GemmaConfig(**small, num_key_value_heads=2, head_dim=8))
    if family == "gemma2":
        return Gemma2ForCausalLM(Gemma2Config(**small, num_key_value_heads=2, head_dim=8, sliding_window=16))
    if family == "gemma3_text":
        return Gemma3ForCausalLM(Gemma3TextConfig(**small, num_key_value_heads=2, head_dim=8, sliding_window=16))
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=3, n_head=4, n_inner=48))
    return GPTNeoXForCausalLM(GPTNeoXConfig(**small))


@pytest.mark.parametrize("family", FAMILIES)
def test_anchor_points_are_the_block_outputs_and_mlp_activations(family, one_torch_thread):
    model = _tiny(family).eval()
    assert anchors.family_of(model) == family
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    with torch.inference_mode():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for layer in (0, 1, 2):
        module, side = anchors.resolve(model, "residual", layer)

        def hook(m, args, kwargs, output, layer=layer, side=side):
            value = (args[0] if args else kwargs["hidden_states"]) if side == anchors.INPUT else output
            seen[f"residual{layer}"] = value[0] if isinstance(value, tuple) else value

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    mlp, side = anchors.resolve(model, "mlp_activation", 2)
    assert side == anchors.INPUT
    handles.append(mlp.register_forward_pre_hook(lambda m, args: seen.__setitem__("mlp2", args[0])))
    with torch.inference_mode():
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    for layer in (0, 1, 2):  # hidden_states[l] is the output of block l for l < n_layers (the last is post-norm)
        torch.testing.assert_close(seen[f"residual{layer}"], hidden[layer])
    assert seen["mlp2"].shape[-1] == 48  # the MLP's neurons, not the residual width
    assert anchors.resolve(model, "steer", 2) == anchors.resolve(model, "residual", 2)
    assert len(anchors.blocks(model)) == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_neuron_weights_are_read_from_the_table_for_every_family(family, one_torch_thread):
    """The neuron search's cosines: a neuron's output weights are what a unit activation adds through the table's
    activation module, its input weights what the read module sees of each residual coordinate after the norm's
    gain, whatever the weight layout (GPT-2's Conv1D stores it transposed)."""
    from worldprobe.neurons.search import mlp_input_gain, weight_cosines

    model = _tiny(family).eval()
    write, read = (anchors.block_part(model, 2, part) for part in ("mlp_activation", "mlp_read"))
    gain = mlp_input_gain(model, 2)
    assert gain is not None and gain.shape == (32,)
    with torch.no_grad():
        unit = torch.zeros(2, 48)
        unit[1, 3] = 1.0
        added = write(unit)
        out_dir = (added[1] - added[0]).double().numpy()
        seen = read(torch.diag(torch.as_tensor(gain, dtype=torch.float32))) - read(torch.zeros(1, 32))
        in_dir = seen[:, 3].double().numpy()  # column 3: what neuron 3 reads of each coordinate
    cos_in, cos_out = weight_cosines(model, 2, np.array([3, 5]), out_dir)
    assert cos_out[0] == pytest.approx(1.0) and abs(cos_out[1]) < 0.99
    cos_in, _ = weight_cosines(model, 2, np.array([3]), in_dir)
    assert cos_in[0] == pytest.approx(1.0)


def test_layers_outside_the_model_and_unknown_points_are_errors():
    model = _tiny("llama")
    with pytest.raises(WorldprobeError, match="outside"):
        anchors.resolve(model, "residual", 4)
    with pytest.raises(WorldprobeError, match="outside"):
        anchors.resolve(model, "mlp_activation", 0)
    with pytest.raises(WorldprobeError, match="unknown anchor point"):
        anchors.resolve(model, "attention", 1)


def test_an_unknown_family_names_the_table_to_extend():
    class Config:
        model_type = "mamba"

    class Model(torch.nn.Module):
        config = Config()

    with pytest.raises(WorldprobeError, match=r"worldprobe\.anchors\.ANCHORS.*llama"):
        anchors.resolve(Model(), "residual", 1)


def test_the_table_imports_without_torch():
    code = "import sys, worldprobe.anchors as a; assert a.ANCHORS; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_extraction_finds_blocks_of_a_family_missing_from_the_table_with_a_warning():
    from worldprobe.extract.models import find_decoder_layers

    model = _tiny("llama")
    assert find_decoder_layers(model) == list(model.model.layers)  # from the table, silently
    model.config.model_type = "llama_fork"
    with pytest.warns(UserWarning, match=r"'llama_fork'.*3-block ModuleList.*worldprobe\.anchors\.ANCHORS"):
        assert find_decoder_layers(model) == list(model.model.layers)
