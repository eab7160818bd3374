"""Timelines of time datasets: predicted vs true year, error by decade or century, a strip of example entities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from worldprobe.config import DEFAULT_SEED
from worldprobe.reports.figure import Caption, FigureFile, Hover, file_stem, layer_text, new_figure, save

HOVER_SAMPLE = 1500
EXAMPLES = 12
NAME_CHARS = 38
SHORT_SPAN = 30
"""Years spanned at most by a dataset read to the decimal and binned by single years (headlines)."""


@dataclass
class TimelineInput:
    """The test predictions of one time dataset, model, prompt and layer."""

    dataset: str
    model: str
    prompt: str
    layer: int
    n_layers: int
    rows: pd.DataFrame  # one row per test entity with true_year and pred_year
    baselines: str = ""  # the median errors of predicting the train mean and the group oracle, for the title


def year_text(year: float, decimals: int = 0) -> str:
    """``1850`` or ``450 BC`` (the datasets write BC years as negative numbers), rounded to the whole year, or to
    ``decimals`` places (``2014.6``) where whole years would hide the errors."""
    value = round(float(year), decimals) if decimals else int(round(year))
    text = f"{abs(value):.{decimals}f}" if decimals else f"{abs(value)}"
    return text if value >= 0 else f"{text} BC"


def year_decimals(years: pd.Series) -> int:
    """One decimal when the years span 30 or fewer (headlines: errors under a year), else whole years."""
    return 1 if years.max() - years.min() <= SHORT_SPAN else 0


def bin_width(years: pd.Series) -> int:
    """Centuries when the years span more than 300, decades when more than 30, else single years."""
    span = years.max() - years.min()
    return 100 if span > 300 else 10 if span > SHORT_SPAN else 1


def error_by_bin(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and median absolute error (years) per decade or century of the true year, with the count."""
    width = bin_width(rows["true_year"])
    start = (np.floor(rows["true_year"] / width) * width).astype(int)
    error = (rows["pred_year"] - rows["true_year"]).abs()
    table = error.groupby(start).agg(["mean", "median", "size"]).rename_axis("start").reset_index()
    return table.assign(width=width)


def timeline_figure(data: TimelineInput, out_dir: Path, seed: int = DEFAULT_SEED) -> FigureFile:
    """Write the three-panel timeline figure of one dataset and model; return it."""
    rows = data.rows.reset_index(drop=True)
    true, pred = rows["true_year"].to_numpy(), rows["pred_year"].to_numpy()
    error = np.abs(pred - true)
    fig, (ax_scatter, ax_bins, ax_strip) = new_figure(1, 3, width=15, height=5.2, width_ratios=[1, 1, 1.25])

    ax_scatter.scatter(true, pred, s=6, alpha=0.5, linewidths=0, color="#1f77b4", label="test entity", rasterized=True)
    low, high = np.nanmin([true.min(), pred.min()]), np.nanmax([true.max(), pred.max()])
    ax_scatter.plot([low, high], [low, high], color="#d62728", lw=1, ls="--", label="identity (perfect)")
    ax_scatter.set(
        xlabel="true year (CE; negative = BC)",
        ylabel="predicted year (CE)",
    )
    ax_scatter.set_title(f"probe median |error| {np.nanmedian(error):,.0f} years"
                         + (f"\n(baselines: {data.baselines})" if data.baselines else ""), fontsize=9)  # fmt: skip
    ax_scatter.legend(loc="upper left", fontsize=8)

    bins = error_by_bin(rows)
    unit = {100: "century", 10: "decade", 1: "year"}[int(bins["width"].iloc[0])]
    ax_bins.bar(bins["start"], bins["mean"], width=bins["width"] * 0.9, align="edge", color="#8c9fbf", label="mean")
    ax_bins.plot(bins["start"] + bins["width"] / 2, bins["median"], "o-", color="#333333", ms=3, lw=1, label="median")
    ax_bins.set(xlabel=f"true year, by {unit} (CE; negative = BC)", ylabel="absolute error (years)")
    ax_bins.set_title(f"error by {unit}")
    ax_bins.legend(loc="upper right", fontsize=8)

    examples = _examples(rows, seed)
    positions = np.arange(len(examples))
    ax_strip.hlines(positions, examples["true_year"], examples["pred_year"], color="#999999", lw=1)
    ax_strip.scatter(examples["true_year"], positions, color="#2ca02c", s=25, zorder=3)
    ax_strip.scatter(examples["pred_year"], positions, color="#d62728", marker="x", s=30, zorder=3)
    ax_strip.set_yticks(positions, [_short(n) for n in _read_text(examples)], fontsize=7)
    ax_strip.invert_yaxis()
    ax_strip.set(
        xlabel="year (CE; negative = BC)", ylabel="example test entity", title="examples (sorted by true year)"
    )
    ax_strip.legend(
        handles=[
            Line2D([], [], marker="o", ls="", color="#2ca02c", label="true year"),
            Line2D([], [], marker="x", ls="", color="#d62728", label="predicted year"),
        ],
        loc="lower left", fontsize=8,
    )  # fmt: skip

    sample = np.sort(np.random.default_rng(seed).choice(len(rows), size=min(len(rows), HOVER_SAMPLE), replace=False))
    read, places = _read_text(rows), year_decimals(rows["true_year"])
    labels = [
        f"“{read.iat[i]}” — true {year_text(true[i], places)}; predicted {year_text(pred[i], places)}; "
        f"error {error[i]:,.{places}f} years"
        for i in sample
    ]
    layer = layer_text(data.layer, data.n_layers, chosen_on_train=True)
    caption = Caption(data.dataset, data.model, data.prompt, layer, "test", len(rows))
    title = f"{data.dataset}: years read from {data.model} by the probe"
    stem = file_stem(data.dataset, data.model, data.prompt, "timeline")
    return save(fig, out_dir, stem, title, caption, Hover(ax_scatter, true[sample], pred[sample], labels))


def _examples(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Up to ``EXAMPLES`` entities spread over the range of true years (one drawn per quantile band)."""
    ordered = rows.sort_values("true_year").reset_index(drop=True)
    bands = np.array_split(np.arange(len(ordered)), min(EXAMPLES, len(ordered)))
    rng = np.random.default_rng(seed)
    return ordered.iloc[[int(rng.choice(band)) for band in bands if len(band)]].reset_index(drop=True)


def _read_text(rows: pd.DataFrame) -> pd.Series:
    """What the model read (``text``: a headline, not the tweet with its URL in ``name``), else the name."""
    return rows["text"] if "text" in rows.columns else rows["name"]


def _short(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def example_table(rows: pd.DataFrame, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """The strip's entities as a table for the HTML page: name, true year, predicted year, error."""
    examples, places = _examples(rows, seed), year_decimals(rows["true_year"])
    error = (examples["pred_year"] - examples["true_year"]).abs().round(places)
    return pd.DataFrame(
        {
            "text the model read": _read_text(examples).to_numpy(),
            "true year": examples["true_year"].map(lambda y: year_text(y, places)),
            "predicted year": examples["pred_year"].map(lambda y: year_text(y, places)),
            "error (years)": error if places else error.astype(int),
        }
    )
