"""Shared fixtures: an isolated workspace and cache per test, paths to the paper's release data."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAPER_DATA = PROJECT_ROOT.parent / "shared" / "paper-data"


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace folder, also set as $WORLDPROBE_WORKSPACE for CLI calls."""
    root = tmp_path / "workspace"
    monkeypatch.setenv("WORLDPROBE_WORKSPACE", str(root))
    from worldprobe.workspace import Workspace

    return Workspace(root)


def paper_csv(name: str) -> Path:
    """A release CSV from ../shared/paper-data, or skip the test with a visible reason."""
    path = PAPER_DATA / f"{name}.csv"
    if not path.exists():
        pytest.skip(f"paper release data not found at {path}")
    return path


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


def _write_entity_table(workspace, texts: list[str], dataset: str = "world_place"):
    """Write a small valid world_place table with these entity texts into ``workspace``; return the table."""
    import numpy as np
    import pandas as pd

    from worldprobe.datasets.table import BuildReport, write_table

    rng = np.random.default_rng(0)
    n = len(texts)
    table = pd.DataFrame(
        {
            "entity_id": [f"e{i}" for i in range(n)], "name": texts, "text": texts,
            "latitude": rng.uniform(-60, 60, n), "longitude": rng.uniform(-170, 170, n),
            "entity_type": "city", "country": rng.choice(["A", "B", "C"], n), "is_test": np.arange(n) % 5 == 0,
            "source": "test",
        }
    )  # fmt: skip
    report = BuildReport(dataset, "test", [], n, n, {}, "every 5th row", 0)
    write_table(table, report, workspace)
    return table


@pytest.fixture
def make_entity_table():
    """A function ``(workspace, texts) -> table`` writing a small valid world_place table with these texts."""
    return _write_entity_table


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
