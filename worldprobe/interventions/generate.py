"""Greedy, batched generation with left padding, an attention mask, explicit position ids and a KV cache, and an
optional steering edit added to the residual stream at chosen positions.

Steering (:class:`Edit`): every row of a batch carries its own vector per layer; it is added to the residual stream
after block l (anchor point ``steer``, :mod:`worldprobe.anchors`) at the row's entity positions of the
PROMPT pass, and at generated tokens only when ``generated=True``. The hook knows which absolute columns the current
forward pass covers (the whole prompt, one new token with the KV cache, or everything so far without it), so the
vector is added exactly once per position whatever the caching; the first generated token is predicted from the
steered prompt pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from worldprobe import anchors
from worldprobe.extract.models import LoadedModel
from worldprobe.extract.runner import Batch, collate, length_order, pad_token_id
from worldprobe.extract.tokens import EncodedEntity
from worldprobe.interventions.options import POSITIONS


@dataclass
class Edit:
    """Vectors to add, per row of the whole job list: ``vectors[layer]`` is (n_rows, d_model) float32 (zero rows
    leave a row unsteered)."""

    vectors: dict[int, np.ndarray]
    positions: str = "last"
    generated: bool = False  # also add at every generated token (off: the prompt pass only)

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, not {self.positions!r}")


@dataclass
class Answer:
    """One generated answer: its text, token ids and why generation stopped (``eos``, ``newline`` or ``budget``)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    stop: str = "budget"


@dataclass
class _Columns:
    """Which absolute columns of the padded sequence the current forward pass covers, and where to add."""

    start: int = 0
    weights: torch.Tensor | None = None  # (B, T_total) 1.0 where the vector is added


@cache
def _token_texts(tokenizer: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per vocabulary id: does its text contain a newline, and any non-space character."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    newline = np.array(["\n" in t for t in texts])
    content = np.array([bool(t.strip()) for t in texts])
    return newline, content


def stop_token_ids(loaded: LoadedModel) -> set[int]:
    """End-of-sequence ids of the tokenizer and the generation config (e.g. Gemma's ``<end_of_turn>``)."""
    ids = {loaded.tokenizer.eos_token_id}
    config = getattr(loaded.model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list | tuple) else [eos])
    for token in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        token_id = loaded.tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != loaded.tokenizer.unk_token_id:
            ids.add(token_id)
    return {int(i) for i in ids if i is not None}


@contextmanager
def rewriting(model: torch.nn.Module, layer: int, apply: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While open, every forward pass of ``model`` passes the residual stream after block ``layer`` (anchor point
    ``steer``; layer 0 = the embedding output) through ``apply`` (batch, positions, d_model) -> the same shape."""

    def output_hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple | list):
            return (apply(output[0]), *output[1:])
        return apply(output)

    def input_hook(module: torch.nn.Module, args: Any, kwargs: Any) -> Any:
        if args:
            return (apply(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": apply(kwargs["hidden_states"])}

    module, side = anchors.resolve(model, "steer", layer)
    if side == anchors.OUTPUT:
        handle = module.register_forward_hook(output_hook)
    else:
        handle = module.register_forward_pre_hook(input_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _steering(loaded: LoadedModel, edit: Edit | None, columns: _Columns, rows: list[np.ndarray]) -> Iterator[None]:
    """Hooks adding ``edit``'s vectors of the current rows at the weighted columns of each forward pass."""

    def adder(layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def apply(hidden: torch.Tensor) -> torch.Tensor:
            width = hidden.shape[1]
            weights = columns.weights[:, columns.start : columns.start + width].to(hidden.device, hidden.dtype)
            vectors = torch.as_tensor(edit.vectors[layer][rows[0]], device=hidden.device, dtype=hidden.dtype)
            return hidden + weights[:, :, None] * vectors[:, None, :]

        return apply

    with ExitStack() as stack:
        for layer in sorted(edit.vectors) if edit is not None else []:
            stack.enter_context(rewriting(loaded.model, layer, adder(layer)))
        yield


def _edit_weights(batch: Batch, encoded: Sequence[EncodedEntity], edit: Edit | None, total: int) -> torch.Tensor:
    """(B, total) weights: 1 at the prompt positions the edit acts on and, if asked, at every generated column."""
    prompt_width = batch.input_ids.shape[1]
    weights = torch.zeros((len(batch.indices), total), dtype=torch.float32)
    if edit is None:
        return weights
    for row, index in enumerate(batch.indices):
        item = encoded[index]
        shift = prompt_width - len(item)  # left padding
        chosen = [item.last] if edit.positions == "last" else list(item.entity_positions)
        weights[row, [p + shift for p in chosen]] = 1.0
    if edit.generated:
        weights[:, prompt_width:] = 1.0
    return weights


def generate(
    loaded: LoadedModel,
    encoded: Sequence[EncodedEntity],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    edit: Edit | None = None,
    use_cache: bool = True,
    stop_at_newline: bool = True,
    progress: bool = True,
    desc: str = "generate",
) -> list[Answer]:
    """Greedy answers to every prompt of ``encoded`` (in that order), ``max_new_tokens`` at most each.

    Batches are sorted by length and left-padded with an existing token; padded positions are masked and position
    ids count real tokens only, so an answer does not depend on its batch. A row stops at an end-of-sequence token
    or, with ``stop_at_newline``, at a newline after some non-space text. ``edit`` steers (module docstring).
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    answers: list[Answer | None] = [None] * len(encoded)
    stops = torch.tensor(sorted(stop_token_ids(loaded)))
    newline, content = (torch.as_tensor(a) for a in _token_texts(loaded.tokenizer))
    pad_id = pad_token_id(loaded.tokenizer)
    device = loaded.input_device
    columns, rows = _Columns(), [np.zeros(0, dtype=np.int64)]
    order = length_order(encoded)
    bar = tqdm(total=len(encoded), desc=desc, unit="answer", disable=not progress, dynamic_ncols=True)
    with _steering(loaded, edit, columns, rows), torch.inference_mode():
        for begin in range(0, len(order), batch_size):
            batch = collate(encoded, order[begin : begin + batch_size], pad_id, padding_side="left")
            rows[0] = batch.indices
            columns.weights = _edit_weights(batch, encoded, edit, batch.input_ids.shape[1] + max_new_tokens)
            for index, answer in zip(batch.indices, _greedy(loaded, batch, columns, max_new_tokens, use_cache, stops,
                                                           newline if stop_at_newline else None, content, device),
                                     strict=True):  # fmt: skip
                answers[index] = answer
            bar.update(len(batch.indices))
    bar.close()
    return [a for a in answers if a is not None]


def _greedy(
    loaded: LoadedModel,
    batch: Batch,
    columns: _Columns,
    max_new_tokens: int,
    use_cache: bool,
    stops: torch.Tensor,
    newline: torch.Tensor | None,
    content: torch.Tensor,
    device: torch.device,
) -> list[Answer]:
    """The decoding loop of one batch."""
    ids, mask, positions = batch.input_ids.to(device), batch.attention_mask.to(device), batch.position_ids.to(device)
    n = ids.shape[0]
    generated = torch.empty((n, 0), dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    why = ["budget"] * n
    seen_content = torch.zeros(n, dtype=torch.bool)
    columns.start = 0
    out = loaded.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=use_cache,
                       logits_to_keep=1)  # fmt: skip
    for step in range(max_new_tokens):
        token = out.logits[:, -1].float().argmax(dim=-1).cpu()
        generated = torch.cat([generated, token[:, None]], dim=1)
        is_stop = torch.isin(token, stops)
        at_newline = newline[token] & seen_content if newline is not None else torch.zeros(n, dtype=torch.bool)
        for row in torch.nonzero(~done & (is_stop | at_newline)).flatten().tolist():
            why[row] = "eos" if bool(is_stop[row]) else "newline"
        done |= is_stop | at_newline
        seen_content |= content[token]
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=1)
        next_position = positions[:, -1:] + 1
        positions = torch.cat([positions, next_position], dim=1)
        if use_cache:
            columns.start = mask.shape[1] - 1
            out = loaded.model(input_ids=token[:, None].to(device), attention_mask=mask, position_ids=next_position,
                               use_cache=True, logits_to_keep=1, **cache_argument(loaded.model, out))  # fmt: skip
        else:
            columns.start = 0
            out = loaded.model(input_ids=torch.cat([ids, generated.to(device)], dim=1), attention_mask=mask,
                               position_ids=positions, use_cache=False, logits_to_keep=1)  # fmt: skip
    return [_answer(loaded.tokenizer, generated[row].tolist(), why[row], stops) for row in range(n)]


def cache_argument(model: torch.nn.Module, out: Any) -> dict[str, Any]:
    """The KV cache of the previous step as the forward pass takes it: ``cache`` (transformers >= 5.2x) or
    ``past_key_values`` (earlier 5.x)."""
    value = out.get("cache", None) if "cache" in out else out.get("past_key_values", None)
    if value is None:
        raise RuntimeError(f"{type(model).__name__} returned no KV cache with use_cache=True")
    takes_cache = "cache" in inspect.signature(model.forward).parameters
    return {"cache" if takes_cache else "past_key_values": value}


def _answer(tokenizer: Any, token_ids: list[int], why: str, stops: torch.Tensor) -> Answer:
    """The answer text up to (not including) the stop token, or up to its newline."""
    stop_set = set(stops.tolist())
    kept = []
    for token in token_ids:
        if token in stop_set:
            break
        kept.append(token)
    text = tokenizer.decode(kept, skip_special_tokens=True)
    if why == "newline":
        head = text.lstrip()
        text = head.split("\n", 1)[0] if head else text
    return Answer(text.strip(), kept, why)


def continuation_logprobs(
    loaded: LoadedModel,
    encoded: Sequence[EncodedEntity],
    *,
    batch_size: int = 16,
    edit: Edit | None = None,
    progress: bool = True,
    desc: str = "side effect",
) -> np.ndarray:
    """Mean log-probability per token of every prompt's tokens after the entity's last token (a fixed continuation
    such as " is the subject of this sentence."), with ``edit`` applied at the entity as in :func:`generate`."""
    out = np.full(len(encoded), np.nan)
    pad_id = pad_token_id(loaded.tokenizer)
    device = loaded.input_device
    columns, rows = _Columns(), [np.zeros(0, dtype=np.int64)]
    order = length_order(encoded)
    with _steering(loaded, edit, columns, rows), torch.inference_mode():
        for begin in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress):
            batch = collate(encoded, order[begin : begin + batch_size], pad_id, padding_side="left")
            rows[0] = batch.indices
            width = batch.input_ids.shape[1]
            columns.start, columns.weights = 0, _edit_weights(batch, encoded, edit, width)
            tails = [len(encoded[i]) - 1 - encoded[i].last for i in batch.indices]
            keep = max(tails) + 1
            if keep < 2:
                raise ValueError("the prompts have no tokens after the entity to score")
            logits = loaded.model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                                  position_ids=batch.position_ids.to(device), use_cache=False,
                                  logits_to_keep=keep).logits  # fmt: skip
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predictions of the last keep-1 tokens
            targets = batch.input_ids[:, width - keep + 1 :].to(logp.device)
            chosen = logp.gather(-1, targets[:, :, None])[:, :, 0].cpu().numpy()
            for row, (index, tail) in enumerate(zip(batch.indices, tails, strict=True)):
                out[index] = chosen[row, chosen.shape[1] - tail :].mean()
    return out
