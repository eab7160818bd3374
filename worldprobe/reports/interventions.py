"""Report figures of asking and steering for one dataset: answer vs truth and probe vs answer scatters; the steering
map (antisymmetric shift per direction x layer, on the train entities it was chosen on) and the chosen direction's
dose-response on test entities beside the random directions' band; and the verdict sentences.

:func:`dataset_figures` reads every finished ``ask``/``steer`` results folder of the dataset (their summaries say
``"stage"``) and returns figures and sentences; the report page decides where to show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from worldprobe.probes.results import ANSWERS, STEERING, STEERING_MAP, find_runs
from worldprobe.reports.choice import one_per_group
from worldprobe.reports.figure import Caption, FigureFile, file_stem, new_figure, save

KIND_STYLES = {
    "chosen": dict(color="#c0392b", label="chosen direction"),
    "ridge": dict(color="#e67e22", label="ridge weights (same place)"),
    "random": dict(color="#7f8c8d", label="random directions (same norm)"),
    "random_init": dict(color="#8e44ad", label="random-init twin's direction"),
}


@dataclass
class InterventionFigures:
    """What the report shows of one dataset's interventions."""

    figures: list[FigureFile] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)  # "<model>: <sentence>"
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def dataset_figures(
    results_dir: Path, dataset: str, out_dir: Path, datasets_dir: Path | None = None
) -> InterventionFigures:
    """Figures and verdict sentences of the ask, context and steer runs of ``dataset``: one run per model, question and
    stage (:func:`drawn_runs`; the others are named in ``notes``, as are runs of another build of the dataset than
    ``datasets_dir`` holds)."""
    out = InterventionFigures()
    asked, notes = find_runs(results_dir, stage="ask", dataset=dataset, datasets_dir=datasets_dir)
    steered, more = find_runs(results_dir, stage="steer", dataset=dataset, datasets_dir=datasets_dir)
    out.notes += notes + more
    asked, steered = drawn_runs(asked, out.notes), drawn_runs(steered, out.notes)
    for folder, summary in asked:
        answers = pd.read_parquet(folder / f"{ANSWERS}.parquet")
        out.figures.append(ask_figure(answers, summary, out_dir))
        out.tables.append(answer_sample(answers, summary))
    contexts, notes = find_runs(results_dir, stage="context", dataset=dataset, datasets_dir=datasets_dir)
    out.notes += notes
    contexts = drawn_runs(contexts, out.notes)
    for _, summary in contexts:
        out.figures.append(context_figure(summary, out_dir))
        out.verdicts.append(f"{summary['model']} (context): {summary['verdict']}")
    for folder, summary in steered:
        table = pd.read_parquet(folder / f"{STEERING_MAP}.parquet")
        out.figures.append(map_figure(table, summary, out_dir))
        out.figures.append(dose_figure(pd.read_parquet(folder / f"{STEERING}.parquet"), summary, out_dir))
        out.verdicts.append(f"{summary['model']}: {summary['verdict']}")
    return out


def drawn_runs(runs: list[tuple[Path, dict[str, Any]]], notes: list[str]) -> list[tuple[Path, dict[str, Any]]]:
    """One run per model x question x prompt of a stage, as the probe runs are drawn one per curve
    (:func:`~worldprobe.reports.choice.one_per_group`): the widest (a steering map's directions x layers x
    positions; else the most test entities), then the newest; each run passed over is named in ``notes`` with its
    folder, so nothing is hidden."""
    groups: dict[tuple[Any, ...], list[tuple[tuple, tuple[Path, dict[str, Any]]]]] = {}
    for folder, summary in runs:
        key = (summary.get("model"), (summary.get("question") or {}).get("name"), summary.get("prompt"),
               summary.get("target"))  # fmt: skip
        rank = (_width(summary), (folder / "summary.json").stat().st_mtime_ns, folder.name)
        groups.setdefault(key, []).append((rank, (folder, summary)))
    kept, passed_over = one_per_group(groups)
    for (other, _), (folder, summary) in passed_over:
        notes.append(f"{summary['stage']} run {other.name} of {summary['model']} not drawn: {folder.name} is drawn "
                     "(the widest, then the newest run of this question)")  # fmt: skip
    return sorted(kept, key=lambda run: str(run[0]))


def _width(summary: dict[str, Any]) -> int:
    """How much a run measured: a steering map's directions x layers x positions, else the entities asked."""
    if summary.get("stage") == "steer":
        return len(summary.get("directions", [])) * len(summary.get("layers", [])) * len(summary.get("positions", []))
    return int(summary.get("n_entities") or (summary.get("parse_rate") or {}).get("n") or 0)


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


ANSWER_SAMPLE = 8


def answer_sample(
    answers: pd.DataFrame, summary: dict[str, Any], size: int = ANSWER_SAMPLE
) -> tuple[str, pd.DataFrame]:
    """A seeded sample of an ask run's answers as the model wrote them, beside what was parsed from them, the truth and
    the probe: a reader sees what "parsed" and "right" mean on real text."""
    target = summary["probe"]["targets"][0]
    rows = answers.sample(min(size, len(answers)), random_state=int(summary["seed"])).sort_index()
    digits = 0 if target == "year" else 2  # whole years ("1904", not "1904.000"); degrees to a hundredth

    def shown(values: pd.Series) -> pd.Series:
        return values.map(lambda v: "–" if pd.isna(v) else f"{v:.{digits}f}")

    table = pd.DataFrame({
        "entity": rows["text"], "answer as written": rows["answer_text"].str.strip(),
        "parsed as": rows["answer_status"],
        f"answer's {target}": shown(rows[f"reading_{target}"]), f"true {target}": shown(rows[f"true_{target}"]),
        f"probe's {target}": shown(rows[f"pred_{target}"]), "answer right": rows["answer_correct"],
    })  # fmt: skip
    title = (f"{summary['model']} asked '{summary['question']['name']}': {len(rows)} answers of {len(answers)} "
             f"(a seeded sample), as written and as parsed")  # fmt: skip
    return title, table


def context_figure(summary: dict[str, Any], out_dir: Path) -> FigureFile:
    """Per condition, how far the probe's reading and the answer moved toward the counterfactual (0 = the truth,
    1 = the counterfactual), with 95% bootstrap intervals over entities."""
    conditions = summary["conditions"]
    names = list(conditions)
    fig, ax = new_figure(1, 1, width=7.5, height=4.2)
    x = np.arange(len(names))
    for offset, what, colour in ((-0.18, "probe", "#2980b9"), (0.18, "answer", "#c0392b")):
        value = np.array([conditions[c][f"{what}_shift"] for c in names], dtype=float)
        low = np.array([conditions[c][f"{what}_shift_ci_low"] for c in names], dtype=float)
        high = np.array([conditions[c][f"{what}_shift_ci_high"] for c in names], dtype=float)
        ax.bar(x + offset, value, width=0.34, color=colour, alpha=0.8, label=f"{what} (fraction of the way)")
        ax.errorbar(x + offset, value, yerr=[value - low, high - value], fmt="none", color="black", capsize=3, lw=1)
    ax.axhline(0, color="#333", lw=0.8)
    ax.axhline(1, color="#777", lw=0.8, ls="--")
    ax.set_xticks(x, names)
    ax.set(ylabel="toward the counterfactual (0 truth, 1 counterfactual)",
           title="a false statement before the question")  # fmt: skip
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    title = f"{summary['dataset']}: does {summary['model']} follow a counterfactual in context?"
    stem = file_stem(summary["dataset"], summary["model"], "context", summary["question"]["name"],
                     summary["run_key"][:8])  # fmt: skip
    return save(fig, out_dir, stem, title, _caption(summary, summary["n_entities"]))


def map_figure(table: pd.DataFrame, summary: dict[str, Any], out_dir: Path) -> FigureFile:
    """The steering map on the train (select) entities: antisymmetric shift at the largest dose per direction (rows)
    and layer (columns), one panel per position; the random directions' mean as a row of its own; the chosen cell
    outlined."""
    k = max(float(d) for d in summary["doses"])
    rows = table[(table["split"] == "select") & (table["dose"] == k)]
    rows = rows.assign(name=np.where(rows["kind"] == "random", "random (mean)", rows["direction"]))
    positions = list(dict.fromkeys(rows["position"]))
    fig, axes = new_figure(1, len(positions), width=max(6.0, 0.45 * rows["layer"].nunique() * len(positions) + 3),
                           height=0.5 * rows["name"].nunique() + 2.2)  # fmt: skip
    axes = np.atleast_1d(axes)
    grid = rows.pivot_table(index="name", columns=["position", "layer"], values="antisymmetric_shift", aggfunc="mean")
    limit = float(np.nanmax(np.abs(grid.to_numpy()))) if grid.size else 1.0
    chosen = summary["chosen"]
    for ax, position in zip(axes, positions, strict=True):
        part = grid[position]
        image = ax.imshow(part.to_numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(part.shape[1]), [str(c) for c in part.columns], fontsize=7)
        ax.set_yticks(range(part.shape[0]), list(part.index), fontsize=8)
        ax.set(xlabel="layer (0 = embedding output)", title=f"position: {position}")
        if position == chosen["position"] and chosen["direction"] in part.index:
            x, y = list(part.columns).index(chosen["layer"]), list(part.index).index(chosen["direction"])
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, lw=2, color="black"))
    fig.colorbar(image, ax=list(axes), label=f"antisymmetric shift at ±{k:g}|Δμ| ({summary['unit']})", shrink=0.8)
    title = (f"{summary['dataset']}: where steering {summary['model']} moves its answer ({summary['target']}); "
             f"train entities, chosen cell outlined")  # fmt: skip
    stem = file_stem(summary["dataset"], summary["model"], "steer-map", summary["target"], summary["run_key"][:8])
    caption = Caption(summary["dataset"], summary["model"], summary["prompt"], "every steered layer", "train (select)",
                      summary["select"]["n_entities"])  # fmt: skip
    return save(fig, out_dir, stem, title, caption)


def dose_figure(steering: pd.DataFrame, summary: dict[str, Any], out_dir: Path) -> FigureFile:
    """On test entities at the chosen layer and position: the mean answer shift from the unsteered answer per dose,
    with 95% bootstrap bands over entities, for the chosen direction, the ridge weights, the random directions (pooled:
    the band to leave) and the twin's direction; and the parse rate per dose."""
    from worldprobe.probes.bootstrap import estimate, resample_counts, weighted_mean

    chosen = summary["chosen"]
    test = steering[(steering["split"] == "test") & (steering["layer"] == chosen["layer"])
                    & (steering["position"] == chosen["position"])]  # fmt: skip
    base = steering[(steering["split"] == "test") & (steering["kind"] == "none")].set_index("entity")["reading"]
    fig, (ax, ax_parse) = new_figure(1, 2, width=10, height=4.4, gridspec_kw={"width_ratios": [2, 1]})
    groups = {
        "chosen": test[(test["direction"] == chosen["direction"]) & (test["kind"] == "method")],
        "ridge": test[(test["method"] == "ridge") & (test["kind"] == "method")
                      & (test["direction"] != chosen["direction"])],
        "random": test[test["kind"] == "random"], "random_init": test[test["kind"] == "random_init"],
    }  # fmt: skip
    w = resample_counts(len(base), 500, 0).astype(float)
    for kind, part in groups.items():
        if part.empty:
            continue
        rows = []
        for dose, at in part.groupby("dose"):
            shift = (at["reading"].to_numpy(float) - base.reindex(at["entity"]).to_numpy(float))
            per_entity = pd.Series(shift).groupby(at["entity"].to_numpy()).mean().reindex(base.index).to_numpy()
            keep = np.isfinite(per_entity)
            found = None
            if keep.sum() > 1:
                with np.errstate(invalid="ignore", divide="ignore"):
                    found = estimate(lambda v, x=per_entity[keep]: weighted_mean(x, v), w[:, keep])
            rows.append({"dose": dose, "value": found.value if found else np.nan,
                         "low": found.low if found else np.nan, "high": found.high if found else np.nan,
                         "parse": float(at["parsed"].mean())})  # fmt: skip
        frame = pd.DataFrame(rows)
        style = KIND_STYLES[kind]
        ax.plot(frame["dose"], frame["value"], marker="o", ms=4, color=style["color"], label=style["label"])
        ax.fill_between(frame["dose"], frame["low"], frame["high"], color=style["color"],
                        alpha=0.3 if kind == "random" else 0.15, lw=0)  # fmt: skip
        ax_parse.plot(frame["dose"], frame["parse"], marker="o", ms=4, color=style["color"])
    ax.axhline(0, color="#777", lw=1)
    unit = summary["unit"]
    ax.set(xlabel="dose (multiples of |Δμ| at the layer)", ylabel=f"answer minus unsteered answer ({unit})",
           title=f"{chosen['direction']} at layer {chosen['layer']} ({chosen['position']}), test entities")  # fmt: skip
    ax.legend(fontsize=7, loc="upper left")
    ax_parse.set(xlabel="dose (|Δμ|)", ylabel="parse rate", ylim=(0, 1.05), title="parsed answers")
    for a in (ax, ax_parse):
        a.grid(alpha=0.3)
    title = f"{summary['dataset']}: steering {summary['model']}'s answer ({summary['target']}) on test entities"
    stem = file_stem(summary["dataset"], summary["model"], "steer", summary["target"], summary["run_key"][:8])
    caption = Caption(summary["dataset"], summary["model"], summary["prompt"],
                      f"{chosen['layer']} (chosen on train entities)", "test", summary["n_test_entities"])  # fmt: skip
    return save(fig, out_dir, stem, title, caption)
