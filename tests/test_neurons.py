"""Single-neuron search: streaming statistics, a planted MLP neuron in a tiny Llama, residual coordinates, cosines."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from worldprobe.datasets.prompts import Prompt
from worldprobe.errors import WorldprobeError
from worldprobe.extract.models import LoadedModel
from worldprobe.extract.tokens import encode_entities
from worldprobe.neurons.search import (
    CorrelationStats,
    add_cosines,
    mlp_search,
    neuron_table,
    residual_search,
    top_k,
    weight_cosines,
)
from worldprobe.probes.results import NEURON_COLUMNS

N_WORDS, D, D_MLP, PLANTED = 400, 24, 48, 7


def test_streaming_statistics_equal_the_full_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, (1000, 20)) * rng.uniform(0.1, 100, 20)
    y = np.column_stack([x[:, 3] * 0.2 + rng.normal(size=1000), rng.normal(size=1000) + 1e4])
    x[:, 11] = 7.0  # a constant neuron is never ranked
    acc = CorrelationStats(20, 2)
    for start in range(0, 1000, 64):
        acc.update(x[start : start + 64], y[start : start + 64])
    varying = np.delete(x, 11, axis=1)
    full = np.corrcoef(np.column_stack([varying, y]), rowvar=False)[:19, 19:]
    r = acc.pearson()
    assert np.isnan(r[11]).all()
    np.testing.assert_allclose(np.delete(r, 11, axis=0), full, atol=1e-9)
    slope, intercept = acc.line(3, 0)
    np.testing.assert_allclose([slope, intercept], np.polyfit(x[:, 3], y[:, 0], 1), rtol=1e-8)
    assert top_k(r, 3)[0, 0] == 3


def test_top_k_ranks_by_absolute_correlation():
    r = np.array([[0.1, np.nan], [-0.9, 0.5], [0.5, -0.6], [np.nan, 0.2]])
    np.testing.assert_array_equal(top_k(r, 2), [[1, 2], [2, 1]])
    assert top_k(r, 10).shape == (3, 2)  # never more than the ranked (non-NaN) neurons


def tiny_llama(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, np.ndarray]:
    """A 2-block random Llama with one planted MLP neuron.

    Word ``w<k>`` has the embedding cos(t_k) e0 + sin(t_k) e1 + e2 + fixed-norm noise, with t_k rising with k. Block 0's
    attention writes nothing (o_proj = 0), so its MLP reads the normalised embedding; neuron PLANTED of block 0 has
    gate row 4 e0 and up row e2, so its activation silu(4 cos t / rms) / rms falls monotonically with k.
    """
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=N_WORDS + 3, hidden_size=D, intermediate_size=D_MLP, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    rng = np.random.default_rng(seed)
    t = np.linspace(0.05, math.pi / 2 - 0.05, N_WORDS)
    noise = rng.normal(size=(N_WORDS, D - 3))
    noise *= 1.5 / np.linalg.norm(noise, axis=1, keepdims=True)
    emb = np.column_stack([np.cos(t), np.sin(t), np.ones(N_WORDS), noise])
    with torch.no_grad():
        model.model.embed_tokens.weight[3:] = torch.as_tensor(emb, dtype=torch.float32)
        block = model.model.layers[0]
        block.self_attn.o_proj.weight.zero_()
        block.mlp.gate_proj.weight[PLANTED] = 0.0
        block.mlp.gate_proj.weight[PLANTED, 0] = 4.0
        block.mlp.up_proj.weight[PLANTED] = 0.0
        block.mlp.up_proj.weight[PLANTED, 2] = 1.0
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(N_WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    return model, tokenizer, t


def loaded_of(model: LlamaForCausalLM, tokenizer) -> LoadedModel:
    return LoadedModel(model, tokenizer, "tiny", {}, n_layers=2, d_model=D, decoder_layers=list(model.model.layers))


def encode(tokenizer, texts: list[str]):
    return encode_entities(tokenizer, texts, Prompt("empty"))


@pytest.mark.slow
def test_planted_mlp_neuron_is_found_first_on_train_and_holds_on_test():
    model, tokenizer, t = tiny_llama()
    rng = np.random.default_rng(1)
    words = rng.permutation(N_WORDS)
    texts = [f"w{(w * 7) % N_WORDS} w{w}" for w in words]  # two words; the entity's last one carries t
    year = 1000.0 + 600.0 * t[words] + rng.normal(0, 10, N_WORDS)
    is_test = rng.random(N_WORDS) < 0.3
    loaded, encoded = loaded_of(model, tokenizer), encode(tokenizer, texts)
    assert encoded[0].last == 2  # BOS, first word, last word
    rows = mlp_search(loaded, encoded, year, is_test, ["year"], k=5, batch_size=37)
    table = neuron_table(rows, dataset="art", model="tiny")
    assert list(table.columns) == list(NEURON_COLUMNS)
    first = table.query("layer == 1 and rank == 1").iloc[0]
    assert first["neuron"] == PLANTED and first["kind"] == "mlp"
    assert first["train_pearson"] < -0.9  # activation falls as t (and the year) rises
    assert first["test_spearman"] < -0.95  # monotone on held-out rows
    assert first["test_r2"] > 0.8
    assert set(table["layer"]) == {1, 2} and (table.groupby("layer").size() == 5).all()
    # selection used train rows only: the same search with test targets scrambled gives the same train ranking
    scrambled = year.copy()
    scrambled[is_test] = rng.permutation(scrambled[is_test])
    again = mlp_search(loaded, encoded, scrambled, is_test, ["year"], k=5, batch_size=11)
    again = neuron_table(again, dataset="art", model="tiny")
    pd.testing.assert_series_equal(again["neuron"], table["neuron"])
    np.testing.assert_allclose(again["train_pearson"], table["train_pearson"], atol=1e-9)
    assert again.query("layer == 1 and rank == 1")["test_spearman"].abs().iloc[0] < 0.3

    direction = {1: np.eye(D)[[0]]}  # a probe direction along e0: the planted neuron reads exactly it
    add_cosines(rows, direction, ["year"], model)
    planted = next(r for r in rows if r["layer"] == 1 and r["neuron"] == PLANTED)
    assert planted["cos_in"] == pytest.approx(1.0)
    assert np.isnan(next(r for r in rows if r["layer"] == 2)["cos_in"])  # no direction for layer 2


def test_weight_cosines_use_gate_rows_and_down_columns():
    model, _, _ = tiny_llama()
    block = model.model.layers[1]
    direction = block.mlp.down_proj.weight[:, 3].detach().double().numpy()
    _, cos_out = weight_cosines(model, 2, np.array([3, 4]), direction)
    assert cos_out[0] == pytest.approx(1.0)
    assert abs(cos_out[1]) < 0.9


def test_mlp_search_rejects_layers_outside_the_model():
    model, tokenizer, _ = tiny_llama()
    texts = [f"w{i}" for i in range(20)]
    with pytest.raises(WorldprobeError, match="MLP layers"):
        mlp_search(loaded_of(model, tokenizer), encode(tokenizer, texts), np.arange(20.0), np.arange(20) % 4 == 0,
                   ["year"], layers=[5])  # fmt: skip


def test_residual_search_finds_a_planted_coordinate():
    rng = np.random.default_rng(0)
    n, d = 3000, 64
    y = rng.normal(size=(n, 2))
    x = rng.normal(size=(n, d)).astype(np.float16)
    x[:, 17] = (np.tanh(y[:, 0]) + 0.1 * rng.normal(size=n)).astype(np.float16)  # encodes latitude
    x[:, 40] = (-y[:, 1] + 0.5 * rng.normal(size=n)).astype(np.float16)  # encodes longitude, negatively
    is_test = rng.random(n) < 0.2
    rows = residual_search(lambda layer: x, [3], y, is_test, ["latitude", "longitude"], k=4)
    table = neuron_table(rows, dataset="world_place", model="tiny").set_index(["target", "rank"])
    assert table.loc[("latitude", 1), "neuron"] == 17 and table.loc[("latitude", 1), "test_r2"] > 0.8
    assert table.loc[("longitude", 1), "neuron"] == 40 and table.loc[("longitude", 1), "test_spearman"] < -0.8
    assert (table["kind"] == "residual").all() and len(table) == 8
    coef = np.zeros((2, d))
    coef[0, 17], coef[0, 3], coef[1, 40] = 3.0, 4.0, -1.0
    add_cosines(rows, {3: coef}, ["latitude", "longitude"])
    top = {(r["target"], r["neuron"]): r["cos_in"] for r in rows}
    assert top[("latitude", 17)] == pytest.approx(0.6) and top[("longitude", 40)] == pytest.approx(-1.0)


@pytest.mark.slow
def test_neurons_command_end_to_end_on_a_saved_tiny_llama(workspace, tmp_path):
    from typer.testing import CliRunner

    from worldprobe.cli import app
    from worldprobe.datasets.table import BuildReport, write_table

    model, tokenizer, t = tiny_llama()
    folder = tmp_path / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rng = np.random.default_rng(2)
    words = rng.permutation(N_WORDS)
    table = pd.DataFrame(
        {
            "entity_id": [f"p{i}" for i in range(N_WORDS)],
            "name": [f"w{w}" for w in words],
            "text": [f"w{w}" for w in words],
            "year": 1000.0 + 600.0 * t[words] + rng.normal(0, 10, N_WORDS),
            "entity_type": "person",
            "is_test": rng.random(N_WORDS) < 0.3,
            "source": "test",
            "occupation": "poet",
        }
    )
    table["century"] = (table["year"] // 100).astype(int)
    write_table(table, BuildReport("historical_figure", "test", [], N_WORDS, 0, {}, "random", 0), workspace)

    args = ["neurons", "--dataset", "historical_figure", "--model", str(folder), "--top-k", "3", "--batch-size", "50"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    path = next(workspace.results.glob("historical_figure__*__neurons__*/neurons.parquet"))
    found = pd.read_parquet(path)
    assert list(found.columns) == list(NEURON_COLUMNS)
    mlp = found[found["kind"] == "mlp"]
    assert mlp.query("layer == 1 and rank == 1")["neuron"].iloc[0] == PLANTED
    assert set(found.loc[found["kind"] == "residual", "layer"]) == {0, 1, 2}
    assert mlp["cos_in"].notna().all() and mlp["cos_out"].notna().all()
    assert "year" in result.output and str(path) in result.output
    stamp = path.stat().st_mtime_ns
    assert CliRunner().invoke(app, args).exit_code == 0
    assert path.stat().st_mtime_ns == stamp  # the same search is not redone
