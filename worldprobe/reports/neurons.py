"""Top single neurons: a ranked table and small scatters (selected on train, scored on test)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from worldprobe.reports.figure import Caption, FigureFile, file_stem, new_figure, save

TABLE_ROWS = 5
TABLE_COLUMNS = ["target", "rank", "kind", "layer", "neuron", "train_pearson", "test_spearman", "test_r2"]


def neuron_table(rows: pd.DataFrame, per_target: int = TABLE_ROWS) -> pd.DataFrame:
    """The top ``per_target`` neurons of each target over every layer and kind, by |Pearson r| on train rows (the
    selection; test rows only score them), with the columns the report shows. ``rank`` is the rank within its layer."""
    ordered = rows.assign(strength=rows["train_pearson"].abs()).sort_values(
        ["target", "strength", "layer", "neuron"], ascending=[True, False, True, True], kind="stable"
    )
    table = ordered.groupby("target", sort=False).head(per_target)
    columns = [c for c in TABLE_COLUMNS + ["cos_in", "cos_out"] if c in table.columns]
    return table[columns].reset_index(drop=True)


def neuron_figure(rows: pd.DataFrame, dataset: str, model: str, out_dir: Path) -> FigureFile | None:
    """Train Pearson vs test Spearman, and test Spearman by layer, one colour per target; ``None`` without rows."""
    rows = rows.dropna(subset=["train_pearson", "test_spearman"])
    if rows.empty:
        return None
    targets = sorted(set(rows["target"]))
    colours = dict(zip(targets, sns.color_palette("Set1", len(targets)), strict=True))
    fig, (ax_fit, ax_layer) = new_figure(1, 2, width=9, height=3.8)
    for target, group in rows.groupby("target"):
        ax_fit.scatter(group["train_pearson"].abs(), group["test_spearman"].abs(), color=colours[target], s=18,
                       label=target)  # fmt: skip
        ax_layer.scatter(group["layer"], group["test_spearman"].abs(), color=colours[target], s=18, label=target)
    limit = float(np.nanmax([rows["train_pearson"].abs().max(), rows["test_spearman"].abs().max(), 0.1]))
    ax_fit.plot([0, limit], [0, limit], color="#777", lw=1, ls="--", label="test = train")
    ax_fit.set(xlabel="|Pearson r| on train rows (selection)", ylabel="|Spearman ρ| on test rows")
    ax_fit.set_title("does the selection hold on test?")
    ax_layer.set(xlabel="layer (block index)", ylabel="|Spearman ρ| on test rows", title="where the neurons are")
    for ax in (ax_fit, ax_layer):
        ax.legend(title="target", fontsize=7, title_fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
    kinds = ", ".join(sorted(set(rows.get("kind", pd.Series(["neuron"])))))
    prompt = ", ".join(sorted(set(rows["prompt"]))) if "prompt" in rows else "not recorded"
    caption = Caption(dataset, model, prompt, "per neuron", "selected on train, scored on test", len(rows))
    title = f"{dataset}: top {kinds} neurons of {model}"
    return save(fig, out_dir, file_stem(dataset, model, "neurons"), title, caption)
