"""Batched forward passes with hooks on the decoder blocks, and :func:`run_extraction` (dataset -> cache).

Layer l is the output of block l before the final norm (layer 0 = the embedding output, i.e. the input of block 0).
Entity rows are gathered right after each block, so (batch x tokens x d) is never kept for more than one layer,
and the forward pass stops after the deepest block needed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import worldprobe
from worldprobe.checks import COUNT, FLAG, LAYERS, NAME, SEED, checked_arguments
from worldprobe.config import DEFAULT_MODEL, DEFAULT_SEED, RANDOM_PREFIX
from worldprobe.datasets.prompts import get_prompt
from worldprobe.datasets.registry import load_user_specs
from worldprobe.datasets.table import checked_fingerprint, fingerprint, load, load_report, sample_rows
from worldprobe.devices import dtype_choice, resolve_device
from worldprobe.errors import WorldprobeError
from worldprobe.extract import cache as cache_mod
from worldprobe.extract.models import LoadedModel, describe_model, load_model_kept, requested
from worldprobe.extract.options import Batching, ModelRequest, check_shard
from worldprobe.extract.prefix import batch_cache, empty_cache, planned_prefix
from worldprobe.extract.tokens import EncodedEntity, encode_entities
from worldprobe.extract.writer import CacheWriter, merge_shards, remove_cache, shard_done
from worldprobe.reuse import starting_work
from worldprobe.workspace import WORKSPACE, Workspace, as_workspace


@dataclass
class Batch:
    """One padded batch: ``indices`` into the encoded list, tensors, and what to gather per row."""

    indices: np.ndarray
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    last: torch.Tensor  # (B,) position of each entity's last token
    weights: torch.Tensor | None  # (B, T) mean weights over entity tokens (aggregation "mean")


def pad_token_id(tokenizer: Any) -> int:
    """An existing token to pad with (pad, else eos, else unk, else 0); padded positions are masked out."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def length_order(encoded: Sequence[EncodedEntity]) -> np.ndarray:
    """Indices sorted by token length, longest first (stable), so batches carry little padding."""
    return np.argsort(-np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded)), kind="stable")


def collate(
    encoded: Sequence[EncodedEntity],
    indices: np.ndarray,
    pad_id: int,
    *,
    padding_side: str = "right",
    aggregation: str = "last",
) -> Batch:
    """Pad the chosen entities into one batch; explicit position ids make left and right padding equivalent."""
    items = [encoded[i] for i in indices]
    width = max(len(e) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    last = torch.empty(len(items), dtype=torch.long)
    weights = torch.zeros((len(items), width), dtype=torch.float32) if aggregation == "mean" else None
    for row, item in enumerate(items):
        shift = width - len(item) if padding_side == "left" else 0
        ids[row, shift : shift + len(item)] = torch.tensor(item.input_ids)
        mask[row, shift : shift + len(item)] = 1
        last[row] = item.last + shift
        if weights is not None:
            weights[row, [p + shift for p in item.entity_positions]] = 1.0 / len(item.entity_positions)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return Batch(np.asarray(indices), ids, mask, positions, last, weights)


def iter_batches(
    encoded: Sequence[EncodedEntity],
    batch_size: int,
    pad_id: int,
    *,
    padding_side: str = "right",
    aggregation: str = "last",
    sort: bool = True,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[Batch]:
    """Batches of ``batch_size`` entities (sorted by length unless ``sort=False``), batch numbers ``start`` up to
    ``stop`` (exclusive; None: to the end)."""
    order = length_order(encoded) if sort else np.arange(len(encoded))
    end = len(order) if stop is None else min(len(order), stop * batch_size)
    for begin in range(start * batch_size, end, batch_size):
        yield collate(encoded, order[begin : begin + batch_size], pad_id, padding_side=padding_side,
                      aggregation=aggregation)  # fmt: skip


def gather_rows(hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The entity rows of a (B, T, k) tensor: the last entity token, or the mean over entity tokens; float32."""
    if batch.weights is not None:
        return torch.einsum("bt,btk->bk", batch.weights.to(hidden.device), hidden.float())
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, batch.last.to(hidden.device)].float()


class _StopForward(Exception):
    """Raised by a hook after the deepest block needed: the rest of the model is not run."""


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple | list) else value


def _block_of(module: torch.nn.Module, blocks: Sequence[torch.nn.Module]) -> int:
    """1-based index of the decoder block containing ``module`` (0 when it is in none)."""
    for i, block in enumerate(blocks, start=1):
        if any(m is module for m in block.modules()):
            return i
    return len(blocks)


@contextmanager
def _tapped(
    loaded: LoadedModel,
    layers: Sequence[int],
    sink: dict[Any, torch.Tensor],
    current: list[Batch],
    capture_inputs: Mapping[str, torch.nn.Module],
    capture_outputs: Mapping[str, torch.nn.Module],
    stop_after: int | None,
) -> Iterator[None]:
    """Register gathering hooks for the layers and extra modules, plus the stop hook; remove them afterwards."""
    blocks = loaded.decoder_layers
    handles = []

    def output_hook(key: Any) -> Callable:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            if current:  # no batch: the shared prefix's own pass, which has no entity rows
                sink[key] = gather_rows(_first_tensor(output), current[0]).cpu()

        return hook

    def input_hook(key: Any) -> Callable:
        def hook(module: torch.nn.Module, args: Any, kwargs: Any) -> None:
            if current:
                sink[key] = gather_rows(args[0] if args else kwargs["hidden_states"], current[0]).cpu()

        return hook

    def stop(module: torch.nn.Module, args: Any, output: Any) -> None:
        raise _StopForward

    try:
        for layer in layers:
            if layer == 0:
                handles.append(blocks[0].register_forward_pre_hook(input_hook(0), with_kwargs=True))
            else:
                handles.append(blocks[layer - 1].register_forward_hook(output_hook(layer)))
        for name, module in capture_inputs.items():
            handles.append(module.register_forward_pre_hook(input_hook(name), with_kwargs=True))
        for name, module in capture_outputs.items():
            handles.append(module.register_forward_hook(output_hook(name)))
        if stop_after is not None:
            handles.append(blocks[max(stop_after, 1) - 1].register_forward_hook(stop))
        yield
    finally:
        for handle in handles:
            handle.remove()


def forward_batches(
    loaded: LoadedModel,
    encoded: Sequence[EncodedEntity],
    batch_size: int,
    *,
    layers: Sequence[int] = (),
    aggregation: str = "last",
    padding_side: str = "right",
    capture_inputs: Mapping[str, torch.nn.Module] | None = None,
    capture_outputs: Mapping[str, torch.nn.Module] | None = None,
    sort: bool = True,
    start: int = 0,
    stop: int | None = None,
    share_prefix: bool = True,
) -> Iterator[tuple[Batch, dict[Any, np.ndarray]]]:
    """Run the model over ``encoded`` in batches and yield ``(batch, rows)`` per batch.

    ``rows[layer]`` is (B, d_model) float32 for each requested layer; ``rows[name]`` is the gathered input
    (``capture_inputs``) or output (``capture_outputs``) of any other module, e.g. an MLP's ``down_proj`` input for
    neuron activations. Row i belongs to ``encoded[batch.indices[i]]``. The forward pass stops after the deepest
    block any of these needs. With ``share_prefix`` (and right padding) the tokens every row starts with before its
    entity run once and each batch continues from their keys and values (:mod:`worldprobe.extract.prefix`).
    """
    if aggregation not in cache_mod.AGGREGATIONS:
        raise WorldprobeError(f"unknown aggregation {aggregation!r}", hint="last or mean")
    capture_inputs, capture_outputs = dict(capture_inputs or {}), dict(capture_outputs or {})
    blocks = loaded.decoder_layers
    depths = [max(layers, default=0)] + [
        _block_of(m, blocks) for m in [*capture_inputs.values(), *capture_outputs.values()]
    ]
    stop_after = max(depths)
    sink: dict[Any, torch.Tensor] = {}
    current: list[Batch] = []
    pad_id = pad_token_id(loaded.tokenizer)
    device = loaded.input_device
    keyword, shared = planned_prefix(loaded.model, encoded, padding_side, share_prefix)
    with _tapped(loaded, layers, sink, current, capture_inputs, capture_outputs, stop_after), torch.inference_mode():
        prefix = _run_prefix(loaded, encoded[0].input_ids[:shared], keyword) if shared else None
        for batch in iter_batches(encoded, batch_size, pad_id, padding_side=padding_side, aggregation=aggregation,
                                  sort=sort, start=start, stop=stop):  # fmt: skip
            fed = _without_prefix(batch, shared)
            current[:] = [fed]
            sink.clear()
            cache = {keyword: batch_cache(prefix, len(batch.indices))} if shared else {}
            with suppress(_StopForward):
                loaded.model(**{
                    "input_ids": fed.input_ids.to(device), "attention_mask": batch.attention_mask.to(device),
                    "position_ids": fed.position_ids.to(device), "use_cache": bool(shared), **cache,
                })  # fmt: skip
            yield batch, {key: value.numpy() for key, value in sink.items()}


def _run_prefix(loaded: LoadedModel, ids: Sequence[int], keyword: str) -> Any:
    """The key/value cache of the shared prefix ``ids``, from one pass (which stops where the batches stop)."""
    cache = empty_cache(loaded.model)
    device = loaded.input_device
    with suppress(_StopForward):
        loaded.model(**{
            "input_ids": torch.tensor([list(ids)], device=device), "attention_mask": torch.ones(1, len(ids),
            dtype=torch.long, device=device), "position_ids": torch.arange(len(ids), device=device)[None],
            "use_cache": True, keyword: cache,
        })  # fmt: skip
    return cache


def _without_prefix(batch: Batch, shared: int) -> Batch:
    """The batch's tokens after the first ``shared`` (what its forward pass feeds; the attention mask keeps them)."""
    if not shared:
        return batch
    weights = None if batch.weights is None else batch.weights[:, shared:]
    return Batch(batch.indices, batch.input_ids[:, shared:], batch.attention_mask, batch.position_ids[:, shared:],
                 batch.last - shared, weights)  # fmt: skip


def default_batch_size(loaded: LoadedModel) -> int:
    """Entities per batch when not given: larger for small models, bounded for memory."""
    if loaded.device.startswith("cuda"):
        return 128
    return 64 if loaded.d_model <= 1024 else 16


def twin_quantization(model: str, quantization: str | None) -> str | None:
    """The quantisation a model really gets: a random-init twin is built from its config with random weights, which
    bitsandbytes does not quantise, so it runs (and is recorded) unquantised whatever its model uses."""
    if quantization is not None and model.startswith(RANDOM_PREFIX):
        warnings.warn(f"{model}: a random-init twin is not quantised ({quantization} asked for its model); it runs and "
                      "is recorded unquantised", stacklevel=3)  # fmt: skip
        return None
    return quantization


@checked_arguments(
    dataset=NAME, prompt=NAME, workspace=WORKSPACE, layers=LAYERS, limit=COUNT, aggregation=cache_mod.AGGREGATION,
    seed=SEED, progress=FLAG, rebuild=FLAG, pooled_embedding=FLAG,
)  # fmt: skip
def run_extraction(
    dataset: str,
    model: str | torch.nn.Module | ModelRequest = DEFAULT_MODEL,
    prompt: str = "empty",
    *,
    workspace: Workspace | str | Path | None = None,
    layers: str | Sequence[int] = "all",
    aggregation: str = "last",
    limit: int | None = None,
    seed: int = DEFAULT_SEED,
    batching: Batching = Batching(),
    progress: bool = True,
    rebuild: bool = False,
    pooled_embedding: bool = False,
) -> Path:
    """Cache the residual stream of every entity of a built dataset at the requested layers; return the folder.

    ``model``: a name or a :class:`~worldprobe.extract.options.ModelRequest` (dtype, device, quantization, GGUF file,
    hub revision, a twin's seed, max_memory); a loaded Hugging Face causal LM goes by the name
    ``register_model(model, tokenizer)`` gives it (a fingerprint of its config and weights, so an edited model gets
    a cache of its own). ``limit``: a seeded sample of that many entities (``seed``; a random-init twin's weights take
    the request's seed when it has one, so that twins of several seeds share their model's rows). ``batching``: how
    the entities are fed (:class:`Batching`, including sharding).

    Returns at once when an intact finished cache with the same settings (and all requested layers) exists; resumes
    an unfinished one from its ledger; refuses a folder whose manifest disagrees, saying what differs, and a damaged
    finished cache (``rebuild=True`` deletes the request's cache folder and extracts it afresh). The settings that
    make a cache (its identity) include the model's weights checksum (local folders, GGUF files), the hub revision
    (the resolved commit is recorded) and the prompt's template. A sharded call leaves an unfinished cache until its
    last shard finishes.

    With ``pooled_embedding`` an unsharded cache of the last token that holds layer 0 also gets its companion: layer 0
    averaged over the entity's tokens (aggregation ``mean``, layers ``[0]``), which the embedding control reads
    (``extract.cache.find_pooled``); with the model already loaded it costs one block's forward pass (``worldprobe
    run`` asks for it when its probes run the embedding control; ``worldprobe probe --control embedding`` extracts it
    when missing).
    """
    request = requested(model, seed)
    path = _extract_cache(
        dataset, request.name, prompt, workspace=workspace, layers=layers, batching=batching, dtype=request.dtype,
        device=request.device, quantization=request.quantization, limit=limit, aggregation=aggregation,
        seed=request.options["seed"], limit_seed=seed, gguf_file=request.gguf_file, max_memory=request.max_memory,
        progress=progress, revision=request.revision, rebuild=rebuild,
    )  # fmt: skip
    manifest = cache_mod.read_manifest(path)
    if pooled_embedding and wants_pooled(manifest) and check_shard(batching.shard)[1] == 1:
        extract_pooled(manifest, workspace=workspace, batch_size=batching.batch_size, device=request.device,
                       gguf_file=request.gguf_file, max_memory=request.max_memory, progress=progress)  # fmt: skip
    return path


def wants_pooled(manifest: Mapping[str, Any]) -> bool:
    """Whether a finished cache calls for a pooled-embedding companion: a trained model's last-token cache with
    layer 0."""
    return (bool(manifest.get("complete")) and manifest.get("aggregation", "last") == "last"
            and 0 in manifest.get("layers", []) and not str(manifest["model"]).startswith(RANDOM_PREFIX))  # fmt: skip


def extract_pooled(
    manifest: Mapping[str, Any],
    *,
    workspace: Workspace | str | Path | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    gguf_file: str | None = None,
    max_memory: dict[Any, str] | None = None,
    progress: bool = True,
) -> Path:
    """The pooled-embedding companion of the cache with ``manifest`` (extracted when missing): layer 0 averaged over
    the entity's tokens, with the same rows (limit and its seed), model, quantization, dtype, prompt and padding."""
    source = manifest.get("model_source") or {}
    return _extract_cache(
        str(manifest["dataset"]), str(manifest["model"]), str(manifest.get("prompt", "empty")), workspace=workspace,
        layers=[0], dtype=str(manifest.get("dtype", "auto")), device=device,
        quantization=manifest.get("quantization"), limit=manifest.get("limit"), aggregation="mean",
        seed=int(manifest.get("seed") or DEFAULT_SEED), limit_seed=manifest.get("limit_seed"),
        gguf_file=gguf_file or manifest.get("gguf_file"), max_memory=max_memory, progress=progress,
        revision=source.get("revision"), batching=Batching(batch_size=batch_size, padding_side=str(manifest.get(
        "padding_side", "right")), share_prefix=bool(manifest.get("shared_prefix_tokens"))),
    )  # fmt: skip


def _extract_cache(
    dataset: str,
    model: str = DEFAULT_MODEL,
    prompt: str = "empty",
    *,
    workspace: Workspace | str | Path | None = None,
    layers: str | Sequence[int] = "all",
    batching: Batching = Batching(),
    dtype: str = "auto",
    device: str = "auto",
    quantization: str | None = None,
    limit: int | None = None,
    aggregation: str = "last",
    seed: int = DEFAULT_SEED,
    limit_seed: int | None = None,
    gguf_file: str | None = None,
    max_memory: dict[Any, str] | None = None,
    progress: bool = True,
    revision: str | None = None,
    rebuild: bool = False,
) -> Path:
    """The cache of exactly this request (``run_extraction`` without its pooled-embedding companion)."""
    shard = check_shard(batching.shard)
    ws = as_workspace(workspace)
    load_user_specs(ws.datasets)
    prompt_obj = get_prompt(dataset, prompt)
    if aggregation not in cache_mod.AGGREGATIONS:
        raise WorldprobeError(f"unknown aggregation {aggregation!r}", field="aggregation", hint="last or mean")
    table = load(dataset, ws)
    data_fingerprint = _checked_fingerprint(dataset, ws, table)
    limit_seed = seed if limit_seed is None else limit_seed
    if limit is not None:
        table = sample_rows(table, limit, limit_seed)
    quantization = twin_quantization(model, quantization)
    info = describe_model(model, dtype=dtype, device=device, quantization=quantization, seed=seed,
                          gguf_file=gguf_file, revision=revision)  # fmt: skip
    wanted = cache_mod.parse_layers(layers, info.n_layers)
    uses_seed = prompt_obj.random_tokens > 0 or model.startswith(RANDOM_PREFIX)
    identity = cache_mod.CacheIdentity(
        dataset=dataset, dataset_fingerprint=data_fingerprint, model=model, model_source=info.source,
        quantization=quantization, dtype=info.dtype, prompt=prompt, prompt_template=asdict(prompt_obj),
        aggregation=aggregation, seed=seed if uses_seed else None, n_entities=len(table),
        entity_order_sha256=cache_mod.entity_order_sha256(table["entity_id"]), layers=tuple(wanted),
        n_layers=info.n_layers, d_model=info.d_model,
    )  # fmt: skip
    all_layers = wanted == list(range(info.n_layers + 1))
    path = ws.activations / identity.key(all_layers=all_layers)
    if rebuild:
        remove_cache(path)
    existing = _finished_superset(ws, identity)
    if existing is not None:
        return existing
    if (path / cache_mod.MANIFEST).exists():
        found = cache_mod.read_manifest(path)
        differences = cache_mod.CacheIdentity.of(found).differences(identity)
        if differences:
            raise WorldprobeError(
                "the cache folder holds different settings: " + "; ".join(differences), file=path,
                hint="delete that folder or change the request",
            )  # fmt: skip
        if found.get("complete"):
            cache_mod.refuse_damaged(path, found)
            return path
        if shard[1] > 1 and shard_done(path, shard):
            starting_work(f"merge the shards of {path.name}")
            merge_shards(path)  # this shard's rows are written: no model needed
            return path
    starting_work(f"extract {path.name}")
    loaded = load_model_kept(model, dtype=dtype, device=device, quantization=quantization, seed=seed,
                             gguf_file=gguf_file, max_memory=max_memory, revision=revision)  # fmt: skip
    encoded = encode_entities(loaded.tokenizer, table["text"].tolist(), prompt_obj, seed,
                              keys=table["entity_id"].astype(str).tolist())  # fmt: skip
    manifest = {
        **identity.as_dict(), "format_version": cache_mod.FORMAT_VERSION, "prompt_prefix": prompt_obj.prefix,
        "random_prefix_tokens": prompt_obj.random_tokens, "bos_token": loaded.tokenizer.bos_token,
        "padding_side": batching.padding_side, "shared_prefix_tokens": planned_prefix(loaded.model, encoded,
        batching.padding_side, batching.share_prefix)[1], "limit": limit, "limit_seed": limit_seed if limit else None,
        "device": loaded.device, "dtype_choice": dtype_choice(dtype, resolve_device(device))[1], "gguf_file": gguf_file,
        "layer_definition": "0 = embedding output (input of block 0); l = output of block l, before the final norm",
        "versions": _versions(),
    }  # fmt: skip
    size = batching.batch_size or default_batch_size(loaded)
    with CacheWriter.open(path, manifest, table, shard=shard, batch_size=size) as writer:
        if not writer.complete:
            _fill(writer, loaded, encoded, wanted, aggregation, batching, progress)
            writer.finish(batch_size=writer.batch_size)
    return path


def extract_twin(
    dataset: str, model: str, prompt: str, manifest: Mapping[str, Any], *, seed: int,
    workspace: Workspace | str | Path | None = None, layers: str | Sequence[int] = "all",
) -> Path:
    """The random-init twin's cache for the model cache with ``manifest`` (extracted when missing): the same rows
    (limit and its seed), dtype as the model's cache resolved it, aggregation and padding, so the control differs
    from the model only in its weights. Unquantised (bitsandbytes does not quantise random weights)."""
    twin = ModelRequest(f"{RANDOM_PREFIX}{model}", dtype=manifest.get("dtype", "auto"), seed=seed)
    rows_seed = manifest.get("limit_seed")
    return run_extraction(
        dataset, twin, prompt, workspace=workspace, layers=layers, aggregation=manifest.get("aggregation", "last"),
        limit=manifest.get("limit"), seed=seed if rows_seed is None else rows_seed,
        batching=Batching(padding_side=manifest.get("padding_side", "right"),
                          share_prefix=bool(manifest.get("shared_prefix_tokens"))),
    )  # fmt: skip


def _fill(
    writer: CacheWriter,
    loaded: LoadedModel,
    encoded: Sequence[EncodedEntity],
    layers: list[int],
    aggregation: str,
    batching: Batching,
    progress: bool,
) -> None:
    """The extraction loop over the writer's batches: forward, write rows at their cache index, commit the ledger
    every ``flush_rows`` and at the end (``done``)."""
    ledger, batch_size = writer.progress, int(writer.batch_size)
    batches_done, rows_done = int(ledger.get("batches_done", 0)), int(ledger.get("rows_done", 0))
    first, stop = writer.batches
    total = max(0, min(len(encoded), stop * batch_size) - first * batch_size)
    pending = 0
    suffix = f" [{cache_mod.shard_name(writer.shard)}]" if writer.sharded else ""
    bar = tqdm(total=total, initial=rows_done, unit="entity", desc=f"extract {loaded.name}{suffix}",
               disable=not progress, dynamic_ncols=True, smoothing=0.1)  # fmt: skip
    for batch, rows in forward_batches(loaded, encoded, batch_size, layers=layers, aggregation=aggregation,
                                       padding_side=batching.padding_side, start=first + batches_done, stop=stop,
                                       share_prefix=batching.share_prefix):  # fmt: skip
        for layer in layers:
            writer.write(layer, batch.indices, rows[layer])
        batches_done += 1
        rows_done += len(batch.indices)
        pending += len(batch.indices)
        bar.update(len(batch.indices))
        if pending >= batching.flush_rows:
            writer.commit(batches_done, rows_done)
            pending = 0
    writer.commit(batches_done, rows_done, done=True)
    bar.close()


def _finished_superset(ws: Workspace, identity: cache_mod.CacheIdentity) -> Path | None:
    """An intact finished cache with the same identity whose layers include the requested ones (e.g. an all-layer
    cache); a damaged one is passed over with a warning naming it."""
    for folder, found in cache_mod.iter_manifests(ws):
        if not found.get("complete") or not set(identity.layers) <= set(found.get("layers", [])):
            continue
        if cache_mod.CacheIdentity.of(found).differences(identity, ignore=("layers",)):
            continue
        problems = cache_mod.cache_problems(folder, found)
        if not problems:
            return folder
        if found.get("layers") != list(identity.layers):
            file, problem = problems[0]
            warnings.warn(f"not reusing {folder}: {file.name}: {problem}", stacklevel=2)
    return None


def _checked_fingerprint(dataset: str, ws: Workspace, table: Any) -> str:
    """The dataset's fingerprint, after checking that the table still is the one its build report describes."""
    load_report(dataset, ws)  # a missing or damaged build report is refused here
    return checked_fingerprint(dataset, ws, table) or fingerprint(table)


def _versions() -> dict[str, str]:
    import transformers

    return {"worldprobe": worldprobe.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__}  # fmt: skip
