"""The anchor table: for each family, the residual anchor is the block output the extraction caches and the MLP
activation anchor receives the MLP's neuron activations; unknown families name the table; no torch on import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from worldprobe.errors import WorldprobeError
from worldprobe.interventions import anchors


def _tiny(family: str) -> torch.nn.Module:
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    small = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**small, num_key_value_heads=2))
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**small, num_key_value_heads=2))
    if family == "gemma3_text":
        return Gemma3ForCausalLM(Gemma3TextConfig(**small, num_key_value_heads=2, head_dim=8, sliding_window=16))
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=3, n_head=4, n_inner=48))
    return GPTNeoXForCausalLM(GPTNeoXConfig(**small))


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text", "gpt2", "gpt_neox"])
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

    with pytest.raises(WorldprobeError, match=r"worldprobe\.interventions\.anchors\.ANCHORS.*llama"):
        anchors.resolve(Model(), "residual", 1)


def test_the_table_imports_without_torch():
    code = "import sys, worldprobe.interventions.anchors as a; assert a.ANCHORS; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
