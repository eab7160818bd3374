"""``run_study``: a study's stages in order, each unit skipped when its work is done, the rest on an executor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from worldprobe.config import RANDOM_PREFIX
from worldprobe.study.executors import SerialExecutor
from worldprobe.study.plan import STAGES, Unit, plan
from worldprobe.study.runners import run_unit
from worldprobe.study.settings import Study
from worldprobe.workspace import Workspace


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
