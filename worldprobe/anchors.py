"""Where to read and write activations, per architecture family: ONE table (:data:`ANCHORS`).

Like pyvene's per-model mappings, each family names module paths relative to the causal-LM object, so a hook can
be placed without guessing: the ModuleList of decoder blocks, and inside a block the module whose *input* is the
MLP's neuron activation (``act(gate) * up`` for gated MLPs), the module whose weights read each neuron's input from
the residual stream, and the norm in front of the MLP. Anchor points follow the cache's layer convention
(``worldprobe.extract``): residual layer 0 is the embedding output (the input of block 0), residual layer l >= 1 the
output of block l (1-based) before the final norm; steering writes at the same points. Extraction finds its blocks
here (a family missing from the table falls back to a search, with a warning), the neuron search its MLP modules,
ask and steer their hooks.

This module imports nothing heavy (no torch, no transformers), so every stage can read the table cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worldprobe.errors import WorldprobeError

INPUT, OUTPUT = "input", "output"
POINTS = ("residual", "mlp_activation", "steer")
"""Anchor points: the residual stream after block l, the MLP activation of block l, and where steering adds."""


@dataclass(frozen=True)
class Anchors:
    """Module paths of one architecture family, relative to the ``*ForCausalLM`` object."""

    family: str
    blocks: str  # dotted path of the ModuleList of decoder blocks
    mlp_activation: str  # path inside a block of the module whose input is the MLP activation
    mlp_read: str  # path inside a block of the module whose weights read each neuron's input (gate, else up)
    mlp_norm: str  # path inside a block of the norm in front of the MLP


_LLAMA_STYLE = "model.layers", "mlp.down_proj", "mlp.gate_proj", "post_attention_layernorm"
_GEMMA2_STYLE = "model.layers", "mlp.down_proj", "mlp.gate_proj", "pre_feedforward_layernorm"

ANCHORS: dict[str, Anchors] = {
    a.family: a
    for a in (
        Anchors("llama", *_LLAMA_STYLE),  # Llama 1-3, SmolLM2, TinyLlama
        Anchors("mistral", *_LLAMA_STYLE),
        Anchors("qwen2", *_LLAMA_STYLE),  # Qwen2, Qwen2.5 (incl. Coder)
        Anchors("qwen3", *_LLAMA_STYLE),
        Anchors("gemma", *_LLAMA_STYLE),
        Anchors("gemma2", *_GEMMA2_STYLE),
        Anchors("gemma3_text", *_GEMMA2_STYLE),  # Gemma3ForCausalLM (Gemma-3-270M, 1B)
        Anchors("gemma3", "model.language_model.layers", *_GEMMA2_STYLE[1:]),  # Gemma3ForConditionalGeneration
        Anchors("gpt2", "transformer.h", "mlp.c_proj", "mlp.c_fc", "ln_2"),
        Anchors("gpt_neox", "gpt_neox.layers", "mlp.dense_4h_to_h", "mlp.dense_h_to_4h", "post_attention_layernorm"),
    )
}  # fmt: skip
"""Architecture family (``config.model_type``) -> anchor paths. Add a family here to support it everywhere."""


def family_of(model: Any) -> str:
    """The architecture family of a causal LM: its ``config.model_type``."""
    family = getattr(getattr(model, "config", None), "model_type", None)
    if not family:
        raise WorldprobeError(f"{type(model).__name__} has no config.model_type to look up in the anchor table")
    return str(family)


def anchors_for(family: str) -> Anchors:
    """The anchors of a family, or an error naming the table to extend."""
    try:
        return ANCHORS[family]
    except KeyError:
        raise WorldprobeError(
            f"no anchor points for architecture family {family!r}",
            hint=f"add it to worldprobe.anchors.ANCHORS (known: {', '.join(sorted(ANCHORS))})",
        ) from None


def _attribute(root: Any, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise WorldprobeError(
                f"{type(root).__name__} has no module {path!r}",
                hint="its entry in worldprobe.anchors.ANCHORS does not fit this model",
            )
    return obj


def blocks(model: Any) -> list[Any]:
    """The decoder blocks of ``model`` in order, from the anchor table."""
    return list(_attribute(model, anchors_for(family_of(model)).blocks))


def block_part(model: Any, layer: int, part: str) -> Any:
    """The module ``part`` (``mlp_activation``, ``mlp_read`` or ``mlp_norm``) of block ``layer`` (1-based, like the
    cache's layers), from the anchor table."""
    found = blocks(model)
    if not 1 <= layer <= len(found):
        raise WorldprobeError(f"layer {layer} outside the model's {len(found)} blocks", field="layer")
    return _attribute(found[layer - 1], getattr(anchors_for(family_of(model)), part))


def resolve(model: Any, point: str, layer: int) -> tuple[Any, str]:
    """``(module, "input" | "output")`` of an anchor point at cache layer ``layer``.

    ``residual`` / ``steer``: layer 0 is the input of block 0 (the embedding output), layer l >= 1 the output of
    block l. ``mlp_activation``: the input of block l's MLP down projection (l >= 1).
    """
    if point not in POINTS:
        raise WorldprobeError(f"unknown anchor point {point!r}", hint=f"one of {', '.join(POINTS)}")
    found = blocks(model)
    limit = len(found)
    if not (1 if point == "mlp_activation" else 0) <= layer <= limit:
        raise WorldprobeError(f"layer {layer} outside the model's {limit} blocks for anchor {point!r}", field="layer")
    if point == "mlp_activation":
        return _attribute(found[layer - 1], anchors_for(family_of(model)).mlp_activation), INPUT
    return (found[0], INPUT) if layer == 0 else (found[layer - 1], OUTPUT)
