"""The prompt prefix every row shares (the BOS token and a prompt's fixed words), run once per extraction.

Causal attention means a token never sees later ones, so the shared prefix's hidden states and keys/values are the same
in every row: :func:`forward_batches` runs them once and each batch starts from a copy of their cache. The rows are
those of a full forward pass up to the rounding of the dtype (tests/test_extract_prefix.py: float32 within 1e-5
relative; bfloat16 as far from float32 as the full pass is), and the work per row drops by the prefix's share of its
tokens (``benchmarks/extraction_floor.py --forward``).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import torch

from worldprobe.extract.tokens import EncodedEntity

CACHE_KEYWORDS = ("cache", "past_key_values")
"""The names a model's ``forward`` takes its key/value cache by (transformers 5.25 renamed the second to the first)."""


def shared_prefix_length(encoded: Sequence[EncodedEntity]) -> int:
    """How many tokens at the start of every row are the same and come before any entity token (0 for no rows)."""
    if not encoded:
        return 0
    first = encoded[0].input_ids
    limit = min(min(e.entity_positions[0] for e in encoded), len(first))
    length = 0
    while length < limit and all(e.input_ids[length] == first[length] for e in encoded):
        length += 1
    return length


def cache_keyword(model: torch.nn.Module) -> str | None:
    """The keyword ``model.forward`` takes a key/value cache by, or None when it names none of
    :data:`CACHE_KEYWORDS` (then nothing is shared)."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in CACHE_KEYWORDS if name in parameters), None)


def planned_prefix(
    model: torch.nn.Module, encoded: Sequence[EncodedEntity], padding_side: str, share: bool
) -> tuple[str | None, int]:
    """The cache keyword and the number of prefix tokens an extraction shares: none without ``share``, with left
    padding (the rows' first tokens are not aligned) or when the model takes no cache."""
    keyword = cache_keyword(model) if share and padding_side == "right" else None
    length = shared_prefix_length(encoded) if keyword else 0
    return (keyword, length) if length else (None, 0)


def empty_cache(model: torch.nn.Module) -> Any:
    """A fresh key/value cache shaped for ``model`` (sliding-window layers included)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def batch_cache(prefix: Any, rows: int) -> Any:
    """A copy of the prefix's cache repeated for ``rows`` rows (a forward pass appends to the cache it is given)."""
    cache = copy.deepcopy(prefix)
    cache.batch_repeat_interleave(rows)
    return cache
