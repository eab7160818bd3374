"""Held-out blocks (paper Tables 3/4) as bar charts: each block's error under the random split vs held out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from worldprobe.probes.holdouts import MEAN_BLOCK
from worldprobe.reports.figure import Caption, FigureFile, file_stem, layer_text, new_figure, save

METRIC_LABELS = {
    "proximity": "proximity error\n(0 = perfect, 0.5 = chance)",
    "haversine_km": "error (km; lower is better)",
    "abs_error_years": "absolute error (years; lower is better)",
    "r2": "R² within the block (higher is better)",
    "spearman": "Spearman ρ within the block (higher is better)",
}
SETTINGS = {"nominal": ("random split (nominal)", "#8c9fbf"), "held_out": ("block held out of training", "#d62728")}
MAX_BLOCKS = 20


def holdout_metric(rows: pd.DataFrame) -> str:
    """The metric to draw: the first of ``METRIC_LABELS`` present, else the first one found."""
    present = list(dict.fromkeys(rows["metric"]))
    return next((m for m in METRIC_LABELS if m in present), present[0])


def holdout_table(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """One row per block of ``column`` (largest first), then the mean over blocks: n_rows, nominal and held-out value
    of the chosen metric (target ``mean``)."""
    rows = rows[rows["column"] == column]
    metric = holdout_metric(rows)
    rows = rows[(rows["metric"] == metric) & (rows["target"] == _target(rows))]
    table = rows.pivot_table(index="block", columns="setting", values="value", aggfunc="mean")
    table["n_rows"] = rows.groupby("block")["n_rows"].max()
    blocks = table.drop(index=MEAN_BLOCK, errors="ignore").sort_values("n_rows", ascending=False).head(MAX_BLOCKS)
    mean = table.loc[[MEAN_BLOCK]] if MEAN_BLOCK in table.index else blocks.mean().to_frame(MEAN_BLOCK).T
    mean["n_rows"] = blocks["n_rows"].sum()
    table = pd.concat([blocks, mean]).rename_axis("block").reset_index().assign(metric=metric)
    table.columns.name = None  # the pivot's "setting" label is not a column
    return table


def _target(rows: pd.DataFrame) -> str:
    targets = list(dict.fromkeys(rows["target"]))
    return "mean" if "mean" in targets else targets[0]


def _drawn_rows(rows: pd.DataFrame, columns: list[str]) -> str:
    """The rows behind the bars of each panel: ``country 1,234 held out / 251 random split; ...``."""
    parts = []
    for column in columns:
        table = holdout_table(rows, column).iloc[:-1]
        counts = rows[(rows["column"] == column) & (rows["block"].isin(table["block"]))]
        per = counts.drop_duplicates(["block", "setting"]).groupby("setting")["n_rows"].sum()
        parts.append(f"{column} {int(per.get('held_out', 0)):,} held out / {int(per.get('nominal', 0)):,} random split")
    return "; ".join(parts)


def holdout_figure(rows: pd.DataFrame, dataset: str, model: str, n_layers: int, out_dir: Path) -> FigureFile | None:
    """One panel per hold-out column: grouped bars per block (nominal vs held out); ``None`` without rows."""
    if rows.empty:
        return None
    columns = list(dict.fromkeys(rows["column"]))
    fig, axes = new_figure(len(columns), 1, width=12, height=4.4 * len(columns) + 0.6)
    axes = np.atleast_1d(axes)
    for ax, column in zip(axes, columns, strict=True):
        full = holdout_table(rows, column)
        table, mean = full.iloc[:-1], full.iloc[-1]
        positions = np.arange(len(table))
        for offset, (setting, (label, colour)) in zip((-0.2, 0.2), SETTINGS.items(), strict=True):
            if setting in table:
                ax.bar(positions + offset, table[setting], width=0.4, color=colour, label=label)
                ax.axhline(mean[setting], color=colour, lw=1, ls="--", label=f"{label}: mean over blocks")
        ax.set_xticks(positions, [f"{b}\n(n={n:.0f})" for b, n in zip(table["block"], table["n_rows"], strict=True)])
        ax.tick_params(axis="x", labelsize=7, rotation=45 if len(table) > 8 else 0)
        ax.set(xlabel=f"held-out block of {column} (n = entities in the block)", ylabel=METRIC_LABELS.get(
            table["metric"].iat[0], table["metric"].iat[0]))  # fmt: skip
        ax.set_title(f"by {column}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        ax.grid(axis="y", alpha=0.3)
    layers = sorted(set(rows["layer"]))
    layer = layer_text(layers[0], n_layers) if len(layers) == 1 else ", ".join(map(str, layers))
    prompt = ", ".join(sorted(set(rows["prompt"])))
    caption = Caption(dataset, model, prompt, layer, "held out: every row of a block; random split: its test rows",
                      _drawn_rows(rows, columns))  # fmt: skip
    title = f"{dataset}: held-out blocks, {model} (trained without the block vs with it)"
    return save(fig, out_dir, file_stem(dataset, model, "holdouts"), title, caption)
