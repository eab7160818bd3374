"""A study file, parsed and checked: its sections as frozen settings, each key's rule declared once in a table.

``load_study`` checks a study file completely (unknown keys, types and ranges, datasets, sources, prompts, models,
and how the sections fit together) before any work starts.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from worldprobe.checks import SEED_MAX, WORKERS, Invalid, Rule, check_table, closest
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
from worldprobe.extract.options import BATCHING_RULES
from worldprobe.interventions.options import (
    ASK_ARGUMENTS,
    ASKING_RULES,
    CONTEXT_ARGUMENTS,
    DAS_RULES,
    STEER_ARGUMENTS,
    STEERING_RULES,
    DasSettings,
)
from worldprobe.probes.options import PROBE_OPTION_RULES

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

    def request(self, model: str, seed: int | None = None) -> Any:
        """The :class:`~worldprobe.extract.models.ModelRequest` of one of the study's models: ``[extract]``'s dtype,
        device and the model's quantization (a twin's ``seed``: None, the study's)."""
        from worldprobe.extract.options import ModelRequest

        x = self.extract
        return ModelRequest(model, dtype=x.dtype, device=x.device, quantization=x.quantization_of(model),
                            seed=self.seed if seed is None else seed)  # fmt: skip

    def controls_for(self, model: str) -> tuple[str, ...]:
        """The controls of one model's probe runs: ``random_init`` only for the models whose twin the study extracts
        (otherwise the probe stage would extract an unplanned twin)."""
        return tuple(c for c in self.probes.controls if c != "random_init" or model in self.extract.random_init)




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
            check_layers_of(study, model, preset.n_layers)


def check_layers_of(study: Study, model: str, n_layers: int) -> None:
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
    "workers": WORKERS,
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
    "batch_size": BATCHING_RULES["batch_size"],
    "quantization": Rule((str, dict), extra=_quantization_problem,
                         example='quantization = "8bit", or per model { "llama-2-70b" = "8bit" }'),
    "flush_rows": BATCHING_RULES["flush_rows"],
    "shards": Rule(int, minimum=1, example="shards = 2"),
    "random_init_seeds": PROBE_OPTION_RULES["random_init_seeds"],
}  # fmt: skip
PROBE_RULES = {
    "probes": Rule(str, many=True, nonempty=True, choices=_probes, noun="probe"),
    "controls": Rule(str, many=True, choices=_controls, noun="control"),
    "holdouts": Rule(bool, example="holdouts = true (each dataset's hold-out columns, e.g. country for world_place)"),
    **{key: PROBE_OPTION_RULES[key] for key in ("standardize", "margin_r2", "margin_r", "resplits")},
}
NEURON_RULES = {
    "datasets": Rule(str, many=True, choices=DATASETS, noun="dataset"),
    "models": Rule(str, many=True, extra=_model_problem, example='models = ["smollm2-135m"]'),
    "top_k": Rule(int, minimum=1, example="top_k = 10"),
}
ASK_RULES = {
    "datasets": Rule(str, many=True, choices=DATASETS, noun="dataset"),
    "models": Rule(str, many=True, extra=_model_problem, example='models = ["smollm2-135m"]'),
    "format": ASKING_RULES["format"],  # the API's own rules (interventions.options): one rule, one message
    "limit": ASK_ARGUMENTS["limit"],
}
STEER_RULES = {
    **{key: ASK_RULES[key] for key in ("datasets", "models")}, "format": ASKING_RULES["format"],
    "limit": STEER_ARGUMENTS["limit"],
    **{key: STEERING_RULES[key] for key in ("select_limit", "directions", "layers", "positions", "doses",
                                            "map_random")},
    "random": STEERING_RULES["random_directions"],
    "das_entities": DAS_RULES["entities"], "das_steps": DAS_RULES["steps"],
}  # fmt: skip
CONTEXT_RULES = {
    **{key: ASK_RULES[key] for key in ("datasets", "models")}, "format": ASKING_RULES["format"],
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
