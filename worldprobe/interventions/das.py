"""A learned 1-D steering direction (``das``): distributed alignment search (Geiger et al. 2024, "Finding alignments
between interpretable causal variables and distributed neural representations") with a one-dimensional subspace.

Trained on train entities only — never the steering map's select entities, never a few-shot example of the prompt:

1. each entity's prompt is answered once, unsteered (greedy); entities whose answer does not parse are left out;
2. h_s, each entity's residual state after block l at its last token in its own prompt (one pass, no gradient);
3. a unit vector u at layer l is trained (Adam, seeded; the model's weights stay fixed) so that the *interchange*
   along it — the base entity's state h_b at its last token replaced along u by a source entity's,
   h_b + ((h_s − h_b)·u) u — makes the model give the source's answer on the base's prompt: the loss is the
   cross-entropy of the source's own answer tokens, teacher-forced after the base's prompt, with the softmax taken
   over the tokens that occur in the train entities' answers (the full vocabulary's unembedding was 40-80% of a step
   on Gemma-3-270M's 262k tokens, and only those tokens compete for these answers). Bases come in fixed seeded
   batches whose prompt columns before the earliest entity's last token are computed once, without gradient (the
   interchange cannot change them); sources are drawn at random (never the base) for every step.

The vector is then oriented and calibrated like every other method (``worldprobe.interventions.directions``) and
steered at the same doses. It is trained at the last entity token; ``--positions entity`` adds the same vector at
every entity token. The cost is one forward and one backward pass of ``batch`` prompts per step and layer.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from worldprobe.errors import WorldprobeError
from worldprobe.extract.models import LoadedModel
from worldprobe.extract.runner import Batch, collate, forward_batches, pad_token_id
from worldprobe.extract.tokens import EncodedEntity
from worldprobe.interventions.generate import cache_argument, rewriting
from worldprobe.interventions.options import DasSettings


@dataclass(frozen=True)
class DasFit:
    """A trained direction at one layer and how training went (mean loss of the first and last tenth of steps)."""

    layer: int
    vector: np.ndarray  # (d,) unit, oriented so that the answers rise along it
    loss_first: float
    loss_last: float
    cpu_seconds: float
    answer_correlation: float  # of the entities' states along ``vector`` (their own prompts) with their answers

    def record(self) -> dict[str, float]:
        return {"loss_first_tenth": self.loss_first, "loss_last_tenth": self.loss_last, "cpu_seconds": self.cpu_seconds,
                "answer_correlation": self.answer_correlation}  # fmt: skip


def train_das(
    loaded: LoadedModel,
    prompts: Sequence[EncodedEntity],
    answers: Sequence[Sequence[int]],
    readings: Sequence[float],
    layers: Sequence[int],
    *,
    settings: DasSettings = DasSettings(),
    seed: int = 0,
    progress: bool = True,
) -> dict[int, DasFit]:
    """A ``das`` direction per layer from the entities' ``prompts``, their own answers' token ids and the answers'
    values (``readings``, NaN where an answer did not parse: that entity is left out) (module docstring). The
    interchange does not tell a direction from its negative; each is oriented so that the entities' states along it
    (in their own prompts) rise with their answers."""
    usable = [i for i, (a, r) in enumerate(zip(answers, readings, strict=True)) if len(a) and np.isfinite(r)]
    if len(usable) < 2:
        raise WorldprobeError(f"a das direction needs answers of at least 2 train entities, {len(usable)} parsed",
                              field="direction", hint="check the question's answers (worldprobe ask)")  # fmt: skip
    prompts = [prompts[i] for i in usable]
    answers = [list(answers[i]) for i in usable]
    values = np.asarray([readings[i] for i in usable], dtype=np.float64)
    states = source_states(loaded, prompts, layers, batch_size=settings.batch * 2)
    vocabulary = sorted({t for a in answers for t in a})
    lookup = {t: j for j, t in enumerate(vocabulary)}
    answers = [[lookup[t] for t in a] for a in answers]
    fits = {}
    bar = tqdm(total=len(layers) * settings.steps, desc="learning das directions", unit="step", disable=not progress,
               dynamic_ncols=True)  # fmt: skip
    with _frozen(loaded.model), _answer_head(loaded.model, vocabulary):
        for layer in layers:
            fits[layer] = _oriented(_train_layer(loaded, prompts, answers, states[layer], layer, settings, seed, bar),
                                    states[layer].numpy(), values)  # fmt: skip
    bar.close()
    return fits


def _oriented(fit: DasFit, states: np.ndarray, values: np.ndarray) -> DasFit:
    along = states.astype(np.float64) @ fit.vector
    r = float(np.corrcoef(along, values)[0, 1]) if np.std(along) > 0 and np.std(values) > 0 else 0.0
    if r < 0:
        return DasFit(fit.layer, -fit.vector, fit.loss_first, fit.loss_last, fit.cpu_seconds, -r)
    return DasFit(fit.layer, fit.vector, fit.loss_first, fit.loss_last, fit.cpu_seconds, r)


def source_states(loaded: LoadedModel, prompts: Sequence[EncodedEntity], layers: Sequence[int], *,
                  batch_size: int = 16) -> dict[int, torch.Tensor]:  # fmt: skip
    """(n, d) float32 per layer: every prompt's residual state after block l at its entity's last token (the
    extraction's own pass, :func:`worldprobe.extract.runner.forward_batches`: the steering anchor is its layer)."""
    found = {layer: torch.zeros(len(prompts), loaded.d_model) for layer in layers}
    for batch, rows in forward_batches(loaded, prompts, batch_size, layers=layers, padding_side="left"):
        for layer in layers:
            found[layer][torch.as_tensor(batch.indices)] = torch.as_tensor(rows[layer])
    return found


@dataclass
class BaseGroup:
    """A fixed batch of base entities with their prompts left-padded to one width and the key/value cache of the
    columns before the earliest entity's last token (computed once, without gradient: the interchange cannot change
    them)."""

    entities: np.ndarray
    batch: Batch
    split: int  # prefix columns [0, split), every row's entity column >= split
    cache: Any


def base_groups(loaded: LoadedModel, prompts: Sequence[EncodedEntity], size: int, rng: np.random.Generator
                ) -> list[BaseGroup]:  # fmt: skip
    """The prompts in seeded batches of ``size`` with their prefix caches (:class:`BaseGroup`)."""
    order = rng.permutation(len(prompts))
    pad_id = pad_token_id(loaded.tokenizer)
    device = loaded.input_device
    groups = []
    with torch.no_grad():
        for begin in range(0, len(order), size):
            entities = order[begin : begin + size]
            batch = collate(prompts, entities, pad_id, padding_side="left")
            split = int(batch.last.min())
            out = loaded.model(input_ids=batch.input_ids[:, :split].to(device),
                               attention_mask=batch.attention_mask[:, :split].to(device),
                               position_ids=batch.position_ids[:, :split].to(device), use_cache=True,
                               logits_to_keep=1)  # fmt: skip
            groups.append(BaseGroup(entities, batch, split, cache_argument(loaded.model, out)))
    return groups


def answer_logprobs(loaded: LoadedModel, group: BaseGroup, tail: torch.Tensor, tail_mask: torch.Tensor) -> torch.Tensor:
    """(B, width) log-probabilities of the ``tail`` tokens (right-padded answers, ``tail_mask`` 1 on real tokens)
    teacher-forced after each row's prompt, computed from the group's prefix cache (a copy: the cache stays as it
    was) through whatever hooks are open."""
    device = loaded.input_device
    mask = torch.cat([group.batch.attention_mask, tail_mask], dim=1)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, group.split :]
    ids = torch.cat([group.batch.input_ids[:, group.split :], tail], dim=1)
    logits = loaded.model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                          use_cache=True, logits_to_keep=tail.shape[1] + 1,
                          **{k: copy.deepcopy(v) for k, v in group.cache.items()}).logits  # fmt: skip
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # the predictions of the tail's tokens
    return logp.gather(-1, tail[:, :, None].to(logp.device))[:, :, 0]


def _train_layer(loaded: LoadedModel, prompts: list[EncodedEntity], answers: list[list[int]], states: torch.Tensor,
                 layer: int, settings: DasSettings, seed: int, bar: tqdm) -> DasFit:  # fmt: skip
    cpu = time.process_time()
    rng = np.random.default_rng([seed, layer, 7])
    start = torch.as_tensor(rng.normal(size=states.shape[1]), dtype=torch.float32)
    vector = torch.nn.Parameter(start / start.norm())
    optimiser = torch.optim.Adam([vector], lr=settings.learning_rate)
    groups = base_groups(loaded, prompts, settings.batch, rng)
    n = len(prompts)
    losses = []
    for step in range(settings.steps):
        group = groups[step % len(groups)]
        source = (group.entities + rng.integers(1, n, len(group.entities))) % n  # never the base itself
        lengths = torch.tensor([len(answers[s]) for s in source])
        width = int(lengths.max())
        tail = torch.zeros((len(source), width), dtype=torch.long)  # answers as indices of the answer vocabulary
        tail_mask = torch.zeros((len(source), width), dtype=torch.long)
        for row, s in enumerate(source):
            tail[row, : lengths[row]] = torch.tensor(answers[s])
            tail_mask[row, : lengths[row]] = 1
        swap = interchange(vector, group.batch.last - group.split, states[source])
        with rewriting(loaded.model, layer, swap), torch.enable_grad():
            chosen = answer_logprobs(loaded, group, tail, tail_mask)
            weight = tail_mask.to(chosen.device, chosen.dtype)
            loss = -(chosen * weight).sum() / weight.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        losses.append(float(loss.detach()))
        bar.update(1)
    tenth = max(1, len(losses) // 10)
    unit = (vector / vector.norm()).detach().cpu().numpy().astype(np.float64)
    return DasFit(layer, unit, float(np.mean(losses[:tenth])), float(np.mean(losses[-tenth:])),
                  time.process_time() - cpu, float("nan"))  # fmt: skip


def interchange(vector: torch.Tensor, columns: torch.Tensor, sources: torch.Tensor
                ) -> Callable[[torch.Tensor], torch.Tensor]:  # fmt: skip
    """The rewrite that sets each row's state at its column to the source state's value along ``vector``:
    h + ((h_source − h)·u) u with u = vector / ‖vector‖ (differentiable in ``vector``)."""

    def apply(hidden: torch.Tensor) -> torch.Tensor:
        unit = vector / vector.norm()
        at = (torch.arange(hidden.shape[0], device=hidden.device), columns.to(hidden.device))
        here = hidden[at].float()
        moved = here + ((sources.to(here.device) - here) @ unit)[:, None] * unit[None, :]
        return hidden.index_put(at, moved.to(hidden.dtype))

    return apply


@contextmanager
def _answer_head(model: torch.nn.Module, vocabulary: list[int]) -> Iterator[None]:
    """While open, the model's output layer scores only the tokens of ``vocabulary`` (logit j is token
    ``vocabulary[j]``; the model's own logit transforms such as soft-capping still apply)."""
    head = model.get_output_embeddings()
    rows = torch.as_tensor(vocabulary, device=head.weight.device)
    small = torch.nn.Linear(head.weight.shape[1], len(vocabulary), bias=getattr(head, "bias", None) is not None,
                            device=head.weight.device, dtype=head.weight.dtype)  # fmt: skip
    with torch.no_grad():
        small.weight.copy_(head.weight[rows])
        if small.bias is not None:
            small.bias.copy_(head.bias[rows])
    small.requires_grad_(False)
    model.set_output_embeddings(small)
    try:
        yield
    finally:
        model.set_output_embeddings(head)


@contextmanager
def _frozen(model: torch.nn.Module) -> Iterator[None]:
    """The model's parameters need no gradient while a direction is trained (restored after)."""
    was = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in was:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in was:
            p.requires_grad_(flag)
