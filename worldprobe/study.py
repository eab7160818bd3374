"""A whole study from one TOML file: datasets x models x prompts -> activations -> probes + controls -> report.

``load_study`` parses and checks a study file before any work starts (unknown keys, datasets, prompts, models);
``plan`` lists the work units of every stage; ``run_study`` runs them stage by stage through an executor (serial
or Ray), skipping what is already done for the same inputs (each stage's own functions skip finished work).
"""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from worldprobe.checks import SEED_MAX, Invalid, Rule, check_table, closest
from worldprobe.config import (
    DEFAULT_MARGINS,
    DEFAULT_MODEL,
    DEFAULT_PROMPT,
    DEFAULT_SEED,
    DEFAULT_TOP_K,
    RANDOM_INIT_SEEDS,
    RANDOM_PREFIX,
    STEER_DOSES,
    STEER_MAP_RANDOM,
    STEER_METHODS,
    STEER_SELECT,
)
from worldprobe.datasets.registry import DATASETS, get_spec
from worldprobe.errors import WorldprobeError
from worldprobe.interventions.options import (
    ASK_ARGUMENTS,
    CONTEXT_ARGUMENTS,
    DAS_RULES,
    STEER_ARGUMENTS,
    DasSettings,
)
from worldprobe.workspace import Workspace

STAGES = ("datasets", "extract", "probes", "neurons", "ask", "steer", "context", "report")
EXECUTORS = ("serial", "processes", "ray")


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a study: where to build it from, how many entities, which prompts."""

    name: str
    source: str = "packaged"
    limit: int | None = None
    from_path: str | None = None
    prompts: tuple[str, ...] = (DEFAULT_PROMPT,)


@dataclass(frozen=True)
class ExtractSettings:
    models: tuple[str, ...] = (DEFAULT_MODEL,)
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
            return self.quantization.get(model.removeprefix(RANDOM_PREFIX))
        return self.quantization

    flush_rows: int | None = None  # rows between ledger commits (None: the extract stage's default)
    shards: int = 1  # tasks per cache, each writing its share of the batches into the same files
    random_init_seeds: int = RANDOM_INIT_SEEDS  # random-weight twins per model (seeds seed, seed + 1, ...)


@dataclass(frozen=True)
class ProbeSettings:
    probes: tuple[str, ...] = ("ridge",)
    controls: tuple[str, ...] = ()
    holdouts: bool = True  # the dataset's hold-out columns (DatasetSpec.holdout_columns)
    standardize: bool | None = None  # None: the probe stage's measured default
    margin_r2: float = DEFAULT_MARGINS["r2"]  # equivalence margins of the verdicts (docs/verdicts.md)
    margin_r: float = DEFAULT_MARGINS["r"]
    resplits: int = 0  # re-drawn train/test splits that refit the probe and its label's controls


@dataclass(frozen=True)
class NeuronSettings:
    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    top_k: int = DEFAULT_TOP_K


@dataclass(frozen=True)
class AskSettings:
    """``[ask]``: ask each model (default: the study's first) its datasets' question (``worldprobe ask``)."""

    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    format: str = "auto"  # auto | chat | fewshot
    limit: int | None = None  # test entities asked (None: all)


@dataclass(frozen=True)
class SteerSettings:
    """``[steer]``: map which direction, layer and position move each model's answer on train entities and test the
    best one on test entities (``worldprobe steer``); the twin's direction is a control only for models whose
    random-init twin the study extracts."""

    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    format: str = "auto"
    limit: int = 50  # test entities
    select_limit: int = STEER_SELECT  # train entities of the map
    directions: tuple[str, ...] = STEER_METHODS
    layers: tuple[int, ...] = ()  # empty: every cached layer before the last block
    positions: tuple[str, ...] = ("last",)
    doses: tuple[float, ...] = STEER_DOSES
    random: int = 5  # random directions of the same norm at the chosen layer
    map_random: int = STEER_MAP_RANDOM  # random directions per layer in the map
    das_entities: int = DasSettings.entities  # train entities a "das" direction learns from
    das_steps: int = DasSettings.steps  # its training steps per layer


@dataclass(frozen=True)
class ContextSettings:
    """``[context]``: a false statement before the question; does the probe's reading and the answer follow it
    (``worldprobe context``)."""

    datasets: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    format: str = "auto"
    limit: int = 100  # test entities


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
    ask: AskSettings = field(default_factory=AskSettings)
    steer: SteerSettings = field(default_factory=SteerSettings)
    context: ContextSettings = field(default_factory=ContextSettings)

    @property
    def all_models(self) -> tuple[str, ...]:
        """The models to extract: the study's models and the random-init twins asked for."""
        return self.extract.models + tuple(f"{RANDOM_PREFIX}{m}" for m in self.extract.random_init)

    def seeds_of(self, model: str) -> tuple[int, ...]:
        """The extraction seeds of a model: the study's seed, and for a random-init twin one per twin seed."""
        if model.startswith(RANDOM_PREFIX):
            return tuple(self.seed + i for i in range(self.extract.random_init_seeds))
        return (self.seed,)

    def controls_for(self, model: str) -> tuple[str, ...]:
        """The controls of one model's probe runs: ``random_init`` only for the models whose twin the study extracts
        (otherwise the probe stage would extract an unplanned twin)."""
        return tuple(c for c in self.probes.controls if c != "random_init" or model in self.extract.random_init)


# ---------------------------------------------------------------- parsing


def shipped_study(name: str) -> Path:
    """Path of a study shipped with worldprobe (``quick``, ``ladder``, ``paper``)."""
    path = Path(str(resources.files("worldprobe") / "studies" / f"{name}.toml"))
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.toml"))
        if name.lower() in ("true", "false", "yes", "no", "1", "0"):
            raise WorldprobeError(
                f"no shipped study {name!r}",
                hint="on/off options are flags without a value: `worldprobe run --dry-run`",
            )
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
    """Parse and check a study file completely (every key's type and range, names of datasets, sources, prompts,
    models, probes and controls, and how the sections fit together) before any work starts; the first mistake is
    a :class:`WorldprobeError` naming the file and the key, e.g. ``datasets[2].limit``."""
    path = resolve_study_path(study)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise WorldprobeError(f"not valid TOML: {error}", file=path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise WorldprobeError(f"cannot read the study file: {error}", file=path) from None
    tables = {"study": HEAD_RULES, "datasets": DATASET_RULES, **{name: rules for name, (_, rules) in SECTIONS.items()}}
    for key in raw:
        if key not in tables:
            home = [name for name, rules in tables.items() if key in rules]
            hint = f"put it under [{home[0]}]" if home else closest(key, list(tables))
            raise WorldprobeError(f"unknown key or section {key!r}", file=path, field=key, hint=hint)
    head = check_table(raw.get("study", {}), HEAD_RULES, file=path, section="study")
    study_obj = Study(
        name=head.get("name", path.stem),
        path=path,
        seed=head.get("seed", DEFAULT_SEED),
        description=head.get("description", ""),
        executor=head.get("executor", "serial"),
        workers=min(head["workers"], os.cpu_count() or 1) if "workers" in head else None,  # capped at the CPUs
        datasets=_dataset_entries(raw.get("datasets"), path),
        **{name: cls(**check_table(raw.get(name, {}), rules, file=path, section=name))
           for name, (cls, rules) in SECTIONS.items()},
    )  # fmt: skip
    _check_across(study_obj)
    return _expand_all_controls(study_obj)


def _expand_all_controls(study: Study) -> Study:
    """``controls = ["all"]``: every control, ``random_init`` only when the study extracts a twin (else the probe
    stage would extract twins the plan does not list)."""
    if "all" not in study.probes.controls:
        return study
    from worldprobe.probes.results import CONTROLS

    chosen = tuple(c for c in CONTROLS if c != "random_init" or study.extract.random_init)
    return replace(study, probes=replace(study.probes, controls=chosen))


def _dataset_entries(items: Any, path: Path) -> tuple[DatasetEntry, ...]:
    if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
        raise WorldprobeError(
            "a study needs one [[datasets]] table per dataset", file=path, field="datasets",
            hint='[[datasets]] (two brackets) then name = "world_place", for each dataset',
        )  # fmt: skip
    entries = []
    for i, item in enumerate(items):
        section = f"datasets[{i}]"
        checked = check_table(item, DATASET_RULES, file=path, section=section, required=("name",),
                              elsewhere={name: rules for name, (_, rules) in SECTIONS.items()})  # fmt: skip
        entry = DatasetEntry(**checked)
        spec = get_spec(entry.name)
        if entry.name in [e.name for e in entries]:
            raise WorldprobeError(
                f"dataset {entry.name!r} is listed twice (both entries would write the same table)", file=path,
                field=f"{section}.name", hint="one [[datasets]] entry per dataset; list its prompts in `prompts`",
            )  # fmt: skip
        _check_build_options(entry, path, section)
        for prompt in entry.prompts:
            if prompt not in spec.prompts:
                raise WorldprobeError(
                    f"dataset {entry.name!r} has no prompt {prompt!r}", file=path, field=f"{section}.prompts",
                    hint=f"its prompts: {', '.join(spec.prompts)}",
                )  # fmt: skip
        entries.append(entry)
    return tuple(entries)


def _check_build_options(entry: DatasetEntry, path: Path, section: str) -> None:
    """from_path only where the entry's source reads a file (elsewhere it would be ignored)."""
    from worldprobe.datasets.builder import BuildOptions, check_options

    try:
        check_options(entry.name, entry.source, BuildOptions(from_path=entry.from_path))
    except WorldprobeError as error:
        raise WorldprobeError(error.message, file=path, field=f"{section}.from_path", hint=error.hint) from None


def _check_across(study: Study) -> None:
    """The checks that involve more than one key: models named in several places, the layers of preset models,
    the random-init twins and their control, the per-model quantisation, the neurons' datasets."""
    x, path = study.extract, study.path
    for name in x.random_init:
        if name not in x.models:
            raise WorldprobeError(
                f"{name!r} is not in extract.models: its twin would be extracted but no probe run uses it",
                file=path, field="extract.random_init", hint="add it to extract.models, or remove it here",
            )  # fmt: skip
    if "random_init" in study.probes.controls and not x.random_init:
        raise WorldprobeError(
            "the random_init control needs a random-init twin, but extract.random_init is empty", file=path,
            field="probes.controls", hint='list the models in extract.random_init, e.g. random_init = ["smollm2-135m"]',
        )  # fmt: skip
    if isinstance(x.quantization, dict):
        for name in x.quantization:
            if name not in x.models:
                raise WorldprobeError(
                    f"quantization names {name!r}, which is not in extract.models", file=path,
                    field="extract.quantization", hint=f"models: {', '.join(x.models)}",
                )  # fmt: skip
    _check_layers(study)
    known = {entry.name for entry in study.datasets}
    for section in ("neurons", "ask", "steer", "context"):
        for name in getattr(study, section).datasets:
            if name not in known:
                raise WorldprobeError(
                    f"{section}.datasets names {name!r}, which the study does not build", file=path,
                    field=f"{section}.datasets", hint=f"the study's datasets: {', '.join(sorted(known))}",
                )  # fmt: skip
    _check_steer(study)
    for section in ("ask", "steer", "context"):
        for model in getattr(study, section).models:
            if model not in x.models:
                raise WorldprobeError(
                    f"{section}.models names {model!r}, which the study does not extract", file=path,
                    field=f"{section}.models", hint=f"extract.models: {', '.join(x.models)}",
                )  # fmt: skip


def _check_steer(study: Study) -> None:
    """The [steer] doses (each with its negative), directions and layers (before the last block of every steered
    preset model), checked as ``worldprobe steer`` would, before any work."""
    from worldprobe.extract.models import PRESETS
    from worldprobe.interventions.options import checked_doses, checked_methods

    st = study.steer
    for key, check in (("doses", lambda: checked_doses(st.doses)), ("directions", lambda: checked_methods(
            [str(Path(m).expanduser()) if m.endswith(".npy") else m for m in st.directions]))):  # fmt: skip
        try:
            check()
        except WorldprobeError as error:
            raise WorldprobeError(error.message, file=study.path, field=f"steer.{key}", hint=error.hint) from None
    for model in st.models or study.extract.models[:1]:
        preset = PRESETS.get(model)
        late = [v for v in st.layers if preset is not None and v >= preset.n_layers]
        if late and st.datasets:
            raise WorldprobeError(
                f"steer.layers {late} are not before the last block of {model} ({preset.n_layers} blocks)",
                file=study.path, field="steer.layers", hint=f"layers 0..{preset.n_layers - 1}",
            )  # fmt: skip


def _check_layers(study: Study) -> None:
    """extract.layers within the blocks of every preset model of the study (other models: in :func:`estimate_disk`,
    which reads their configs)."""
    from worldprobe.extract.models import PRESETS

    for model in (*study.all_models, *study.neurons.models):
        preset = PRESETS.get(model.removeprefix(RANDOM_PREFIX))
        if preset is not None:
            _check_layers_of(study, model, preset.n_layers)


def _check_layers_of(study: Study, model: str, n_layers: int) -> None:
    from worldprobe.extract.cache import parse_layers

    try:
        parse_layers(study.extract.layers, n_layers)
    except WorldprobeError as error:
        raise WorldprobeError(
            f"{error.message} for {model}", file=study.path, field="extract.layers", hint=error.hint
        ) from None


def _model_problem(model: str) -> str | None:
    from worldprobe.extract.models import PRESETS, looks_like_hub_id, unknown_model

    name = model.removeprefix(RANDOM_PREFIX)
    path = Path(name).expanduser()
    if name in PRESETS or path.is_dir() or (path.suffix == ".gguf" and path.exists()) or looks_like_hub_id(name):
        return None
    error = unknown_model(model)
    raise Invalid(error.message, hint=error.hint)


def _layers_problem(layers: str) -> str | None:
    from worldprobe.extract.cache import parse_layers

    try:
        parse_layers(layers, 10**6)  # the form only: the range is checked per model
    except WorldprobeError as error:
        return error.message
    return None


def _device_problem(device: str) -> str | None:
    from worldprobe.devices import check_device_name

    try:
        check_device_name(device)
    except WorldprobeError as error:
        return error.message
    return None


def _quantization_problem(value: str | dict[str, Any]) -> str | None:
    for model, chosen in value.items() if isinstance(value, dict) else [(None, value)]:
        if chosen not in ("4bit", "8bit"):
            return f"unknown quantization {chosen!r}" + (f" for {model}" if model else "")
    return None


def _path_problem(path: str) -> str | None:
    if "://" in path or Path(path).expanduser().exists():
        return None
    return f"file not found: {path} (read from the folder worldprobe runs in, {Path.cwd()})"


def _sources() -> tuple[str, ...]:
    from worldprobe.datasets.builder import SOURCE_MODULES

    return tuple(SOURCE_MODULES)


def _probes() -> tuple[str, ...]:
    from worldprobe.probes.experiments import PROBES

    return PROBES


def _controls() -> tuple[str, ...]:
    from worldprobe.probes.results import CONTROLS

    return ("all", *CONTROLS)


def _dtypes() -> tuple[str, ...]:
    from worldprobe.devices import DTYPE_CHOICES

    return DTYPE_CHOICES


# One table per section: key -> how it is checked (worldprobe.checks.Rule). Every field of a section's dataclass has
# a rule (tests/test_study.py checks it); a new key is a field plus one line here.
HEAD_RULES = {
    "name": Rule(str),
    "seed": Rule(int, minimum=0, maximum=SEED_MAX, example="seed = 0"),
    "description": Rule(str),
    "executor": Rule(str, choices=EXECUTORS, noun="executor"),
    "workers": Rule(int, minimum=1, example="workers = 2"),
}
DATASET_RULES = {
    "name": Rule(str, choices=DATASETS, noun="dataset"),
    "source": Rule(str, choices=_sources, noun="source"),
    "limit": Rule(int, minimum=1, example="limit = 500"),
    "from_path": Rule(str, extra=_path_problem, example='from_path = "data/world_place.csv" or a URL'),
    "prompts": Rule(str, many=True, nonempty=True, example='prompts = ["empty", "coords"]'),
}
EXTRACT_RULES = {
    "models": Rule(str, many=True, nonempty=True, extra=_model_problem, example='models = ["smollm2-135m"]'),
    "random_init": Rule(str, many=True, extra=_model_problem, example='random_init = ["smollm2-135m"]'),
    "layers": Rule(str, extra=_layers_problem, example='layers = "all", "0,5,10" or "12:20"'),
    "dtype": Rule(str, choices=_dtypes, noun="dtype"),
    "device": Rule(str, extra=_device_problem, example='device = "auto", "cpu", "cuda", "cuda:1" or "mps"'),
    "batch_size": Rule(int, minimum=1, example="batch_size = 32"),
    "quantization": Rule((str, dict), extra=_quantization_problem,
                         example='quantization = "8bit", or per model { "llama-2-70b" = "8bit" }'),
    "flush_rows": Rule(int, minimum=1, example="flush_rows = 2048"),
    "shards": Rule(int, minimum=1, example="shards = 2"),
    "random_init_seeds": Rule(int, minimum=1, example="random_init_seeds = 3"),
}  # fmt: skip
PROBE_RULES = {
    "probes": Rule(str, many=True, nonempty=True, choices=_probes, noun="probe"),
    "controls": Rule(str, many=True, choices=_controls, noun="control"),
    "holdouts": Rule(bool, example="holdouts = true (each dataset's hold-out columns, e.g. country for world_place)"),
    "standardize": Rule(bool, example="standardize = true"),
    "margin_r2": Rule(float, minimum=0.001, maximum=0.999, example="margin_r2 = 0.05"),
    "margin_r": Rule(float, minimum=0.001, maximum=0.999, example="margin_r = 0.05"),
    "resplits": Rule(int, minimum=0, example="resplits = 5"),
}
NEURON_RULES = {
    "datasets": Rule(str, many=True, choices=DATASETS, noun="dataset"),
    "models": Rule(str, many=True, extra=_model_problem, example='models = ["smollm2-135m"]'),
    "top_k": Rule(int, minimum=1, example="top_k = 10"),
}
ASK_RULES = {
    "datasets": Rule(str, many=True, choices=DATASETS, noun="dataset"),
    "models": Rule(str, many=True, extra=_model_problem, example='models = ["smollm2-135m"]'),
    "format": ASK_ARGUMENTS["fmt"],  # the API's own rules (interventions.options): one rule, one message
    "limit": ASK_ARGUMENTS["limit"],
}
STEER_RULES = {
    **{key: ASK_RULES[key] for key in ("datasets", "models")}, "format": STEER_ARGUMENTS["fmt"],
    **{key: STEER_ARGUMENTS[key] for key in ("limit", "select_limit", "directions", "layers", "positions", "doses",
                                      "map_random")},
    "random": STEER_ARGUMENTS["random_directions"],
    "das_entities": DAS_RULES["entities"], "das_steps": DAS_RULES["steps"],
}  # fmt: skip
CONTEXT_RULES = {
    **{key: ASK_RULES[key] for key in ("datasets", "models")}, "format": CONTEXT_ARGUMENTS["fmt"],
    "limit": CONTEXT_ARGUMENTS["limit"],
}
SECTIONS: dict[str, tuple[type, dict[str, Rule]]] = {
    "extract": (ExtractSettings, EXTRACT_RULES),
    "probes": (ProbeSettings, PROBE_RULES),
    "neurons": (NeuronSettings, NEURON_RULES),
    "ask": (AskSettings, ASK_RULES),
    "steer": (SteerSettings, STEER_RULES),
    "context": (ContextSettings, CONTEXT_RULES),
}
"""The settings sections after [study] and [[datasets]]: name -> (dataclass, rules); a Study field each."""


def model_shape(model: str) -> tuple[int, int]:
    """(number of blocks, residual width) of a model without loading weights: from its preset, else its config."""
    from worldprobe.extract.models import PRESETS, describe_model

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
        from concurrent.futures.process import BrokenProcessPool

        if self.workers == 1 or len(units) == 1:
            return SerialExecutor().map(fn, units, progress)
        context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
        results: list[Any] = [None] * len(units)
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_one_thread) as pool:
            futures = {pool.submit(fn, unit): i for i, unit in enumerate(units)}
            for future in as_completed(futures):
                try:
                    results[futures[future]] = future.result()
                except BrokenProcessPool:
                    raise WorldprobeError(
                        f"a worker process ended abruptly during {units[futures[future]].stage} (killed, or out of "
                        "memory: see `dmesg`)", hint="the finished work is kept; the same command resumes it (with "
                        "fewer --workers if memory ran out)") from None  # fmt: skip
                progress()
        return results


def _one_thread() -> None:
    """Worker start-up: one torch, OpenMP and BLAS thread per process (numpy's OpenBLAS otherwise starts one per
    core: two probe runs side by side took 29 s each instead of 19 s)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


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
    _check_layers_of(study, model, n_layers)
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
            pooled_embedding="embedding" in study.controls_for(p["model"]),
        )  # fmt: skip
    if unit.stage == "probes":
        from worldprobe.probes import run_probe

        holdouts = get_spec(p["dataset"]).holdout_columns if study.probes.holdouts else ()
        if "embedding" in study.controls_for(p["model"]):
            _ensure_pooled(study, workspace, p)
        return run_probe(
            p["dataset"], p["model"], p["prompt"], workspace=workspace, probe=p["probe"], holdouts=holdouts,
            controls=study.controls_for(p["model"]), standardize=study.probes.standardize, seed=study.seed,
            random_init_seeds=study.extract.random_init_seeds, prefer_dtype=study.extract.dtype,
            device=study.extract.device, margin_r2=study.probes.margin_r2, margin_r=study.probes.margin_r,
            resplits=study.probes.resplits,
        )  # fmt: skip
    if unit.stage == "neurons":
        from worldprobe.neurons.search import find_neurons

        x = study.extract
        return find_neurons(
            p["dataset"], p["model"], workspace=workspace, top_k=study.neurons.top_k, layers=x.layers,
            seed=study.seed, batch_size=x.batch_size, dtype=x.dtype, device=x.device,
        )  # fmt: skip
    if unit.stage == "ask":
        from worldprobe.interventions import run_ask

        x, a = study.extract, study.ask
        return run_ask(
            p["dataset"], p["model"], prompt=p["prompt"], workspace=workspace, fmt=a.format, limit=a.limit,
            batch_size=x.batch_size, dtype=x.dtype, device=x.device, quantization=x.quantization_of(p["model"]),
            seed=study.seed,
        )  # fmt: skip
    if unit.stage == "steer":
        from worldprobe.interventions import run_steer

        x, st = study.extract, study.steer
        return run_steer(
            p["dataset"], p["model"], prompt=p["prompt"], workspace=workspace, fmt=st.format, limit=st.limit,
            select_limit=st.select_limit, directions=st.directions, layers=st.layers or None,
            positions=st.positions, doses=st.doses, random_directions=st.random, map_random=st.map_random,
            random_init=p["model"] in x.random_init, batch_size=x.batch_size, dtype=x.dtype, device=x.device,
            quantization=x.quantization_of(p["model"]), seed=study.seed,
            das_settings=DasSettings(entities=st.das_entities, steps=st.das_steps),
        )  # fmt: skip
    if unit.stage == "context":
        from worldprobe.interventions import run_context

        x, c = study.extract, study.context
        return run_context(
            p["dataset"], p["model"], prompt=p["prompt"], workspace=workspace, fmt=c.format, limit=c.limit,
            batch_size=x.batch_size, dtype=x.dtype, device=x.device, quantization=x.quantization_of(p["model"]),
            seed=study.seed,
        )  # fmt: skip
    if unit.stage == "report":
        return _build_report(workspace, study.seed)
    raise ValueError(f"unknown stage {unit.stage!r}")


def _ensure_pooled(study: Study, workspace: Workspace, p: dict[str, Any]) -> None:
    """The pooled-embedding companion the embedding control reads: the extract stage writes it beside an unsharded
    cache; a sharded one (or a cache from before it existed) gets it here (one block's forward pass)."""
    from worldprobe.devices import cache_dtype
    from worldprobe.extract.cache import MissingCacheError, find_cache, find_pooled, read_manifest
    from worldprobe.extract.runner import extract_pooled

    x = study.extract
    manifest = read_manifest(find_cache(p["dataset"], p["model"], p["prompt"], workspace=workspace,
                                        prefer={"dtype": cache_dtype(x.dtype, x.device)}))  # fmt: skip
    try:
        find_pooled(manifest, workspace=workspace)
    except MissingCacheError:
        extract_pooled(manifest, workspace=workspace, batch_size=x.batch_size, device=x.device, progress=False)


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
    written = index.exists() and (workspace.reports / "verdicts.md").exists() and stamp.exists()
    if written and json.loads(stamp.read_text()).get("results_sha256") == inputs:
        return index
    index = build_report(workspace, seed=seed).index
    stamp.write_text(json.dumps({"results_sha256": inputs, "seed": seed}))
    return index


def _build_dataset(entry: DatasetEntry, seed: int, workspace: Workspace) -> Path:
    """Build a dataset unless the workspace already holds one built from the same source and options."""
    from worldprobe.datasets import load_report
    from worldprobe.datasets.builder import BuildOptions, build

    options = BuildOptions(from_path=entry.from_path, seed=seed, limit=entry.limit)
    path = workspace.dataset_table(entry.name)
    if path.exists() and workspace.dataset_report(entry.name).exists():
        report = load_report(entry.name, workspace)
        built_with = report.get("details", {}).get("options", {})
        wanted = {"from_path": entry.from_path, "seed": seed, "limit": entry.limit}
        same_options = report.get("source") == entry.source and all(built_with.get(k) == v for k, v in wanted.items())
        if same_options and _same_file(entry.from_path, report):
            return path
    return build(entry.name, entry.source, options, workspace)[0]


def _same_file(from_path: str | None, report: dict[str, Any]) -> bool:
    """Whether a local ``from_path`` still holds the bytes the table was built from (a sha256 its build report
    records); a URL or no file at all is left to the build's own checks."""
    from worldprobe.checksums import remembered_sha256

    file = Path(from_path).expanduser() if from_path and "://" not in from_path else None
    if file is None or not file.is_file():
        return True
    return remembered_sha256(file) in {entry.get("sha256") for entry in report.get("inputs", [])}


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
    for model in dict.fromkeys(m.removeprefix(RANDOM_PREFIX) for m in study.all_models):
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
    from worldprobe.reports.choice import report_results
    from worldprobe.reports.summary import as_text

    results = report_results(workspace.results, workspace.datasets)
    names = {entry.name for entry in study.datasets}
    text = as_text([s for s in results.summaries if s.get("dataset") in names])
    if results.stale:
        text += f"\n{len(results.stale)} stale run(s) left out (another dataset build): see the report"
    return text
