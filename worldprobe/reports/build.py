"""Turn everything in ``results/`` into figures and one ``index.html``: the ``worldprobe report`` job."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from worldprobe.checks import FLAG, SEED, WORKERS, checked_arguments
from worldprobe.config import DEFAULT_SEED
from worldprobe.datasets.registry import load_user_specs
from worldprobe.datasets.table import checked_fingerprint
from worldprobe.probes.holdouts import SKIPPED
from worldprobe.probes.results import Results
from worldprobe.reports import curves, holdouts, maps, neurons, timelines
from worldprobe.reports.breakdown import breakdown_notes, breakdown_table, small_types_note
from worldprobe.reports.choice import chosen_runs, left_out_runs, primary_prompt, report_results
from worldprobe.reports.content import Block, Report, Section
from worldprobe.reports.figure import svg_copies
from worldprobe.reports.html import write_html
from worldprobe.reports.summary import as_markdown, verdict_table
from worldprobe.workspace import Workspace


@checked_arguments(seed=SEED, svg=FLAG, workers=WORKERS)
def build_report(workspace: Workspace, out: Path | None = None, seed: int = DEFAULT_SEED, *,
                 svg: bool = False, workers: int | None = 1) -> Report:  # fmt: skip
    """Read ``workspace/results``; write ``out/figures/*.png`` (``svg``: and an SVG copy of each),
    ``out/index.html`` and ``out/verdicts.md``. ``workers`` > 1 (None: 1) draws the datasets' sections in that many
    processes (the same files as one process draws).

    ``out`` defaults to ``workspace/reports``. Everything is written to a staging folder beside it first and then
    moved in (the figures, then ``verdicts.md``, then ``index.html``): a report stopped half-way leaves the last
    finished one whole, never an old page over new figures or a 0-byte image.
    """
    final = Path(out) if out is not None else workspace.reports
    out = final.with_name(final.name + ".partial")
    shutil.rmtree(out, ignore_errors=True)
    load_user_specs(workspace.datasets)
    results = report_results(workspace.results, workspace.datasets)
    for dataset in results.datasets:  # a table edited after its build would be drawn as if it were the built one
        checked_fingerprint(dataset, workspace)
    view = verdict_table(results.summaries)
    said = {(dataset, model): sentence for dataset, model, sentence in view.sentences}
    runs = {(r["dataset"], r["model"]): {**r, "sentence": said[r["dataset"], r["model"]]}
            for r in chosen_runs(results.summaries)}  # fmt: skip
    models = sorted(set(results.metrics.get("model", [])) | set(results.predictions.get("model", [])))
    palette = curves.model_palette(models)
    jobs = [_SectionJob(_of_dataset(results, dataset), runs, dataset, out, palette, seed, workspace, svg)
            for dataset in results.datasets]  # fmt: skip
    sections = _drawn(jobs, workers or 1)
    missing = results.missing + [f"{s.dataset}: {note}" for s in sections for note in s.notes]
    missing += left_out_runs(results.summaries)
    report = Report(out / "index.html", view.table, sections, missing, view.sentences, results.stale, view.note)
    write_html(report)
    (out / "verdicts.md").write_text(as_markdown(view), encoding="utf-8")
    _publish(out, final)
    report.index = final / "index.html"
    return report


@dataclass(frozen=True)
class _SectionJob:
    """One dataset's section, drawn into ``out`` (picklable: a worker process draws it)."""

    results: Results
    runs: dict[tuple[str, str], dict]
    dataset: str
    out: Path
    palette: dict[str, tuple]
    seed: int
    workspace: Workspace
    svg: bool

    def __call__(self) -> Section:
        load_user_specs(self.workspace.datasets)  # (a worker process learns the user's own datasets too)
        with svg_copies(self.svg):
            section = _section(self.results, self.runs, self.dataset, self.out, self.palette, self.seed)
            _interventions(section, self.workspace, self.out)
        return section


def _drawn(jobs: list[_SectionJob], workers: int) -> list[Section]:
    """The sections in order, drawn here or in ``workers`` processes."""
    if workers <= 1 or len(jobs) <= 1:
        return [job() for job in tqdm(jobs, desc="report", unit="dataset")]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(job) for job in jobs]
        for _ in tqdm(as_completed(futures), total=len(futures), desc="report", unit="dataset"):
            pass
        return [future.result() for future in futures]


def _of_dataset(results: Results, dataset: str) -> Results:
    """``results`` cut to one dataset's rows (what its section reads; less to send to a worker)."""
    tables = {name: _rows(getattr(results, name), dataset) for name in ("metrics", "predictions", "holdouts",
                                                                          "neurons", "breakdown")}  # fmt: skip
    return replace(results, **tables)


def _publish(staging: Path, final: Path) -> None:
    """Move a finished report from ``staging`` into ``final``, the page last (each move is one rename)."""
    final.mkdir(parents=True, exist_ok=True)
    old = final / ".figures.old"
    shutil.rmtree(old, ignore_errors=True)
    if (final / "figures").exists():
        os.replace(final / "figures", old)
    if (staging / "figures").exists():
        os.replace(staging / "figures", final / "figures")
    for name in ("verdicts.md", "index.html"):
        os.replace(staging / name, final / name)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)


def _section(
    results: Results, runs: dict[tuple[str, str], dict], dataset: str, out: Path, palette: dict[str, tuple], seed: int
) -> Section:
    section = Section(dataset, results.kind(dataset))
    predictions = _rows(results.predictions, dataset)
    metrics = _rows(results.metrics, dataset)
    overview = Block("Across depth")
    if not metrics.empty:
        overview.figures += [
            f
            for f in (
                curves.layer_curves(metrics, dataset, out, palette),
                curves.prompt_curves(metrics, dataset, out),
            )
            if f is not None
        ]
    if overview.figures:
        section.blocks.append(overview)
    if predictions.empty:
        section.notes.append("no predictions.parquet: no map or timeline")
    for model in sorted(set(predictions.get("model", [])) | set(metrics.get("model", []))):
        block = Block(model)
        run = runs.get((dataset, model))
        if run is not None:
            block.text.append(run["sentence"])
            types = breakdown_table(run)
            if not types.empty:
                block.text += breakdown_notes(run)
                block.tables.append((f"Per entity type (layer {run['headline']['selected_layer']}, test rows)", types))
            block.notes += small_types_note(run)
        if not predictions.empty:
            _predictions_figures(block, section, predictions, run, model, out, seed)
        _holdouts(block, _rows(results.holdouts, dataset), model, metrics, out)
        _neurons(block, _rows(results.neurons, dataset), model, out)
        if block.figures or block.tables or block.folded or block.text:
            section.blocks.append(block)
    return section


def _interventions(section: Section, workspace: Workspace, out: Path) -> None:
    """The dataset's ask and steer runs (``worldprobe ask`` / ``worldprobe steer``): scatters, dose-response curves and
    verdict sentences, in a block of their own."""
    from worldprobe.reports.interventions import dataset_figures

    found = dataset_figures(workspace.results, section.dataset, out, workspace.datasets)
    section.notes += found.notes
    if found.figures:
        section.blocks.append(Block("Asking and steering the models", found.figures, found.tables, text=found.verdicts))


def _rows(table: pd.DataFrame, dataset: str) -> pd.DataFrame:
    return table[table["dataset"] == dataset] if "dataset" in table.columns else table.iloc[0:0]


def _predictions_figures(
    block: Block, section: Section, predictions: pd.DataFrame, run: dict | None, model: str, out: Path, seed: int
) -> None:
    """The map (places) or timeline (time) of one model at its train-selected layer, primary prompt, test rows."""
    rows = predictions[(predictions["model"] == model) & (predictions["control"].fillna("none") == "none")]
    rows = rows[rows["is_test"].astype(bool)]
    if rows.empty:
        section.notes.append(f"{model}: no test predictions, so no map or timeline")
        return
    prompt = run["prompt"] if run is not None else primary_prompt(rows["prompt"])
    rows = rows[rows["prompt"] == prompt]
    if run is None or int(run["selected_layer"]) not in set(rows.loc[rows["probe"] == run["probe"], "layer"]):
        section.notes.append(f"{model}: no predictions at a train-selected layer, so no map or timeline")
        return
    layer = int(run["selected_layer"])
    rows = rows[(rows["probe"] == run["probe"]) & (rows["layer"] == layer)]
    columns = [f"{side}_{t}" for t in (("latitude", "longitude") if section.kind == "place" else ("year",))
               for side in ("true", "pred")]  # fmt: skip
    if not set(columns) <= set(rows.columns):
        section.notes.append(f"{model}: predictions lack {', '.join(sorted(set(columns) - set(rows.columns)))}")
        return
    finite = rows[columns].notna().all(axis=1)
    if not finite.all():
        section.notes.append(f"{model}: {int((~finite).sum())} test predictions without a value left out")
        rows = rows[finite]
    baselines = baseline_text(run)
    if section.kind == "place":
        data = maps.MapInput(section.dataset, model, prompt, layer, int(run["n_layers"]), rows, baselines)
        figures, notes = maps.map_figures(data, out, seed)
        block.figures += figures
        section.notes += notes
    else:
        data = timelines.TimelineInput(section.dataset, model, prompt, layer, int(run["n_layers"]), rows, baselines)
        block.figures.append(timelines.timeline_figure(data, out, seed))
        block.tables.append(("Example test entities", timelines.example_table(rows, seed)))


def baseline_text(run: dict) -> str:
    """``train mean 5,012 km · country oracle 640 km``: the median errors a figure title puts beside the probe's."""
    from worldprobe.datasets.registry import all_specs
    from worldprobe.probes.verdict import GROUP_NOUNS

    base = run["headline"].get("baselines", {})
    unit = run["headline"].get("error_unit", "")
    spec = all_specs().get(run["dataset"])
    column = spec.oracle_column if spec is not None else "group"
    parts = []
    for key, label in (("train_mean", "train mean"), ("group_oracle", f"{GROUP_NOUNS.get(column, column)} oracle")):
        if key in base:
            parts.append(f"{label} {base[key]['median_error']['value']:,.0f} {unit}")
    return " · ".join(parts)


def _holdouts(block: Block, rows: pd.DataFrame, model: str, metrics: pd.DataFrame, out: Path) -> None:
    rows = rows[rows["model"] == model] if not rows.empty else rows
    if rows.empty:
        return
    skipped = rows[rows["setting"] == SKIPPED]
    for column, part in skipped.groupby("column", sort=False):
        listed = ", ".join(f"{b} ({int(v)} rows outside it)" for b, v in zip(part["block"], part["value"], strict=True))
        block.text.append(f"Held-out blocks by {column}: not fitted for {listed}, too few rows to train on.")
    rows = rows[rows["setting"] != SKIPPED]
    if rows.empty:
        return
    known = metrics.loc[metrics["model"] == model, "n_layers"] if not metrics.empty else pd.Series(dtype=int)
    n_layers = int(known.iat[0]) if len(known) else int(rows["layer"].max())
    figure = holdouts.holdout_figure(rows, rows["dataset"].iat[0], model, n_layers, out)
    if figure is not None:
        block.figures.append(figure)
    for column in dict.fromkeys(rows["column"]):
        table = holdouts.holdout_table(rows, column)
        block.folded.append((f"Held-out blocks by {column} ({table['metric'].iat[0]}; the numbers of the chart above)",
                             table.drop(columns="metric")))  # fmt: skip


def _neurons(block: Block, rows: pd.DataFrame, model: str, out: Path) -> None:
    rows = rows[rows["model"] == model] if not rows.empty else rows
    if rows.empty:
        return
    figure = neurons.neuron_figure(rows, rows["dataset"].iat[0], model, out)
    if figure is not None:
        block.figures.append(figure)
    block.tables.append(("Top neurons (selected on train rows, scored on test rows)", neurons.neuron_table(rows)))
