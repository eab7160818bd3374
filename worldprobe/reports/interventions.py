"""Report figures of asking and steering for one dataset: answer vs truth and probe vs answer scatters, dose-response
curves with bootstrap bands beside the random-direction band, and the verdict sentences.

:func:`dataset_figures` reads every finished ``ask``/``steer`` results folder of the dataset (their summaries say
``"stage"``) and returns figures and sentences; the report page decides where to show them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from worldprobe.probes.results import ANSWERS
from worldprobe.reports.figure import Caption, FigureFile, file_stem, new_figure, save

KIND_STYLES = {
    "probe": dict(color="#c0392b", label="probe direction"),
    "random": dict(color="#7f8c8d", label="random directions (same norm)"),
    "orthogonal": dict(color="#2980b9", label="orthogonal to the probe"),
    "random_init": dict(color="#8e44ad", label="random-init twin's probe"),
}


@dataclass
class InterventionFigures:
    """What the report shows of one dataset's interventions."""

    figures: list[FigureFile] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)  # "<model>: <sentence>"
    notes: list[str] = field(default_factory=list)


def runs(
    results_dir: Path, dataset: str, stage: str, datasets_dir: Path | None = None
) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Finished results folders of ``stage`` (``ask`` or ``steer``) for ``dataset`` with their summaries, and notes
    on the runs left out because they were computed from another build of the dataset than ``datasets_dir`` holds."""
    current = None
    if datasets_dir is not None and (Path(datasets_dir) / f"{dataset}.build.json").exists():
        current = json.loads((Path(datasets_dir) / f"{dataset}.build.json").read_text()).get("fingerprint")
    found, notes = [], []
    for path in sorted(Path(results_dir).glob("*/summary.json")):
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError:
            notes.append(f"{path} is not valid JSON: left out")
            continue
        if summary.get("stage") != stage or summary.get("dataset") != dataset or not summary.get("complete"):
            continue
        used = summary.get("probe", {}).get("cache", {}).get("dataset_fingerprint")
        if current is not None and used != current:
            notes.append(f"{stage} run {path.parent.name} used another build of {dataset}: left out (re-run it)")
            continue
        found.append((path.parent, summary))
    return found, notes


def dataset_figures(
    results_dir: Path, dataset: str, out_dir: Path, datasets_dir: Path | None = None
) -> InterventionFigures:
    """Figures and verdict sentences of every ask and steer run of ``dataset`` (runs of another build of the dataset
    than ``datasets_dir`` holds are left out and named in ``notes``)."""
    out = InterventionFigures()
    asked, notes = runs(results_dir, dataset, "ask", datasets_dir)
    steered, more = runs(results_dir, dataset, "steer", datasets_dir)
    out.notes += notes + more
    for folder, summary in asked:
        out.figures.append(ask_figure(pd.read_parquet(folder / f"{ANSWERS}.parquet"), summary, out_dir))
    for _, summary in steered:
        out.figures.append(dose_figure(summary, out_dir))
        out.verdicts.append(f"{summary['model']}: {summary['verdict']}")
    return out


def _caption(summary: dict[str, Any], n: int | str, split: str = "test") -> Caption:
    probe = summary["probe"]
    how = "given" if probe["selection_criterion"].startswith("given") else "chosen on train rows"
    layer = f"{probe['selected_layer']} of {probe['n_layers']} ({how})"
    return Caption(summary["dataset"], summary["model"], summary["prompt"], layer, split, n)


def ask_figure(answers: pd.DataFrame, summary: dict[str, Any], out_dir: Path) -> FigureFile:
    """Answer vs truth and probe vs answer, per entity (first target: year or latitude); unparsed answers are
    counted in the title, not drawn."""
    target = summary["probe"]["targets"][0]
    truth, answer, probe = (answers[f"{p}_{target}"].to_numpy(dtype=float) for p in ("true", "reading", "pred"))
    drawn = np.isfinite(answer)
    fig, (ax_truth, ax_probe) = new_figure(1, 2, width=10, height=4.4)
    colour = np.where(answers["answer_correct"].to_numpy(dtype=bool), "#27ae60", "#c0392b")
    ax_truth.scatter(truth[drawn], answer[drawn], s=12, c=colour[drawn], alpha=0.7)
    ax_probe.scatter(probe[drawn], answer[drawn], s=12, c=colour[drawn], alpha=0.7)
    for ax, x in ((ax_truth, truth), (ax_probe, probe)):
        values = np.concatenate([x[drawn], answer[drawn]])
        if values.size:
            low, high = float(np.nanmin(values)), float(np.nanmax(values))
            ax.plot([low, high], [low, high], color="#777", lw=1, ls="--")
        ax.grid(alpha=0.3)
    ax_truth.set(xlabel=f"true {target}", ylabel=f"{target} of the answer", title="answer vs truth")
    ax_probe.set(xlabel=f"probe's {target} (test rows)", ylabel=f"{target} of the answer", title="probe vs answer")
    parse, acc, probe_acc = summary["parse_rate"], summary["answer_accuracy"], summary["probe_accuracy"]
    numbers = (f"parsed {parse['value']:.0%} of {parse['n']} · answers right {acc['value']:.0%} "
               f"[{acc['low']:.0%}, {acc['high']:.0%}] · probe right {probe_acc['value']:.0%} "
               f"[{probe_acc['low']:.0%}, {probe_acc['high']:.0%}] (green: answer right)")  # fmt: skip
    title = (f"{summary['dataset']}: {summary['model']} asked '{summary['question']['name']}' ({summary['format']})\n"
             f"{numbers}")  # fmt: skip
    stem = file_stem(summary["dataset"], summary["model"], "ask", summary["question"]["name"], summary["run_key"][:8])
    return save(fig, out_dir, stem, title, _caption(summary, f"{int(drawn.sum())} drawn of {len(answers)}"))


def dose_figure(summary: dict[str, Any], out_dir: Path) -> FigureFile:
    """Mean answer shift per intended shift with its 95% bootstrap band, per direction kind (random directions
    pooled over seeds: the band the probe must leave), and the line answer shift = intended shift."""
    fig, (ax, ax_parse) = new_figure(1, 2, width=10, height=4.4, gridspec_kw={"width_ratios": [2, 1]})
    shifts = [float(s) for s in summary["shifts"]]
    ax.plot([min(shifts), max(shifts)], [min(shifts), max(shifts)], color="#777", lw=1, ls="--",
            label="answer moves as intended")  # fmt: skip
    for kind, found in summary["kinds"].items():
        rows = pd.DataFrame([{"shift": r["shift"], **{k: (r["mean_answer_shift"] or {}).get(k, np.nan)
                                                        for k in ("value", "low", "high")},
                              "parse": r["parse_rate"]["value"]} for r in found["per_dose"]])  # fmt: skip
        style = KIND_STYLES.get(kind, dict(color="black", label=kind))
        ax.plot(rows["shift"], rows["value"], marker="o", ms=4, color=style["color"], label=style["label"])
        ax.fill_between(rows["shift"], rows["low"], rows["high"], color=style["color"], alpha=0.15 if kind != "random"
                        else 0.3, lw=0)  # fmt: skip
        ax_parse.plot(rows["shift"], rows["parse"], marker="o", ms=4, color=style["color"])
    unit = summary["unit"]
    ax.set(xlabel=f"intended shift of the probe's reading ({unit})", ylabel=f"mean answer shift ({unit})",
           title="dose-response (95% bootstrap bands over entities)")  # fmt: skip
    ax.legend(fontsize=7, loc="upper left")
    ax_parse.set(xlabel=f"intended shift ({unit})", ylabel="parse rate", ylim=(0, 1.05), title="parsed answers")
    for a in (ax, ax_parse):
        a.grid(alpha=0.3)
    where = "every entity token" if summary["positions"] == "entity" else "the entity's last token"
    title = (f"{summary['dataset']}: steering {summary['model']} along the probe of {summary['target']} "
             f"(layers {', '.join(map(str, summary['layers']))}, {where})")  # fmt: skip
    stem = file_stem(summary["dataset"], summary["model"], "steer", summary["target"], summary["run_key"][:8])
    return save(fig, out_dir, stem, title, _caption(summary, summary["n_entities"]))
