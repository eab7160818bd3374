"""A whole study from one TOML file: datasets x models x prompts -> activations -> probes + controls -> report.

``load_study`` parses and checks a study file before any work starts (unknown keys, datasets, prompts, models);
``plan`` lists the work units of every stage; ``run_study`` runs them stage by stage through an executor (serial
or Ray), skipping what is already done for the same inputs (each stage's own functions skip finished work).
"""

from __future__ import annotations

import difflib
import os
import shutil
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from worldprobe.config import DEFAULT_SEED
from worldprobe.datasets.registry import DATASETS, get_spec
from worldprobe.errors import WorldprobeError
from worldprobe.workspace import Workspace

STAGES = ("datasets", "extract", "probes", "neurons", "report")
EXECUTORS = ("serial", "processes", "ray")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a study: where to build it from, how many entities, which prompts."""

    name: str
    source: str = "packaged"
    limit: int | None = None
    from_path: str | None = None
    prompts: tuple[str, ...] = ("empty",)


@dataclass(frozen=True)
class ExtractSettings:
    models: tuple[str, ...] = ("smollm2-135m",)
    random_init: tuple[str, ...] = ()  # models whose random-initialised twin is extracted too (controls)
    layers: str = "all"
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int | None = None
    quantization: str | dict[str, str] | None = (
        None  # "4bit"/"8bit" for all models, or per model: {"llama-2-70b" = "8bit"}
    )

    def quantization_of(self, model: str) -> str | None:
        """The quantisation of one model (a random twin is quantised like its model)."""
        if isinstance(self.quantization, dict):
            return self.quantization.get(model.removeprefix("random:"))
        return self.quantization

    flush_rows: int | None = None  # rows between ledger commits (None: the extract stage's default)
    shards: int = 1  # tasks per cache, each writing its share of the batches into the same files
    random_init_seeds: int = 3  # random-weight twins per model in random_init (seeds seed, seed + 1, ...)


@dataclass(frozen=True)
class ProbeSettings:
    probes: tuple[str, ...] = ("ridge",)
    controls: tuple[str, ...] = ()
    holdouts: bool = True  # the dataset's hold-out columns (DatasetSpec.holdout_columns)
    standardize: bool | None = None  # None: the probe stage's measured default


@dataclass(frozen=True)
class NeuronSettings:
    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    top_k: int = 10


@dataclass(frozen=True)
class Study:
    """A parsed, checked study file."""

    name: str
    path: Path
    seed: int = DEFAULT_SEED
    description: str = ""
    executor: str = "serial"  # how `worldprobe run` runs the units unless --executor says otherwise
    workers: int | None = None  # local worker processes for the processes executor (None: the CPU count)
    datasets: tuple[DatasetEntry, ...] = ()
    extract: ExtractSettings = field(default_factory=ExtractSettings)
    probes: ProbeSettings = field(default_factory=ProbeSettings)
    neurons: NeuronSettings = field(default_factory=NeuronSettings)

    @property
    def all_models(self) -> tuple[str, ...]:
        """The models to extract: the study's models and the random-init twins asked for."""
        return self.extract.models + tuple(f"random:{m}" for m in self.extract.random_init)

    def seeds_of(self, model: str) -> tuple[int, ...]:
        """The extraction seeds of a model: the study's seed, and for a random-init twin one per twin seed."""
        if model.startswith("random:"):
            return tuple(self.seed + i for i in range(self.extract.random_init_seeds))
        return (self.seed,)

    def controls_for(self, model: str) -> tuple[str, ...]:
        """The controls of one model's probe runs: ``random_init`` only for the models whose twin the study extracts
        (otherwise the probe stage would extract an unplanned twin)."""
        return tuple(c for c in self.probes.controls if c != "random_init" or model in self.extract.random_init)


# ---------------------------------------------------------------- parsing


def shipped_study(name: str) -> Path:
    """Path of a study shipped with worldprobe (``quick``, ``paper``)."""
    path = Path(str(resources.files("worldprobe") / "studies" / f"{name}.toml"))
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.toml"))
        raise WorldprobeError(f"no shipped study {name!r}", hint=f"shipped studies: {', '.join(known)}")
    return path


def resolve_study_path(study: str | Path | None) -> Path:
    """A study file path, or the name of a shipped study (default ``quick``)."""
    if study is None:
        return shipped_study("quick")
    path = Path(study)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise WorldprobeError("study file not found", file=path)
        return path
    return shipped_study(str(study))


def load_study(study: str | Path | None = None) -> Study:
    """Parse and check a study file; every mistake is reported before any work starts."""
    path = resolve_study_path(study)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise WorldprobeError(f"not valid TOML: {error}", file=path) from None
    _check_keys(raw, {"study", "datasets", "extract", "probes", "neurons"}, path, "")
    head = raw.get("study", {})
    _check_keys(head, {"name", "seed", "description", "executor", "workers"}, path, "study")
    datasets = tuple(_dataset_entry(item, path, i) for i, item in enumerate(raw.get("datasets", [])))
    if not datasets:
        raise WorldprobeError("a study needs at least one [[datasets]] entry", file=path, field="datasets")
    study_obj = Study(
        name=str(head.get("name", path.stem)),
        path=path,
        seed=int(head.get("seed", DEFAULT_SEED)),
        description=str(head.get("description", "")),
        executor=_executor_name(head.get("executor", "serial"), path),
        workers=_workers(head.get("workers"), path),
        datasets=datasets,
        extract=_section(ExtractSettings, raw.get("extract", {}), path, "extract"),
        probes=_section(ProbeSettings, raw.get("probes", {}), path, "probes"),
        neurons=_section(NeuronSettings, raw.get("neurons", {}), path, "neurons"),
    )
    _check_names(study_obj)
    return study_obj


def _executor_name(value: Any, path: Path) -> str:
    if value not in EXECUTORS:
        raise WorldprobeError(f"unknown executor {value!r}", file=path, field="study.executor",
                              hint=f"one of {', '.join(EXECUTORS)}")  # fmt: skip
    return str(value)


def _workers(value: Any, path: Path) -> int | None:
    """``[study] workers``: a positive whole number, capped at this machine's CPU count (None when absent)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorldprobeError(f"study.workers must be a positive whole number, not {value!r}", file=path,
                              field="study.workers")  # fmt: skip
    return min(value, os.cpu_count() or 1)


def _check_keys(table: dict[str, Any], allowed: set[str], path: Path, section: str) -> None:
    if not isinstance(table, dict):
        raise WorldprobeError(f"[{section}] must be a table", file=path, field=section)
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            where = f"{section}.{key}" if section else key
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(allowed))}"
            raise WorldprobeError(f"unknown key {where!r}", file=path, field=where, hint=hint)


def _section(cls: type, table: dict[str, Any], path: Path, section: str) -> Any:
    names = {f.name for f in fields(cls)}
    _check_keys(table, names, path, section)
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in table.items()}
    return cls(**values)


def _dataset_entry(item: dict[str, Any], path: Path, index: int) -> DatasetEntry:
    section = f"datasets[{index}]"
    _check_keys(item, {f.name for f in fields(DatasetEntry)}, path, section)
    if "name" not in item:
        raise WorldprobeError("dataset entry without a name", file=path, field=f"{section}.name")
    if item["name"] not in DATASETS:
        raise WorldprobeError(
            f"unknown dataset {item['name']!r}", file=path, field=f"{section}.name",
            hint=f"known datasets: {', '.join(DATASETS)}",
        )  # fmt: skip
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in item.items()}
    return DatasetEntry(**values)


def _check_names(study: Study) -> None:
    from worldprobe.datasets.sources import SOURCE_MODULES

    for entry in study.datasets:
        spec = get_spec(entry.name)
        if entry.source not in SOURCE_MODULES:
            raise WorldprobeError(
                f"unknown source {entry.source!r} for {entry.name}", file=study.path, field="datasets.source",
                hint=f"sources: {', '.join(SOURCE_MODULES)}",
            )  # fmt: skip
        for prompt in entry.prompts:
            if prompt not in spec.prompts:
                raise WorldprobeError(
                    f"dataset {entry.name!r} has no prompt {prompt!r}", file=study.path, field="datasets.prompts",
                    hint=f"its prompts: {', '.join(spec.prompts)}",
                )  # fmt: skip
    for model in study.all_models:
        check_model_name(model, origin=study.path)
    for key in ("shards", "random_init_seeds"):
        value = getattr(study.extract, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise WorldprobeError(
                f"extract.{key} must be a positive whole number, not {value!r}", file=study.path, field=f"extract.{key}"
            )
    for model in study.all_models:
        quantization = study.extract.quantization_of(model)
        if quantization not in (None, "4bit", "8bit"):
            raise WorldprobeError(
                f"unknown quantization {quantization!r} for {model}", file=study.path, field="extract.quantization",
                hint="4bit, 8bit or leave it out",
            )  # fmt: skip
    known = {entry.name for entry in study.datasets}
    for name in study.neurons.datasets:
        if name not in known:
            raise WorldprobeError(
                f"neurons.datasets names {name!r}, which the study does not build", file=study.path,
                field="neurons.datasets",
            )  # fmt: skip


def check_model_name(model: str, *, origin: Path | None = None) -> None:
    """A preset, ``random:<preset>``, a local folder or .gguf file, or a hub id ``org/name``; else a clear error."""
    from worldprobe.extract.models import PRESETS, RANDOM_PREFIX, looks_like_hub_id

    name = model.removeprefix(RANDOM_PREFIX)
    path = Path(name).expanduser()
    if name in PRESETS or path.is_dir() or (path.suffix == ".gguf" and path.exists()) or looks_like_hub_id(name):
        return
    raise WorldprobeError(
        f"model {model!r} is neither a preset, a folder, a .gguf file nor a hub id", file=origin, field="models",
        hint=f"presets: {', '.join(PRESETS)}; or random:<preset>",
    )  # fmt: skip


def model_shape(model: str) -> tuple[int, int]:
    """(number of blocks, residual width) of a model without loading weights: from its preset, else its config."""
    from worldprobe.extract.models import PRESETS, RANDOM_PREFIX, describe_model

    name = model.removeprefix(RANDOM_PREFIX)
    if name in PRESETS:  # no GGUF fetch for a dry run
        return PRESETS[name].n_layers, PRESETS[name].d_model
    info = describe_model(name)
    return info.n_layers, info.d_model


# ---------------------------------------------------------------- planning


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
    units["report"].append(Unit("report", "index.html", {}))
    return units


def _cache_label(params: dict[str, Any]) -> str:
    """``dataset x model x prompt`` (and ``seed N`` for a random-init twin): how the run and the disk estimate name
    one activation cache."""
    label = f"{params['dataset']} x {params['model']} x {params['prompt']}"
    return label + (f" seed {params['seed']}" if params["model"].startswith("random:") else "")


def _shard_units(label: str, params: dict[str, Any], shards: int) -> list[Unit]:
    """One extract unit per cache, or one per shard of it (the shard that finishes last completes the cache)."""
    if shards == 1:
        return [Unit("extract", label, params)]
    return [
        Unit("extract", f"{label} [shard {i + 1}/{shards}]", {**params, "shard": (i, shards)}) for i in range(shards)
    ]


# ---------------------------------------------------------------- executors


class SerialExecutor:
    """Runs units one after another in this process."""

    name = "serial"

    def map(self, fn: Callable[[Unit], Any], units: Sequence[Unit], progress: Callable[[], None]) -> list[Any]:
        results = []
        for unit in units:
            results.append(fn(unit))
            progress()
        return results


class ProcessExecutor:
    """Runs units in a pool of local worker processes, one torch thread each: on a small CPU two processes finish
    the many small forward passes and ridge fits of a study sooner than one process with two threads. Results come
    back in the order of the units; a unit's exception ends the stage (the finished units stay done on disk)."""

    name = "processes"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise WorldprobeError(f"--workers must be at least 1, not {workers}", field="workers")
        self.workers = workers

    def map(self, fn: Callable[[Unit], Any], units: Sequence[Unit], progress: Callable[[], None]) -> list[Any]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        if self.workers == 1 or len(units) == 1:
            return SerialExecutor().map(fn, units, progress)
        context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
        results: list[Any] = [None] * len(units)
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_one_thread) as pool:
            futures = {pool.submit(fn, unit): i for i, unit in enumerate(units)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                progress()
        return results


def _one_thread() -> None:
    """Worker start-up: one torch (and BLAS) thread per process."""
    import torch

    torch.set_num_threads(1)


def make_executor(name: str, *, address: str | None = None, num_workers: int | None = None) -> Any:
    """``serial`` (default), ``processes`` (a local pool of ``num_workers`` processes, default the CPU count) or
    ``ray`` (optional extra: ``pip install worldprobe[ray]``)."""
    if name == "serial":
        return SerialExecutor()
    if name == "processes":
        return ProcessExecutor(num_workers or os.cpu_count() or 1)
    if name == "ray":
        from worldprobe.ray_executor import RayExecutor

        return RayExecutor(address=address, num_workers=num_workers)
    raise WorldprobeError(f"unknown executor {name!r}", hint="executors: serial, processes, ray")


# ---------------------------------------------------------------- disk estimate


@dataclass(frozen=True)
class CacheEstimate:
    label: str
    n_entities: int | None
    n_layers: int
    d_model: int

    @property
    def bytes(self) -> int | None:
        """float16 storage of every layer (embeddings + blocks) at one token per entity."""
        if self.n_entities is None:
            return None
        return self.n_entities * (self.n_layers + 1) * self.d_model * 2


def estimate_disk(study: Study, workspace: Workspace) -> list[CacheEstimate]:
    """Activation bytes per cache, from the model's architecture and the number of entities."""
    estimates = []
    sources = {entry.name: entry.source for entry in study.datasets}
    for unit in plan(study)["extract"]:
        if unit.params.get("shard", (0, 1))[0] > 0:
            continue  # the shards of a cache share its files
        n_layers, d_model = model_shape(unit.params["model"])
        dataset = unit.params["dataset"]
        n = _expected_entities(dataset, sources[dataset], unit.params["limit"], workspace)
        estimates.append(CacheEstimate(_cache_label(unit.params), n, n_layers, d_model))
    return estimates


def _expected_entities(dataset: str, source: str, limit: int | None, workspace: Workspace) -> int | None:
    """Entities a cache will hold: the built table's rows, else the release's size for the paper source, else limit."""
    path = workspace.dataset_table(dataset)
    if path.exists():
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(path).metadata.num_rows
    elif source == "paper":
        from worldprobe.datasets.sources.paper import RELEASE_ROWS

        rows = RELEASE_ROWS[dataset]
    else:
        return limit
    return min(rows, limit) if limit else rows


def check_disk(estimates: Iterable[CacheEstimate], workspace: Workspace) -> tuple[int, int]:
    """(bytes needed, bytes free); raises when the caches will not fit."""
    needed = sum(e.bytes or 0 for e in estimates)
    free = shutil.disk_usage(workspace.root if workspace.root.exists() else Path.cwd()).free
    if needed > free:
        raise WorldprobeError(
            f"the activation caches need {needed / 1e9:.1f} GB but only {free / 1e9:.1f} GB are free",
            file=workspace.root, hint="free disk space, lower the datasets' limit, or pick fewer layers",
        )  # fmt: skip
    return needed, free


# ---------------------------------------------------------------- running


def run_unit(unit: Unit, study: Study, workspace: Workspace) -> Any:
    """Carry out one unit (module-level so that Ray can ship it to a worker)."""
    p = unit.params
    if unit.stage == "datasets":
        return _build_dataset(p["entry"], p["seed"], workspace)
    if unit.stage == "extract":
        from worldprobe.extract.runner import run_extraction

        x = study.extract
        return run_extraction(
            p["dataset"], p["model"], p["prompt"], workspace=workspace, layers=x.layers, batch_size=x.batch_size,
            dtype=x.dtype, device=x.device, quantization=x.quantization_of(p["model"]), seed=p["seed"],
            shard=p.get("shard"), **({"flush_rows": x.flush_rows} if x.flush_rows else {}),
        )  # fmt: skip
    if unit.stage == "probes":
        from worldprobe.probes import run_probe

        holdouts = get_spec(p["dataset"]).holdout_columns if study.probes.holdouts else ()
        return run_probe(
            p["dataset"], p["model"], p["prompt"], workspace=workspace, probe=p["probe"], holdouts=holdouts,
            controls=study.controls_for(p["model"]), standardize=study.probes.standardize, seed=study.seed,
            random_init_seeds=study.extract.random_init_seeds,
        )  # fmt: skip
    if unit.stage == "neurons":
        from worldprobe.probes.neurons import find_neurons

        x = study.extract
        return find_neurons(
            p["dataset"], p["model"], workspace=workspace, top_k=study.neurons.top_k, layers=x.layers,
            seed=study.seed, batch_size=x.batch_size, dtype=x.dtype, device=x.device,
        )  # fmt: skip
    if unit.stage == "report":
        return _build_report(workspace, study.seed)
    raise ValueError(f"unknown stage {unit.stage!r}")


def _build_report(workspace: Workspace, seed: int) -> Path:
    """Write the report unless it was already written from exactly these results (same files, sizes and times)."""
    import hashlib
    import json

    from worldprobe.reports import build_report

    files = sorted(p for p in workspace.results.rglob("*") if p.is_file())
    listing = [(str(p.relative_to(workspace.results)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    inputs = hashlib.sha256(json.dumps([listing, seed]).encode()).hexdigest()
    stamp = workspace.reports / "built-from.json"
    index = workspace.reports / "index.html"
    if index.exists() and stamp.exists() and json.loads(stamp.read_text()).get("results_sha256") == inputs:
        return index
    index = build_report(workspace, seed=seed).index
    stamp.write_text(json.dumps({"results_sha256": inputs, "seed": seed}))
    return index


def _build_dataset(entry: DatasetEntry, seed: int, workspace: Workspace) -> Path:
    """Build a dataset unless the workspace already holds one built from the same source and options."""
    from worldprobe.datasets import load_report
    from worldprobe.datasets.sources import BuildOptions, build

    options = BuildOptions(from_path=entry.from_path, seed=seed, limit=entry.limit)
    path = workspace.dataset_table(entry.name)
    if path.exists() and workspace.dataset_report(entry.name).exists():
        report = load_report(entry.name, workspace)
        built_with = report.get("details", {}).get("options", {})
        wanted = {"from_path": entry.from_path, "seed": seed, "limit": entry.limit}
        if report.get("source") == entry.source and all(built_with.get(k) == v for k, v in wanted.items()):
            return path
    return build(entry.name, entry.source, options, workspace)[0]


def run_study(
    study: Study,
    workspace: Workspace,
    *,
    executor: Any | None = None,
    stages: Sequence[str] = STAGES,
    echo: Callable[[str], None] = print,
) -> dict[str, list[Any]]:
    """Run the study's stages in order with one progress bar per stage; return each stage's results."""
    from tqdm.auto import tqdm

    executor = executor or SerialExecutor()
    work = plan(study)
    outputs: dict[str, list[Any]] = {}
    for stage in STAGES:
        if stage not in stages or not work[stage]:
            continue
        if stage == "extract" and not isinstance(executor, SerialExecutor):
            prepare_models(study, echo)  # fetch and convert each model once, before workers load it at once
        with tqdm(total=len(work[stage]), desc=f"{stage:>8}", unit="task") as bar:
            outputs[stage] = executor.map(_bound(study, workspace), work[stage], progress=lambda: bar.update(1))
        if stage == "extract":
            from worldprobe.extract.models import release_kept_model

            release_kept_model()  # the last extracted model is not needed by the probes
    return outputs


def prepare_models(study: Study, echo: Callable[[str], None] = print) -> None:
    """Fetch and convert (e.g. dequantise a GGUF) every model of the study once in this process, so that parallel
    workers find the files ready instead of writing them at the same time."""
    from worldprobe.extract.models import load_model_kept, release_kept_model

    x = study.extract
    for model in dict.fromkeys(m.removeprefix("random:") for m in study.all_models):
        load_model_kept(model, dtype=x.dtype, device=x.device, quantization=x.quantization_of(model))
        release_kept_model()


@dataclass(frozen=True)
class _bound:
    """``run_unit`` with the study and workspace bound (picklable, unlike a lambda)."""

    study: Study
    workspace: Workspace

    def __call__(self, unit: Unit) -> Any:
        return run_unit(unit, self.study, self.workspace)


def results_table(study: Study, workspace: Workspace) -> str:
    """The verdict table and sentences of the study's datasets (current builds only), as plain text for the end of
    a run."""
    from worldprobe.reports.results import load_results
    from worldprobe.reports.summary import as_text

    results = load_results(workspace.results, workspace.datasets)
    names = {entry.name for entry in study.datasets}
    text = as_text([s for s in results.summaries if s.get("dataset") in names])
    if results.stale:
        text += f"\n{len(results.stale)} stale run(s) left out (another dataset build): see the report"
    return text
