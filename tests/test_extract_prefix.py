"""The shared prompt prefix runs once: rows equal a full forward pass's, for every layer, aggregation and capture."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from test_anchors import FAMILIES
from test_anchors import _tiny as tiny_model

from worldprobe.datasets.prompts import PROMPTS
from worldprobe.extract.models import load_model
from worldprobe.extract.prefix import cache_keyword, shared_prefix_length
from worldprobe.extract.runner import forward_batches
from worldprobe.extract.tokens import EncodedEntity, encode_entities

TEXTS = ["Paris", "São Paulo", "Kraków", "Washington, D.C.", "Москва", "the lazy dog", "Tokyo", "Hamburg"] * 3

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def loaded(tiny_llama_dir):
    return load_model(str(tiny_llama_dir), device="cpu")


def rows_of(loaded, encoded, **kwargs) -> dict:
    """Every yielded row by entity, and how many tokens the model was fed in all."""
    fed = []
    handle = loaded.model.get_input_embeddings().register_forward_hook(lambda m, a, out: fed.append(out.shape[1]))
    out: dict = {}
    try:
        for batch, rows in forward_batches(loaded, encoded, 5, **kwargs):
            for key, values in rows.items():
                out.setdefault(key, np.zeros((len(encoded), values.shape[1]), np.float32))[batch.indices] = values
    finally:
        handle.remove()
    return out | {"fed": fed}


def entity(ids, positions) -> EncodedEntity:
    return EncodedEntity(tuple(ids), tuple(positions))


def test_the_shared_prefix_stops_at_the_first_difference_and_before_any_entity_token():
    assert shared_prefix_length([]) == 0
    assert shared_prefix_length([entity([1, 5, 6, 7], [3]), entity([1, 5, 6, 8, 9], [3, 4])]) == 3
    assert shared_prefix_length([entity([1, 5, 6, 7], [2, 3]), entity([1, 5, 6, 7], [2, 3])]) == 2  # same rows
    assert shared_prefix_length([entity([1, 5, 7], [1, 2]), entity([1, 6, 7], [2])]) == 1
    assert shared_prefix_length([entity([2, 5], [1]), entity([1, 5], [1])]) == 0


@pytest.mark.parametrize("prompt", ["coords", "empty"])
@pytest.mark.parametrize("aggregation", ["last", "mean"])
def test_rows_with_the_prefix_shared_equal_a_full_forward_pass(loaded, prompt, aggregation):
    encoded = encode_entities(loaded.tokenizer, TEXTS, PROMPTS[prompt])
    shared = shared_prefix_length(encoded)
    assert shared > 5 if prompt == "coords" else shared == 1  # the BOS and the prompt's words; the BOS alone
    assert shared <= min(e.entity_positions[0] for e in encoded)
    layers = range(loaded.n_layers + 1)
    full = rows_of(loaded, encoded, layers=layers, aggregation=aggregation, share_prefix=False)
    fast = rows_of(loaded, encoded, layers=layers, aggregation=aggregation)
    for layer in layers:
        np.testing.assert_allclose(fast[layer], full[layer], rtol=1e-5, atol=1e-5)
    batches = len(full["fed"])
    assert sum(fast["fed"]) == sum(full["fed"]) - shared * batches + shared  # each batch skips it; it runs once


def test_captured_module_inputs_and_a_stopped_pass_also_match(loaded):
    encoded = encode_entities(loaded.tokenizer, TEXTS, PROMPTS["coords"])
    down = {"mlp1": loaded.decoder_layers[1].mlp.down_proj}
    full = rows_of(loaded, encoded, layers=[1], capture_inputs=down, share_prefix=False)
    fast = rows_of(loaded, encoded, layers=[1], capture_inputs=down)
    np.testing.assert_allclose(fast["mlp1"], full["mlp1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast[1], full[1], rtol=1e-5, atol=1e-6)


def test_left_padding_and_a_model_without_a_cache_keyword_feed_every_token(loaded, monkeypatch):
    encoded = encode_entities(loaded.tokenizer, TEXTS, PROMPTS["coords"])
    full = rows_of(loaded, encoded, layers=[2], share_prefix=False)
    left = rows_of(loaded, encoded, layers=[2], padding_side="left")
    assert left["fed"] == full["fed"]
    np.testing.assert_allclose(left[2], full[2], rtol=1e-5, atol=1e-5)

    class NoCache(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False):
            raise AssertionError("not called")

    assert cache_keyword(loaded.model) in ("cache", "past_key_values")
    assert cache_keyword(NoCache()) is None
    monkeypatch.setattr("worldprobe.extract.prefix.cache_keyword", lambda model: None)
    assert rows_of(loaded, encoded, layers=[2])["fed"] == full["fed"]


def test_the_manifest_records_the_shared_tokens_and_a_twin_follows_its_model(workspace, tiny_llama_dir,
                                                                            make_entity_table):  # fmt: skip
    from worldprobe.extract import Batching, run_extraction
    from worldprobe.extract.cache import open_cache
    from worldprobe.extract.runner import extract_twin

    make_entity_table(workspace, TEXTS[:8])
    shared = open_cache(run_extraction("world_place", str(tiny_llama_dir), "coords", workspace=workspace,
                                       layers=[2], progress=False))  # fmt: skip
    assert shared.manifest["shared_prefix_tokens"] > 5
    rows = np.array(shared.layer(2))
    del shared  # its read lock would refuse the rebuild
    gc.collect()
    full = open_cache(run_extraction("world_place", str(tiny_llama_dir), "coords", workspace=workspace, layers=[2],
                                     batching=Batching(share_prefix=False), rebuild=True, progress=False))  # fmt: skip
    assert full.manifest["shared_prefix_tokens"] == 0
    np.testing.assert_allclose(rows, np.asarray(full.layer(2)), rtol=1e-5, atol=1e-5)
    twin = open_cache(extract_twin("world_place", str(tiny_llama_dir), "coords", full.manifest, seed=0,
                                   workspace=workspace, layers=[2]))  # fmt: skip
    assert twin.manifest["shared_prefix_tokens"] == 0  # its model's cache fed every token


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_of_the_anchor_table_gives_the_same_rows_from_a_shared_prefix(family):
    from types import SimpleNamespace

    from worldprobe import anchors
    from worldprobe.extract.models import LoadedModel

    model = tiny_model(family).eval()
    blocks = anchors.blocks(model)
    loaded = LoadedModel(model, SimpleNamespace(pad_token_id=0, eos_token_id=None, unk_token_id=None), family, {},
                         len(blocks), 32, blocks)  # fmt: skip
    rng = np.random.default_rng(0)
    encoded = [entity([1, 5, 7, *rng.integers(8, 50, size=n)], range(3, 3 + n)) for n in (1, 4, 2, 6, 3, 5, 1, 2)]
    assert shared_prefix_length(encoded) == 3
    layers = range(len(blocks) + 1)
    full = rows_of(loaded, encoded, layers=layers, share_prefix=False)
    fast = rows_of(loaded, encoded, layers=layers)
    assert sum(fast["fed"]) < sum(full["fed"])
    for layer in layers:
        np.testing.assert_allclose(fast[layer], full[layer], rtol=1e-5, atol=1e-5)
