"""Shared fixtures: an isolated workspace per test, a tiny Llama, one torch thread, the hub offline (helpers that are
not fixtures are in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_entity_table


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace folder, also set as $WORLDPROBE_WORKSPACE for CLI calls."""
    root = tmp_path / "workspace"
    monkeypatch.setenv("WORLDPROBE_WORKSPACE", str(root))
    from worldprobe.workspace import Workspace

    return Workspace(root)


TINY_CORPUS = [
    "Paris", "London", "New York City", "São Paulo", "Kraków", "Zürich", "Washington, D.C.", "St. Louis",
    "What are the lat/lon coordinates of ", "Where is ", "Tokyo", "Reykjavík", "Mexico City", "Ōsaka", "Cairo",
    "the quick brown fox jumps over the lazy dog", "When did ", "Publication date of: ", "Hamburg", "Москва",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A randomly initialised 4-layer Llama (d_model 64) with a byte-level BPE tokenizer, saved as safetensors."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(TINY_CORPUS * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture
def make_entity_table():
    """A function ``(workspace, texts) -> table`` writing a small valid world_place table with these texts."""
    return write_entity_table


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: the CI machine is shared (two threads oversubscribe it) and reductions
    stay deterministic."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def hub_offline(monkeypatch):
    """The Hugging Face hub in offline mode: a hub id fails at once instead of after ~30 s of retries."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
