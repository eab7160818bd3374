"""The report's summary table: per dataset and model, the best layer, its test metrics and every control."""

from __future__ import annotations

import numpy as np
import pandas as pd

from worldprobe.datasets.registry import DATASETS
from worldprobe.reports.results import best_layers, primary_prompt

CONTROL_ORDER = ("shuffled", "random_init", "embedding", "lexical", "group_oracle", "alt_world")


def _value(rows: pd.DataFrame, metric: str, control: str, layer: int | None = None) -> float:
    """Mean test value of ``metric`` (target ``mean``) for a control, at one layer or at the control's best layer."""
    rows = rows[
        (rows["split"] == "test")
        & (rows["target"] == "mean")
        & (rows["metric"] == metric)
        & (rows["control"] == control)
    ]
    if rows.empty:
        return np.nan
    if layer is not None and (rows["layer"] == layer).any():
        return float(rows.loc[rows["layer"] == layer, "value"].mean())
    return float(rows.groupby("layer", dropna=False)["value"].mean().max())


def summary_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset and model (primary prompt; ridge when there are several probes).

    Columns: dataset, model, prompt, probe, n_layers, best_layer, rel_depth, r2, spearman, within_group_r, and for each
    control present ``<control>_r2`` at its own best layer; ``alt_world_gap`` is R²(true) - R²(alternative) at the
    probe's best layer.
    """
    best = best_layers(metrics)
    if best.empty:
        return pd.DataFrame()
    rows = []
    for dataset, per_dataset in best.groupby("dataset", sort=False):
        prompt = primary_prompt(per_dataset["prompt"])
        chosen = per_dataset[per_dataset["prompt"] == prompt]
        for model, per_model in chosen.groupby("model"):
            top = per_model.sort_values("probe", key=lambda p: p != "ridge").iloc[0]
            scope = metrics[
                (metrics["dataset"] == dataset) & (metrics["model"] == model) & (metrics["prompt"] == prompt)
            ]
            layer = int(top["layer"])
            row = dict(dataset=dataset, model=model, prompt=prompt, probe=top["probe"], n_layers=int(top["n_layers"]))
            row |= dict(best_layer=layer, rel_depth=float(top["rel_depth"]), r2=float(top["r2"]))
            row["spearman"] = _value(scope[scope["probe"] == top["probe"]], "spearman", "none", layer)
            row["within_group_r"] = _value(scope, "pearson", "within_group", layer)
            present = set(scope["control"])
            for control in (c for c in CONTROL_ORDER if c in present):
                if control == "alt_world":
                    gap = _value(scope, "r2_gap", control, layer)
                    row["alt_world_gap"] = gap if np.isfinite(gap) else row["r2"] - _value(scope, "r2", control, layer)
                else:
                    row[f"{control}_r2"] = _value(scope, "r2", control)  # a flat control has one value
            rows.append(row)
    order = {name: i for i, name in enumerate(DATASETS)}
    table = pd.DataFrame(rows)
    return table.sort_values(["dataset", "model"], key=lambda c: c.map(order).fillna(len(order)) if c.name == "dataset"
                             else c, kind="stable").reset_index(drop=True)  # fmt: skip


COLUMN_TITLES = {
    "dataset": "dataset",
    "model": "model",
    "prompt": "prompt",
    "probe": "probe",
    "best_layer": "best layer",
    "r2": "test R²",
    "spearman": "Spearman ρ",
    "within_group_r": "within-group r",
    "shuffled_r2": "shuffled R²",
    "random_init_r2": "random-init R²",
    "embedding_r2": "embedding R²",
    "lexical_r2": "lexical R²",
    "group_oracle_r2": "group-oracle R²",
    "alt_world_gap": "alt-world gap ΔR²",
}


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The summary with readable headings, the best layer as ``l/L (depth%)``, numbers to 3 decimals, "–" for none."""
    if table.empty:
        return table
    shown = table.copy()
    shown["best_layer"] = [
        f"{layer}/{n} ({depth:.0%})"
        for layer, n, depth in zip(shown["best_layer"], shown["n_layers"], shown["rel_depth"], strict=True)
    ]
    columns = [c for c in COLUMN_TITLES if c in shown.columns]
    shown = shown[columns]
    numeric = shown.select_dtypes("number").columns
    shown[numeric] = shown[numeric].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}")
    return shown.rename(columns=COLUMN_TITLES)
