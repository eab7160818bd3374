"""The short table `worldprobe run` prints at the end: best layer and test R² per dataset and model."""

from __future__ import annotations

import pandas as pd

from worldprobe.workspace import Workspace


def collect_metrics(workspace: Workspace) -> pd.DataFrame:
    """Every metrics.parquet under the workspace's results, concatenated (empty when there are none)."""
    frames = [pd.read_parquet(path) for path in sorted(workspace.results.glob("*/metrics.parquet"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def best_layers(metrics: pd.DataFrame, datasets: list[str] | None = None) -> pd.DataFrame:
    """Per dataset, model, prompt and probe: the layer with the best test R² (mean over targets) and its R²."""
    if metrics.empty:
        return pd.DataFrame()
    main = metrics[
        (metrics["control"] == "none") & (metrics["split"] == "test") & (metrics["metric"] == "r2")
        & (metrics["target"] == "mean")
    ]  # fmt: skip
    if datasets is not None:
        main = main[main["dataset"].isin(datasets)]
    keys = ["dataset", "model", "prompt", "probe"]
    best = main.loc[main.groupby(keys)["value"].idxmax()]
    table = best[[*keys, "layer", "n_layers", "value"]].rename(columns={"value": "test_r2"})
    return table.sort_values(keys).reset_index(drop=True)


def summary_table(workspace: Workspace, study=None) -> str:
    """A plain-text table of the best layers (for the end of a study run)."""
    datasets = [entry.name for entry in study.datasets] if study is not None else None
    table = best_layers(collect_metrics(workspace), datasets)
    if table.empty:
        return "no probe results yet"
    return table.to_string(index=False, float_format=lambda v: f"{v:.3f}")
