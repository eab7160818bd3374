"""Maps of place datasets: test entities at their predicted and true positions over real outlines, and error lines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D

from worldprobe.config import DEFAULT_SEED
from worldprobe.reports.figure import Caption, FigureFile, Hover, file_stem, layer_text, new_figure, save
from worldprobe.reports.geography import MapSpec, error_km, map_for, outlines, projected_outlines, regions

ERROR_SAMPLE = 400
HOVER_SAMPLE = 1500
REGION_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000", "#999999"]
"""Okabe-Ito's colour-blind-safe colours: tab10's lavender (Oceania) read as grey on the grey land."""


@dataclass
class MapInput:
    """The test predictions of one dataset, model, prompt and layer."""

    dataset: str
    model: str
    prompt: str
    layer: int
    n_layers: int
    rows: pd.DataFrame  # one row per test entity with true_/pred_ latitude and longitude
    baselines: str = ""  # the median errors of predicting the train mean and the group oracle, for the title


def map_figures(data: MapInput, out_dir: Path, seed: int = DEFAULT_SEED) -> tuple[list[FigureFile], list[str]]:
    """Write the positions figure (predicted | true) and the error-lines figure; return them and any notes."""
    spec = map_for(data.dataset, data.rows["true_latitude"], data.rows["true_longitude"])
    table, note = outlines(spec.name)
    rows = data.rows.reset_index(drop=True)
    region = regions(spec, rows, table)
    palette = dict(zip(sorted(region.unique()), sns.color_palette(REGION_PALETTE, region.nunique()), strict=True))
    colours = np.array([palette[r] for r in region])
    true_x, true_y = spec.project(rows["true_longitude"], rows["true_latitude"])
    pred_x, pred_y = spec.project(rows["pred_longitude"], rows["pred_latitude"].clip(-90, 90))
    km = error_km(rows)
    layer = layer_text(data.layer, data.n_layers, chosen_on_train=True)
    base = Caption(data.dataset, data.model, data.prompt, layer, "test", len(rows))
    stem = file_stem(data.dataset, data.model, data.prompt, "map")

    fig, (ax_pred, ax_true) = new_figure(1, 2, width=13, height=4.6 if spec.name == "world" else 5)
    for ax, x, y, what in ((ax_pred, pred_x, pred_y, "predicted"), (ax_true, true_x, true_y, "true")):
        _draw_background(ax, spec, table, true_x, true_y)
        ax.scatter(x, y, c=colours, s=6, alpha=0.7, linewidths=0, rasterized=True)
        ax.set_title(_error_title(km, data.baselines) if what == "predicted" else "true position", fontsize=9)
    _region_legend(ax_true, palette, spec.region_label)
    sample = _sample(len(rows), HOVER_SAMPLE, seed)
    hover = Hover(ax_pred, pred_x[sample], pred_y[sample], [_label(rows.iloc[i], km[i]) for i in sample])
    title = f"{data.dataset}: test entities placed by the {data.model} probe, coloured by true {spec.region_label}"
    positions = save(fig, out_dir, stem, title, base, hover)

    fig, ax = new_figure(1, 1, width=9, height=5.6)
    _draw_background(ax, spec, table, true_x, true_y)
    sample = _sample(len(rows), ERROR_SAMPLE, seed)
    segments = np.stack([np.column_stack([true_x, true_y]), np.column_stack([pred_x, pred_y])], axis=1)[sample]
    ax.add_collection(LineCollection(segments, colors=colours[sample], linewidths=0.7, alpha=0.6))
    ax.scatter(true_x[sample], true_y[sample], c=colours[sample], s=8, linewidths=0, label="true position")
    ax.scatter(pred_x[sample], pred_y[sample], c=colours[sample], s=14, marker="x", linewidths=0.8, label="predicted")
    handles = [
        Line2D([], [], marker="o", ls="", color="#555", label="true position"),
        Line2D([], [], marker="x", ls="", color="#555", label="predicted position"),
        Line2D([], [], color="#555", label="error (true → predicted)"),
    ]
    ax.add_artist(ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.9))
    _region_legend(ax, palette, spec.region_label, loc="lower right")
    ax.set_title(f"a seeded sample of {len(sample)} of {len(rows)} test entities; "
                 f"probe median error {np.nanmedian(km):,.0f} km over all {len(rows)}", fontsize=9)  # fmt: skip
    title = f"{data.dataset}: prediction errors of the {data.model} probe"
    drawn = Caption(data.dataset, data.model, data.prompt, layer, "test", len(sample))
    errors = save(fig, out_dir, file_stem(data.dataset, data.model, data.prompt, "errors"), title, drawn)
    return [positions, errors], [note] if note else []


def _error_title(km: np.ndarray, baselines: str) -> str:
    """The probe's median error beside the errors of the baselines that need no model."""
    text = f"predicted position: probe median error {np.nanmedian(km):,.0f} km"
    return f"{text}\n(baselines: {baselines})" if baselines else text


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=min(n, k), replace=False))


def _label(row: pd.Series, km: float) -> str:
    """What the model read (its input text), the source name when it differs, the country, true and predicted place."""
    read = str(row["text"]) if isinstance(row.get("text"), str) else str(row["name"])
    name = f" [{row['name']}]" if isinstance(row.get("name"), str) and row["name"] != read else ""
    where = f" ({row['country']})" if isinstance(row.get("country"), str) else ""
    return (
        f"“{read}”{name}{where} — true {_latlon(row['true_latitude'], row['true_longitude'])}; "
        f"predicted {_latlon(row['pred_latitude'], row['pred_longitude'])}; error {km:,.0f} km"
    )


def _latlon(lat: float, lon: float) -> str:
    return f"{abs(lat):.2f}°{'N' if lat >= 0 else 'S'} {abs(lon):.2f}°{'E' if lon >= 0 else 'W'}"


def _draw_background(ax: Axes, spec: MapSpec, table: pd.DataFrame | None, x: np.ndarray, y: np.ndarray) -> None:
    """Outlines (when available), equal aspect, the view of the map, km axis labels."""
    if table is not None:
        projected_outlines(spec.name).plot(ax=ax, facecolor="#eeeeee", edgecolor="#9a9a9a", linewidth=0.4, aspect=None,
                                           add_labels=False)  # the axes are labelled below
    if spec.view is not None:
        lon0, lon1, lat0, lat1 = spec.view
        grid_lon, grid_lat = np.meshgrid(np.linspace(lon0, lon1, 30), np.linspace(lat0, lat1, 30))
        vx, vy = spec.project(grid_lon.ravel(), grid_lat.ravel())
    elif table is not None:
        vx, vy = spec.project(np.array([-180, 180, 0, 0]), np.array([0, 0, -90, 90]))
    else:
        vx, vy = x, y
    pad_x, pad_y = 0.03 * np.ptp(vx), 0.03 * np.ptp(vy)
    ax.set_xlim(vx.min() - pad_x, vx.max() + pad_x)
    ax.set_ylim(vy.min() - pad_y, vy.max() + pad_y)
    ax.set_aspect("equal")
    ax.set_xlabel(f"easting (km, {spec.projection_name})")
    ax.set_ylabel("northing (km)")
    ax.tick_params(labelsize=7)


def _region_legend(ax: Axes, palette: dict[str, tuple], label: str, loc: str = "lower left") -> None:
    handles = [Line2D([], [], marker="o", ls="", color=colour, label=name) for name, colour in palette.items()]
    ax.legend(handles=handles, title=f"true {label}", loc=loc, fontsize=7, title_fontsize=8, framealpha=0.9)
