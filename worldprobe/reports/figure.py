"""What every report figure shares: the caption, the PNG file (an SVG copy on request), and hover points for the HTML
page."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FixedFormatter, FuncFormatter
from PIL import Image

DPI = 100
PNG_COLOURS = 256
SAFE = str.maketrans({c: "_" for c in " /\\:*?\"<>|'"})


@dataclass(frozen=True)
class Caption:
    """Where a figure's numbers come from: dataset, model, prompt, layer, split and number of entities."""

    dataset: str
    model: str
    prompt: str
    layer: str  # "12 of 24 (50% depth)", "all", "best per model"
    split: str
    n: int | str

    def __str__(self) -> str:
        return (
            f"dataset {self.dataset} · model {self.model} · prompt {self.prompt or 'empty'} · "
            f"layer {self.layer} · split {self.split} · n = {self.n}"
        )


@dataclass
class HoverPoint:
    """One point of a figure the HTML page can hover: its position as a fraction of the image, and a label."""

    x: float
    y: float
    label: str


@dataclass
class FigureFile:
    """A saved figure: its PNG path and, when asked for (:func:`svg_copies`), an SVG copy's (relative to the report
    folder), title, caption, hover points."""

    key: str
    png: str
    svg: str | None
    title: str
    caption: str
    hover: list[HoverPoint] = field(default_factory=list)


_SVG_COPIES: ContextVar[bool] = ContextVar("svg_copies", default=False)


@contextmanager
def svg_copies(enabled: bool = True) -> Iterator[None]:
    """Within this block :func:`save` also writes each figure as SVG (``worldprobe report --svg``). Off by default:
    the page shows the PNG; the SVG copies took 14% of the quick study's report time (profiled) for 4.2x the PNGs'
    bytes."""
    token = _SVG_COPIES.set(enabled)
    try:
        yield
    finally:
        _SVG_COPIES.reset(token)


def layer_text(layer: int, n_layers: int, *, chosen_on_train: bool = False) -> str:
    """``"12 of 24 (50% depth)"``, with ``, chosen on train rows`` for a train-selected layer."""
    return f"{layer} of {n_layers} ({layer / n_layers:.0%} depth{', chosen on train rows' if chosen_on_train else ''})"


def file_stem(*parts: object) -> str:
    """A file-name-safe stem from parts such as dataset, model and figure kind."""
    return "__".join(str(p).translate(SAFE) for p in parts if str(p))


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 10, height: float = 5, **kwargs) -> tuple[Figure, Any]:
    """A constrained-layout figure that leaves a strip at the bottom for the caption."""
    fig = Figure(figsize=(width, height), layout="constrained", dpi=DPI)  # no pyplot: no global backend or state
    fig.get_layout_engine().set(rect=(0, 0.045, 1, 0.955))
    return fig, fig.subplots(nrows, ncols, **kwargs)


@dataclass
class Hover:
    """Points of one axes to make hoverable in the HTML page: data coordinates and one label each."""

    ax: Axes
    x: np.ndarray
    y: np.ndarray
    labels: list[str]

    def points(self, fig: Figure) -> list[HoverPoint]:
        """Positions as fractions of the saved image (0,0 = top left); call once the layout is final."""
        pixels = self.ax.transData.transform(np.column_stack([self.x, self.y]))
        width, height = fig.canvas.get_width_height()
        return [
            HoverPoint(round(float(px / width), 5), round(float(1 - py / height), 5), label)
            for (px, py), label in zip(pixels, self.labels, strict=True)
            if np.isfinite(px) and np.isfinite(py)
        ]


def save(fig: Figure, out_dir: Path, stem: str, title: str, caption: Caption, hover: Hover | None = None) -> FigureFile:
    """Title the figure, write its caption at the bottom, save ``figures/<stem>.png`` (and ``.svg`` within
    :func:`svg_copies`), close it. Every text is shown as written (see :func:`literal`)."""
    _literal_texts(fig)
    fig.suptitle(literal(title), fontsize=12, fontweight="bold")
    width = int(fig.get_figwidth() * 17)  # characters of 8-point text across the figure
    text = "\n".join(textwrap.wrap(str(caption), width)) if len(str(caption)) > width else str(caption)
    fig.text(0.5, 0.008, literal(text), ha="center", va="bottom", fontsize=8, color="#444444")
    lines = text.count("\n") + 1
    engine = fig.get_layout_engine()
    if lines > 1 and engine is not None:  # room for every caption line below the axes
        engine.set(rect=(0, max(0.045, (lines * 11 + 6) / 72 / fig.get_figheight()), 1, 0.955))
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    _write_png(fig, figures / f"{stem}.png")  # lays the figure out once
    fig.set_layout_engine("none")  # keep that layout for the SVG and the hover positions
    points = hover.points(fig) if hover else []
    svg = None
    if _SVG_COPIES.get():
        svg = f"figures/{stem}.svg"
        with matplotlib.rc_context({"svg.hashsalt": stem}):  # stable SVG ids: the same results give the same files
            fig.savefig(out_dir / svg, dpi=DPI, metadata=_metadata("svg"))
    return FigureFile(stem, f"figures/{stem}.png", svg, title, str(caption), points)


def literal(text: str) -> str:
    """``text`` as matplotlib shows it literally: a ``$`` (in headlines, titles, names) never opens math mode, which
    garbles the text or fails on a string that is no valid math."""
    return text.replace("$", r"\$")


def _literal_texts(fig: Figure) -> None:
    """Make every text of the figure literal: titles, labels, legends, and tick labels given as strings (names)."""
    for text in fig.findobj(Text):
        text.set_text(literal(text.get_text()))
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            formatter = axis.get_major_formatter()
            if isinstance(formatter, FixedFormatter | FuncFormatter):  # labels given as strings
                axis.set_major_formatter(FuncFormatter(lambda x, pos, shown=formatter: literal(str(shown(x, pos)))))


def _write_png(fig: Figure, path: Path) -> None:
    """Save as a 256-colour PNG: a third of the size of full colour, the same look for plots."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata=_metadata("png"))
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(PNG_COLOURS).save(path, format="png", optimize=True)


def _metadata(suffix: str) -> dict[str, str | None]:
    """No creation date in the files, so the same results give byte-identical figures."""
    return {"Software": None} if suffix == "png" else {"Date": None}
