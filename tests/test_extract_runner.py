"""Exactness of the hooked forward pass: hooks vs output_hidden_states, batch sizes, padding sides, aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldprobe.datasets.prompts import PROMPTS
from worldprobe.extract.cache import parse_layers
from worldprobe.extract.models import load_model
from worldprobe.extract.runner import collate, forward_batches, length_order, pad_token_id
from worldprobe.extract.tokens import encode_entities

TEXTS = [
    "Paris", "São Paulo", "Kraków", "Washington, D.C.", "New York City", "Москва", "Ōsaka", "St. Louis", "Zürich",
    "Reykjavík", "Mexico City", "the lazy dog", "Tokyo", "Cairo", "Hamburg", "London",
] * 2  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def loaded(tiny_llama_dir):
    return load_model(str(tiny_llama_dir), device="cpu")


@pytest.fixture(scope="module")
def encoded(loaded):
    return encode_entities(loaded.tokenizer, TEXTS, PROMPTS["coords"])


def rows_by_entity(loaded, encoded, batch_size, **kwargs):
    out: dict[int, np.ndarray] = {}
    layers = kwargs.pop("layers", range(loaded.n_layers + 1))
    for batch, rows in forward_batches(loaded, encoded, batch_size, layers=layers, **kwargs):
        for key, values in rows.items():
            out.setdefault(key, np.zeros((len(encoded), values.shape[1]), dtype=np.float32))[batch.indices] = values
    return out


def test_hooks_equal_output_hidden_states_before_the_final_norm(loaded, encoded):
    ours = rows_by_entity(loaded, encoded, 8)
    batch = collate(encoded, np.arange(len(encoded)), pad_token_id(loaded.tokenizer))
    with torch.inference_mode():
        hidden = loaded.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        ).hidden_states
    rows = torch.arange(len(encoded))
    for layer in range(loaded.n_layers):  # the last hidden state of HF is post-norm: ours is the block output
        np.testing.assert_allclose(ours[layer], hidden[layer][rows, batch.last].numpy(), rtol=1e-4, atol=1e-5)
    final_norm = hidden[-1][rows, batch.last].numpy()
    assert not np.allclose(ours[loaded.n_layers], final_norm, atol=1e-3)


def test_batch_of_one_equals_batch_of_32_row_for_row(loaded, encoded):
    one, many = rows_by_entity(loaded, encoded, 1), rows_by_entity(loaded, encoded, 32)
    for layer in one:
        np.testing.assert_allclose(one[layer], many[layer], rtol=1e-4, atol=1e-6)


def test_left_and_right_padding_give_the_same_rows(loaded, encoded):
    right = rows_by_entity(loaded, encoded, 16, padding_side="right")
    left = rows_by_entity(loaded, encoded, 16, padding_side="left")
    for layer in right:
        np.testing.assert_allclose(left[layer], right[layer], rtol=1e-4, atol=1e-6)


def test_mean_aggregation_averages_the_entity_tokens(loaded, encoded):
    mean = rows_by_entity(loaded, encoded, 8, aggregation="mean", layers=[2])[2]
    batch = collate(encoded, np.arange(len(encoded)), pad_token_id(loaded.tokenizer))
    with torch.inference_mode():
        hidden = loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    for i, enc in enumerate(encoded):
        expected = hidden.hidden_states[2][i, list(enc.entity_positions)].mean(0).numpy()
        np.testing.assert_allclose(mean[i], expected, rtol=1e-4, atol=1e-6)


def test_forward_stops_after_the_deepest_requested_block(loaded, encoded):
    calls = []
    handle = loaded.decoder_layers[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        out = rows_by_entity(loaded, encoded, 32, layers=[0, 2])
    finally:
        handle.remove()
    assert set(out) == {0, 2} and not calls


def test_batches_are_sorted_by_token_length(encoded):
    lengths = [len(encoded[i]) for i in length_order(encoded)]
    assert lengths == sorted(lengths, reverse=True)


def test_capture_inputs_gives_mlp_neuron_activations(loaded, encoded):
    down = loaded.decoder_layers[1].mlp.down_proj
    seen = {}

    def keep_input(module, args, output):
        seen["x"] = args[0].clone()

    handle = down.register_forward_hook(keep_input)
    try:
        (batch, rows), *_ = list(forward_batches(loaded, encoded, 64, capture_inputs={"mlp1": down},
                                                 share_prefix=False))  # the hook sees every token of the pass
    finally:
        handle.remove()
    assert rows["mlp1"].shape == (len(encoded), down.in_features)
    np.testing.assert_allclose(rows["mlp1"], seen["x"][torch.arange(len(encoded)), batch.last].numpy(), rtol=1e-5)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("all", [0, 1, 2, 3, 4]), ("0,2", [0, 2]), ("1:3", [1, 2, 3]), ("3:", [3, 4]), ([4, 1], [1, 4])],
)
def test_parse_layers(spec, expected):
    assert parse_layers(spec, 4) == expected


@pytest.mark.parametrize("spec", ["5", "x", "-1"])
def test_parse_layers_rejects_bad_specs(spec):
    from worldprobe.errors import WorldprobeError

    with pytest.raises(WorldprobeError, match="layers"):
        parse_layers(spec, 4)
