"""Layer curves: test R² and Spearman against relative depth, one line per model or prompt, controls beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from worldprobe.reports.choice import primary_prompt
from worldprobe.reports.figure import Caption, FigureFile, file_stem, new_figure, save

METRICS = {"r2": "test R² (mean over targets)", "spearman": "test Spearman ρ (mean over targets)"}
CONTROL_STYLES = {
    "shuffled": dict(ls=":", marker="v"),
    "random_init": dict(ls="--", marker="s"),
    "alt_world": dict(ls=(0, (5, 1, 1, 1, 1, 1)), marker=""),
    "embedding": dict(ls="-.", marker=""),
    "lexical": dict(ls=(0, (9, 3)), marker=""),
    "group_oracle": dict(ls=(0, (1, 4)), marker=""),
}
"""One line style per meaning: solid is the probe itself; each control has a style of its own."""
FLAT_CONTROLS = ("embedding", "lexical", "group_oracle")
"""Controls without a depth (one value repeated at every layer, or no layer at all): drawn as horizontal lines."""
MODEL_FREE = ("lexical", "group_oracle")
"""Controls that use no model: drawn once per dataset in a neutral grey, not in a model's colour."""
NEUTRAL = "#7f7f7f"
DEPTH_LABEL = "relative depth (layer / number of layers)"


def _test_rows(metrics: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = metrics[(metrics["split"] == "test") & (metrics["target"] == "mean") & (metrics["metric"] == metric)].copy()
    missing = rows["rel_depth"].isna() & (rows["layer"] >= 0)
    rows.loc[missing, "rel_depth"] = rows.loc[missing, "layer"] / rows.loc[missing, "n_layers"]
    return rows


def _is_flat(control: str, rows: pd.DataFrame) -> bool:
    return control in FLAT_CONTROLS or bool(rows["rel_depth"].isna().all())


def model_palette(models: list[str]) -> dict[str, tuple]:
    """One colour per model, stable across every figure of a report."""
    return dict(zip(models, sns.color_palette("colorblind", len(models)), strict=True))


def layer_curves(metrics: pd.DataFrame, dataset: str, out_dir: Path, palette: dict[str, tuple]) -> FigureFile | None:
    """Probe and controls against depth for every model (primary prompt, each probe), the train-selected layer marked
    with its 95% interval; ``None`` without test rows."""
    rows = metrics[metrics["dataset"] == dataset]
    if rows.empty:
        return None
    prompt = primary_prompt(rows["prompt"])
    rows = rows[rows["prompt"] == prompt]
    panels = [m for m in METRICS if not _test_rows(rows, m).empty]
    within = _test_rows(rows[rows["control"] == "within_group"], "pearson")
    if not panels:
        return None
    fig, axes = new_figure(
        1, len(panels) + (not within.empty), width=5.2 * (len(panels) + (not within.empty)), height=4.6
    )
    axes = np.atleast_1d(axes)
    controls_seen: list[str] = []
    for ax, metric in zip(axes, panels, strict=False):
        data = _test_rows(rows, metric)
        for (model, probe), probe_rows in data[data["control"] == "none"].groupby(["model", "probe"]):
            _draw_probe(ax, probe_rows, palette[model], probe)
        spreads = _test_rows(rows, f"{metric}_std")
        labels: list[tuple[str, float, tuple | str]] = []
        ceilings = []
        for control, control_rows in data[data["control"] != "none"].groupby("control"):
            if control == "within_group":
                continue
            controls_seen.append(control)
            if control == "group_oracle":  # drawn last, so that it cannot set the scale of the curves
                ceilings.append(control_rows["value"].mean())
                continue
            labels += _draw_control(ax, control, control_rows, spreads[spreads["control"] == control], palette)
        for value in ceilings:
            labels += _draw_ceiling(ax, "group_oracle", value)
        _place_labels(ax, labels)
        ax.set(xlabel=DEPTH_LABEL, ylabel=METRICS[metric], xlim=(-0.02, 1.02))
        ax.set_title(METRICS[metric].split(" (")[0])
        ax.grid(alpha=0.3)
    if not within.empty:
        ax = axes[-1]
        ax.axhline(0, color="#333333", lw=0.8)
        for model, model_rows in within.groupby("model"):
            _draw_probe(ax, model_rows, palette[model], "ridge")
        spelled = _test_rows(rows[rows["control"] == "within_group"], "lexical_pearson")
        if not spelled.empty:
            value = spelled.groupby("model")["value"].mean().mean()  # the same twin for every model
            ax.axhline(value, color=NEUTRAL, lw=1.2, ls=CONTROL_STYLES["lexical"]["ls"])
            _place_labels(ax, [(f"lexical {value:.2f}", value, NEUTRAL)])
        ax.set(xlabel=DEPTH_LABEL, ylabel="test Pearson r, predicted vs true offset", xlim=(-0.02, 1.02))
        ax.set_title("within-group probe (fitted to offsets from the group mean)")
        ax.grid(alpha=0.3)
    _legends(fig, rows, palette, sorted(set(controls_seen)))
    models = sorted(set(rows["model"]))
    caption = Caption(dataset, ", ".join(models), prompt, "all (x = layer / layers)", "test", _n_text(rows))
    title = f"{dataset}: probe quality across depth, with controls"
    return save(fig, out_dir, file_stem(dataset, "layers"), title, caption)


def _n_text(rows: pd.DataFrame) -> str:
    """The test rows behind the curves: one number, or one per model when they differ."""
    test = rows[(rows["split"] == "test") & (rows["control"] == "none")]
    if "n" not in test.columns or test["n"].isna().all():
        return "not recorded"
    per_model = test.groupby("model")["n"].max().astype(int)
    if per_model.nunique() == 1:
        return str(per_model.iat[0])
    return ", ".join(f"{model} {n}" for model, n in per_model.items())


def _draw_probe(ax: Axes, rows: pd.DataFrame, colour: tuple, probe: str) -> None:
    """The probe's curve (solid; an MLP probe with round markers) and, at its train-selected layer, a star with the
    95% interval."""
    curve = rows.groupby("rel_depth")["value"].mean()
    ax.plot(curve.index, curve.values, color=colour, lw=2, ls="-", marker="o" if probe != "ridge" else "", ms=3)
    if "selected_layer" not in rows.columns:
        return
    chosen = rows[(rows["layer"] == rows["selected_layer"]) & rows["ci_low"].notna()]
    for _, row in chosen.iterrows():
        error = [[row["value"] - row["ci_low"]], [row["ci_high"] - row["value"]]]
        ax.errorbar(row["rel_depth"], row["value"], yerr=error, color=colour, marker="*", ms=11, capsize=3, lw=1.2,
                    zorder=5)  # fmt: skip


def _draw_control(ax: Axes, control: str, rows: pd.DataFrame, spread: pd.DataFrame, palette: dict
                  ) -> list[tuple[str, float, tuple | str]]:  # fmt: skip
    """Per-model lines in the control's style (model-free controls once, in grey); a band of ±1 std (or min-max over
    seeds); horizontal when flat. Returns the end labels of the flat lines, placed once the scale is known."""
    style = CONTROL_STYLES.get(control, dict(ls="--", marker="o"))
    groups = [("", rows)] if control in MODEL_FREE else list(rows.groupby("model"))
    labels = []
    for model, model_rows in groups:
        colour = NEUTRAL if control in MODEL_FREE else palette[model]
        if _is_flat(control, model_rows):
            value = model_rows["value"].mean()
            ax.axhline(value, color=colour, lw=1.2, ls=style["ls"])
            labels.append((f"{control} {value:.2f}", value, colour))
            continue
        by_depth = model_rows.groupby(["rel_depth", "seed"])["value"].mean().groupby("rel_depth")
        mean, low, high = by_depth.mean(), by_depth.min(), by_depth.max()
        std = spread[spread["model"] == model].groupby("rel_depth")["value"].mean()
        if not std.empty:
            low, high = mean - std.reindex(mean.index).fillna(0), mean + std.reindex(mean.index).fillna(0)
        ax.plot(mean.index, mean.values, color=colour, lw=1.2, ls=style["ls"], marker=style["marker"], ms=3)
        if (high - low).max() > 0:
            ax.fill_between(mean.index, low.values, high.values, color=colour, alpha=0.15, lw=0)
    return labels


def _draw_ceiling(ax: Axes, control: str, value: float) -> list[tuple[str, float, tuple | str]]:
    """A model-free control far above the curves (the group oracle, R² near 1) as a line when it fits the curves'
    scale with a little room, else as a label at the top edge: it would otherwise squash the curves to a strip."""
    low, high = ax.get_ylim()
    if value <= high + 0.15 * (high - low):
        ax.axhline(value, color=NEUTRAL, lw=1.2, ls=CONTROL_STYLES[control]["ls"])
        return [(f"{control} {value:.2f}", value, NEUTRAL)]
    ax.annotate(f"{control} {value:.2f} (above the scale) ↑", (0.99, 0.99), xycoords="axes fraction", ha="right",
                va="top", fontsize=7, color=NEUTRAL)  # fmt: skip
    return []


LABEL_GAP = 0.05
"""Smallest vertical distance between two end labels, as a share of the axes' height."""


def _place_labels(ax: Axes, labels: list[tuple[str, float, tuple | str]]) -> None:
    """End labels of horizontal lines at the right edge, pushed apart upwards so that none overlaps another."""
    low, high = ax.get_ylim()
    placed: list[float] = []
    for text, value, colour in sorted(labels, key=lambda item: item[1]):
        y = (value - low) / (high - low) if high > low else 0.5
        if placed and y < placed[-1] + LABEL_GAP:
            y = placed[-1] + LABEL_GAP
        placed.append(y)
        ax.annotate(text, (0.99, y), xycoords="axes fraction", ha="right", va="bottom", fontsize=7, color=colour,
                    zorder=6, bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none", alpha=0.8))  # fmt: skip


def _legends(fig: Figure, rows: pd.DataFrame, palette: dict[str, tuple], controls: list[str]) -> None:
    """One legend outside the axes: a colour per model, a line style per probe and control."""
    handles = [Line2D([], [], color=palette[m], lw=2, label=f"model {m}") for m in sorted(set(rows["model"]))]
    for probe in sorted(set(rows["probe"])):
        handles.append(Line2D([], [], color="#444", lw=2, ls="-", marker="o" if probe != "ridge" else "", ms=3,
                              label=f"{probe} probe"))  # fmt: skip
    handles.append(Line2D([], [], color="#444", marker="*", ms=10, ls="", label="layer chosen on train, 95% CI"))
    for control in controls:
        style = CONTROL_STYLES.get(control, dict(ls="--", marker="o"))
        spread = " ± spread" if control in ("alt_world", "random_init") else ""
        what = " (no depth)" if control in FLAT_CONTROLS else spread
        colour = NEUTRAL if control in MODEL_FREE else "#444"
        free = ", no model" if control in MODEL_FREE else ""
        handles.append(Line2D([], [], color=colour, ms=3, label=f"control: {control}{what}{free}", **style))
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)


def prompt_curves(metrics: pd.DataFrame, dataset: str, out_dir: Path) -> FigureFile | None:
    """Test R² against depth, one line per prompt, one panel per model; ``None`` when the dataset has one prompt."""
    rows = _test_rows(metrics[(metrics["dataset"] == dataset) & (metrics["control"] == "none")], "r2")
    prompts = sorted(set(rows["prompt"]))
    if len(prompts) < 2:
        return None
    models = sorted(set(rows["model"]))
    colours = dict(zip(prompts, sns.color_palette("Dark2", len(prompts)), strict=True))
    fig, axes = new_figure(1, len(models), width=max(6.0, 4.6 * len(models)), height=4.4, sharey=True)
    for ax, model in zip(np.atleast_1d(axes), models, strict=True):
        for prompt, prompt_rows in rows[rows["model"] == model].groupby("prompt"):
            curve = prompt_rows.groupby("rel_depth")["value"].mean()
            ax.plot(curve.index, curve.values, color=colours[prompt], lw=2, label=prompt or "empty")
        ax.set(xlabel=DEPTH_LABEL, ylabel=METRICS["r2"], title=model, xlim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(title="prompt", fontsize=7, title_fontsize=8, loc="lower right")
    caption = Caption(dataset, ", ".join(models), ", ".join(prompts), "all", "test", _n_text(rows))
    return save(fig, out_dir, file_stem(dataset, "prompts"), f"{dataset}: probe R² by prompt", caption)
