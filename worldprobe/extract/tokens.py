"""Prompt rendering into token ids: BOS, prefix (text or seeded random tokens), entity text, and the positions of
the entity's tokens found from the tokenizer's offset mapping (the last one is the probed token)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from worldprobe.config import DEFAULT_SEED
from worldprobe.datasets.prompts import Prompt
from worldprobe.errors import WorldprobeError


@dataclass(frozen=True)
class EncodedEntity:
    """Token ids of one rendered prompt and the positions of the entity's tokens in it."""

    input_ids: tuple[int, ...]
    entity_positions: tuple[int, ...]  # ascending; the last one is the entity's last token

    @property
    def last(self) -> int:
        """Position of the entity's last token (the probed position)."""
        return self.entity_positions[-1]

    def __len__(self) -> int:
        return len(self.input_ids)


def special_token_ids(tokenizer: Any) -> set[int]:
    """All special token ids (BOS/EOS/PAD/... and added special tokens such as chat markers)."""
    ids = set(tokenizer.all_special_ids)
    for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return ids


def random_vocabulary(tokenizer: Any) -> np.ndarray:
    """Token ids a random prefix draws from: the whole vocabulary minus special tokens."""
    return np.setdiff1d(np.arange(len(tokenizer)), np.fromiter(special_token_ids(tokenizer), dtype=np.int64))


def _rng_for(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, key): prefixes do not change with row order or --limit."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def encode_entities(
    tokenizer: Any,
    texts: Sequence[str],
    prompt: Prompt,
    seed: int = DEFAULT_SEED,
    *,
    keys: Sequence[str] | None = None,
) -> list[EncodedEntity]:
    """Render every entity text under ``prompt`` and tokenise it.

    Sequence: BOS (when the tokenizer has one), then either ``prompt.prefix`` tokenised together with the entity
    text, or ``prompt.random_tokens`` random vocabulary ids (seeded per entity by ``seed`` and ``keys[i]``, default
    the text) followed by the entity text. Entity positions are the tokens whose character span overlaps the entity
    text, from the offset mapping; the last one is the probed token.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise WorldprobeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: offset mappings are needed to find entity tokens"
        )
    keys = list(keys) if keys is not None else list(texts)
    entities = [prompt.entity_text(t) for t in texts]
    prefix = "" if prompt.random_tokens else prompt.prefix
    full = [prefix + e for e in entities]
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    vocabulary = random_vocabulary(tokenizer) if prompt.random_tokens else None
    out = []
    for i, (ids, offsets) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"], strict=True)):
        start, end = len(prefix), len(full[i])
        inside = [j for j, (a, b) in enumerate(offsets) if b > a and b > start and a < end]
        if not inside:
            raise WorldprobeError(f"no token covers the entity text {entities[i]!r}", row=i, field="text")
        head = list(bos)
        if vocabulary is not None:
            head += _rng_for(seed, keys[i]).choice(vocabulary, size=prompt.random_tokens).tolist()
        shift = len(head)
        out.append(EncodedEntity(tuple(head + list(ids)), tuple(j + shift for j in inside)))
    return out
