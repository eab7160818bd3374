"""Prompt rendering: BOS, prefixes, seeded random prefixes and the entity's last token from the offset mapping."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from worldprobe.datasets.prompts import HEADLINE_WHEN, PROMPTS, Prompt
from worldprobe.extract.tokens import encode_entities, random_vocabulary, special_token_ids


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def decoded_entity(tokenizer, enc) -> str:
    return tokenizer.decode([enc.input_ids[p] for p in enc.entity_positions])


@pytest.mark.parametrize("prompt", [PROMPTS["empty"], PROMPTS["coords"], PROMPTS["where_is"], HEADLINE_WHEN])
@pytest.mark.parametrize("text", ["Paris", "São Paulo", "Kraków", "Washington, D.C.", "Москва", "Zürich!"])
def test_entity_tokens_are_exactly_the_entity_text(tokenizer, prompt, text):
    (enc,) = encode_entities(tokenizer, [text], prompt)
    assert enc.input_ids[0] == tokenizer.bos_token_id
    assert enc.last == len(enc) - 1  # no suffix: the entity's last token ends the prompt
    assert decoded_entity(tokenizer, enc).strip() == text
    assert tokenizer.decode(enc.input_ids[1 : enc.entity_positions[0]]) == prompt.prefix.rstrip(" ") or prompt.prefix
    assert list(enc.entity_positions) == list(range(enc.entity_positions[0], enc.last + 1))


def test_last_token_is_the_trailing_punctuation_and_multibyte_tail(tokenizer):
    encs = encode_entities(tokenizer, ["Washington, D.C.", "Kraków", "São Paulo"], PROMPTS["coords"])
    assert tokenizer.decode([encs[0].input_ids[encs[0].last]]) == "."
    assert tokenizer.decode(list(encs[1].input_ids[encs[1].last :])).endswith("w")
    assert tokenizer.decode([encs[2].input_ids[encs[2].last]]).endswith("o")


def test_prompt_transforms_are_applied(tokenizer):
    (caps,) = encode_entities(tokenizer, ["Paris"], PROMPTS["all_caps"])
    assert decoded_entity(tokenizer, caps) == "PARIS"
    (no_period,) = encode_entities(tokenizer, ["Rain falls."], PROMPTS["empty_no_period"])
    assert decoded_entity(tokenizer, no_period) == "Rain falls"


def test_random_prefix_is_seeded_per_entity_and_avoids_special_tokens(tokenizer):
    prompt = PROMPTS["random"]
    a = encode_entities(tokenizer, ["Paris", "Cairo"], prompt, seed=0, keys=["e1", "e2"])
    b = encode_entities(tokenizer, ["Cairo"], prompt, seed=0, keys=["e2"])
    c = encode_entities(tokenizer, ["Paris", "Cairo"], prompt, seed=1, keys=["e1", "e2"])
    assert a[1] == b[0]  # independent of row order and of the other rows
    assert a[0].input_ids != c[0].input_ids
    specials = special_token_ids(tokenizer)
    for enc in a:
        assert len(enc) == 1 + prompt.random_tokens + len(enc.entity_positions)
        assert enc.entity_positions[0] == 1 + prompt.random_tokens
        assert not specials & set(enc.input_ids[1 : 1 + prompt.random_tokens])
    vocabulary = set(random_vocabulary(tokenizer).tolist())
    assert len(vocabulary) == len(tokenizer) - len(specials) and not vocabulary & specials


def test_tokenizer_without_bos_gets_none(tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.bos_token = None
    (enc,) = encode_entities(tok, ["Paris"], Prompt("empty"))
    assert tok.decode(list(enc.input_ids)) == "Paris"
