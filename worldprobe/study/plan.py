"""What a study does, before doing it: its work units per stage, and the disk and device they need.

``plan`` lists the units of every stage in order (extraction model-major, so that a worker loads each model once);
``estimate_disk`` reads every model's config, so a model the hub does not know, or layers beyond its blocks, fails
here, before any work.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldprobe.config import RANDOM_PREFIX
from worldprobe.errors import WorldprobeError
from worldprobe.study.settings import Study, check_layers_of
from worldprobe.workspace import Workspace

STAGES = ("datasets", "models", "extract", "probes", "neurons", "ask", "steer", "context", "report")
"""The stages in order. ``models`` (each model's files fetched and converted, no weights loaded) runs beside
``datasets``: neither needs the other."""
TOGETHER = {"models": "datasets", "neurons": "probes"}
"""A stage whose units run in the same batch as an earlier stage's, ahead of them (neither needs the other's products;
a model's dequantisation and the neuron search are the longest units of their batch)."""


def model_shape(model: str) -> tuple[int, int]:
    """(number of blocks, residual width) of a model without loading weights: from its preset, else its config."""
    from worldprobe.extract.models import PRESETS, describe_model

    name = model.removeprefix(RANDOM_PREFIX)
    if name in PRESETS:  # no GGUF fetch for a dry run
        return PRESETS[name].n_layers, PRESETS[name].d_model
    info = describe_model(name)
    return info.n_layers, info.d_model




@dataclass(frozen=True)
class Unit:
    """One piece of work of one stage; ``run`` is picklable by reference (a module-level function)."""

    stage: str
    label: str
    params: dict[str, Any]


def plan(study: Study) -> dict[str, list[Unit]]:
    """The work units of each stage, in order."""
    units: dict[str, list[Unit]] = {stage: [] for stage in STAGES}
    for entry in study.datasets:
        units["datasets"].append(Unit("datasets", entry.name, {"entry": entry, "seed": study.seed}))
    for model in dict.fromkeys(m.removeprefix(RANDOM_PREFIX) for m in study.all_models):
        units["models"].append(Unit("models", model, {"model": model}))
    for model in study.all_models:  # model-major: a serial run loads each model once (see extract.models)
        for seed in study.seeds_of(model):
            for entry in study.datasets:
                for prompt in entry.prompts:
                    params = {"dataset": entry.name, "model": model, "prompt": prompt, "limit": entry.limit,
                              "seed": seed}  # fmt: skip
                    units["extract"].extend(_shard_units(_cache_label(params), params, study.extract.shards))
    for entry in study.datasets:
        for model in study.extract.models:
            for prompt in entry.prompts:
                for probe in study.probes.probes:
                    label = f"{entry.name} x {model} x {prompt} x {probe}"
                    params = {"dataset": entry.name, "model": model, "prompt": prompt, "probe": probe}
                    units["probes"].append(Unit("probes", label, params))
    for name in study.neurons.datasets:
        for model in study.neurons.models or study.extract.models[:1]:
            units["neurons"].append(Unit("neurons", f"{name} x {model}", {"dataset": name, "model": model}))
    prompts = {entry.name: entry.prompts[0] for entry in study.datasets}
    for stage in ("ask", "steer", "context"):
        settings = getattr(study, stage)
        for name in settings.datasets:
            for model in settings.models or study.extract.models[:1]:
                params = {"dataset": name, "model": model, "prompt": prompts[name]}
                units[stage].append(Unit(stage, f"{name} x {model}", params))
    units["report"].append(Unit("report", "index.html", {}))
    return units


def _cache_label(params: dict[str, Any]) -> str:
    """``dataset x model x prompt`` (and ``seed N`` for a random-init twin): how the run and the disk estimate name
    one activation cache."""
    label = f"{params['dataset']} x {params['model']} x {params['prompt']}"
    return label + (f" seed {params['seed']}" if params["model"].startswith(RANDOM_PREFIX) else "")


def _shard_units(label: str, params: dict[str, Any], shards: int) -> list[Unit]:
    """One extract unit per cache, or one per shard of it (the shard that finishes last completes the cache)."""
    if shards == 1:
        return [Unit("extract", label, params)]
    return [
        Unit("extract", f"{label} [shard {i + 1}/{shards}]", {**params, "shard": (i, shards)}) for i in range(shards)
    ]




@dataclass(frozen=True)
class CacheEstimate:
    label: str
    n_entities: int | None
    n_layers: int
    d_model: int
    on_disk: bool = False  # a finished cache of the same dataset table, model, prompt and dtype is there already
    stored_layers: int | None = None  # the layers the study extracts ([extract] layers); None: all n_layers + 1
    at_most: bool = False  # n_entities is the dataset's limit, the table not built yet: it may hold fewer rows

    @property
    def bytes(self) -> int | None:
        """float16 storage of the extracted layers (all: embeddings + blocks) at one token per entity."""
        if self.n_entities is None:
            return None
        layers = self.stored_layers if self.stored_layers is not None else self.n_layers + 1
        return self.n_entities * layers * self.d_model * 2


def estimate_disk(study: Study, workspace: Workspace) -> list[CacheEstimate]:
    """Activation bytes per cache, from the model's architecture and the number of entities. Reads every model's
    config, so a model the hub does not know (or layers beyond its blocks) is an error here, naming the study key."""
    from worldprobe.extract.cache import parse_layers

    estimates = []
    sources = {entry.name: entry.source for entry in study.datasets}
    shapes = {model: _checked_shape(study, model) for model in dict.fromkeys(study.all_models + study.neurons.models)}
    for unit in plan(study)["extract"]:
        if unit.params.get("shard", (0, 1))[0] > 0:
            continue  # the shards of a cache share its files
        n_layers, d_model = shapes[unit.params["model"]]
        dataset = unit.params["dataset"]
        n, exact = _expected_entities(dataset, sources[dataset], unit.params["limit"], workspace)
        on_disk = _cache_on_disk(study, unit.params, workspace, n_layers)
        stored = len(parse_layers(study.extract.layers, n_layers))
        estimates.append(CacheEstimate(_cache_label(unit.params), n, n_layers, d_model, on_disk, stored,
                                       at_most=not exact))  # fmt: skip
    return estimates


def _cache_on_disk(study: Study, params: dict, workspace: Workspace, n_layers: int) -> bool:
    """Whether extraction would find its cache finished (same dataset table, model, prompt, dtype, seed, layers)."""
    from worldprobe.devices import cache_dtype
    from worldprobe.extract import find_cache
    from worldprobe.extract.cache import MissingCacheError, parse_layers

    seed = {"seed": params["seed"]} if params["model"].startswith(RANDOM_PREFIX) else {}  # trained weights: no seed
    try:
        dtype = cache_dtype(study.extract.dtype, study.extract.device)
    except WorldprobeError:  # a plan for another machine's device: the dry run notes it; its caches are not here
        return False
    try:
        find_cache(params["dataset"], params["model"], params["prompt"], workspace=workspace, **seed, dtype=dtype,
                   layers=parse_layers(study.extract.layers, n_layers))  # fmt: skip
    except MissingCacheError:  # (several caches that differ are an error to show, not a cache to extract again)
        return False
    return True


def _checked_shape(study: Study, model: str) -> tuple[int, int]:
    """The model's shape (reading its config: a hub id the hub does not know fails here, before any work), and the
    study's layers within its blocks; errors name the study file and key."""

    key = "extract.random_init" if model.startswith(RANDOM_PREFIX) else "extract.models"
    key = key if model in study.all_models else "neurons.models"
    try:
        n_layers, d_model = model_shape(model)
    except WorldprobeError as error:
        raise WorldprobeError(error.message, file=study.path, field=key, hint=error.hint) from None
    check_layers_of(study, model, n_layers)
    return n_layers, d_model


def _expected_entities(dataset: str, source: str, limit: int | None, workspace: Workspace
                       ) -> tuple[int | None, bool]:  # fmt: skip
    """(entities a cache will hold, whether that is exact): the built table's rows, else the release's size for the
    paper source (capped by the limit), else the limit as an upper bound (the source may hold fewer rows)."""
    path = workspace.dataset_table(dataset)
    if path.exists():
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(path).metadata.num_rows
    elif source == "paper":
        from worldprobe.datasets.sources.paper import RELEASE_ROWS

        rows = RELEASE_ROWS[dataset]
    else:
        return limit, False
    return (min(rows, limit) if limit else rows), True


def disk_needed(estimates: Iterable[CacheEstimate], workspace: Workspace) -> tuple[int, int]:
    """(bytes the caches not yet on disk need, bytes free where the workspace is)."""
    needed = sum(e.bytes or 0 for e in estimates if not e.on_disk)
    return needed, shutil.disk_usage(workspace.root if workspace.root.exists() else Path.cwd()).free


def check_disk(estimates: Iterable[CacheEstimate], workspace: Workspace) -> tuple[int, int]:
    """(bytes needed, bytes free); raises when the caches will not fit."""
    needed, free = disk_needed(estimates, workspace)
    if needed > free:
        raise WorldprobeError(
            f"the activation caches need {needed / 1e9:.1f} GB but only {free / 1e9:.1f} GB are free",
            file=workspace.root, hint="free disk space, lower the datasets' limit, or pick fewer layers",
        )  # fmt: skip
    return needed, free


def check_device(study: Study) -> None:
    """The study's device exists on this machine (for serial runs; the workers of a Ray cluster check their own)."""
    from worldprobe.devices import resolve_device

    try:
        resolve_device(study.extract.device)
    except WorldprobeError as error:
        raise WorldprobeError(error.message, file=study.path, field="extract.device", hint=error.hint) from None
