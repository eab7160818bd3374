"""``run_study``: a study's stages in order, each unit skipped when its work is done, the rest on an executor."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from worldprobe.reuse import WorkNeeded, reuse_only
from worldprobe.study.executors import SerialExecutor
from worldprobe.study.plan import STAGES, TOGETHER, Unit, plan
from worldprobe.study.runners import run_unit
from worldprobe.study.settings import Study
from worldprobe.workspace import Workspace


def run_study(
    study: Study,
    workspace: Workspace,
    *,
    executor: Any | None = None,
    stages: Sequence[str] = STAGES,
) -> dict[str, list[Any]]:
    """Run the study's stages in order with one progress bar per stage; return each stage's results.

    Each unit is first asked here whether its work is done (:func:`worldprobe.reuse.reuse_only`: it returns its
    finished product, or says it would start working); only the others go to the executor, so a finished study
    re-runs without starting a worker or loading a model. The ``models`` units run beside ``datasets``; extraction
    runs each model's longest datasets first, so the stage does not end on one worker finishing a long cache."""
    from tqdm.auto import tqdm

    executor = executor or SerialExecutor()
    work = plan(study)
    for later, first in TOGETHER.items():
        if later in stages and first in stages:
            work[first], work[later] = work[later] + work[first], []  # its few long units first: no lone tail
    outputs: dict[str, list[Any]] = {}
    bound = _bound(study, workspace)
    try:
        for stage in STAGES:
            units = work[stage]
            if stage not in stages or not units:
                continue
            done = _finished(units, bound)
            pending = _longest_first([u for u in units if (u.stage, u.label) not in done], workspace)
            names = "/".join(dict.fromkeys(u.stage for u in units))
            with tqdm(total=len(units), initial=len(units) - len(pending), desc=f"{names:>8}", unit="task") as bar:
                results = executor.map(bound, pending, progress=lambda: bar.update(1))
            done.update({(u.stage, u.label): r for u, r in zip(pending, results, strict=True)})
            for unit in units:
                outputs.setdefault(unit.stage, []).append(done[(unit.stage, unit.label)])
    finally:
        executor.close()
    return outputs


def _finished(units: Sequence[Unit], bound: _bound) -> dict[tuple[str, str], Any]:
    """The units whose work is done, asked in this process: (stage, label) -> the product each returned."""
    done = {}
    with reuse_only():
        for unit in units:
            try:
                done[(unit.stage, unit.label)] = bound(unit)
            except WorkNeeded:
                continue
    return done


def _longest_first(units: list[Unit], workspace: Workspace) -> list[Unit]:
    """Extraction units in model order (a worker loads each model once), within a model the datasets with the most
    text first (rows x mean characters of the built table): a stage ends on short units, not one long one."""
    if not units or units[0].stage != "extract":
        return units
    models = list(dict.fromkeys(u.params["model"] for u in units))
    sizes = {name: _text_size(workspace, name) for name in dict.fromkeys(u.params["dataset"] for u in units)}
    return sorted(units, key=lambda u: (models.index(u.params["model"]), -sizes[u.params["dataset"]]))


def _text_size(workspace: Workspace, dataset: str) -> int:
    """Characters of entity text in a built dataset table (0 when it is not built)."""
    import pandas as pd

    path = workspace.dataset_table(dataset)
    if not path.exists():
        return 0
    return int(pd.read_parquet(path, columns=["text"])["text"].str.len().sum())


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
