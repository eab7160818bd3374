"""Render a built report into one ``index.html`` (jinja2), with every asset inline or next to it: no network."""

from __future__ import annotations

import json

import jinja2
import pandas as pd

import worldprobe
from worldprobe.reports.build import Report
from worldprobe.reports.figure import FigureFile

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("worldprobe.reports", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def table_html(table: pd.DataFrame) -> str:
    """A DataFrame as an escaped HTML table (numbers to 3 significant decimals)."""
    return table.to_html(
        index=False, escape=True, border=0, classes="data", float_format=lambda v: f"{v:.3f}", na_rep="–"
    )


def hover_json(figure: FigureFile) -> str:
    """The figure's hover points as compact JSON for the page script (``[[x, y, label], ...]``)."""
    points = [[p.x, p.y, p.label] for p in figure.hover]
    return json.dumps(points, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def write_html(report: Report) -> None:
    """Write ``report.index`` from the ``index.html.j2`` template."""
    ENVIRONMENT.filters["table_html"] = table_html
    ENVIRONMENT.filters["hover_json"] = hover_json
    html = ENVIRONMENT.get_template("index.html.j2").render(
        report=report,
        summary_html=table_html(report.summary) if not report.summary.empty else "",
        version=worldprobe.__version__,
        figure_count=len(report.figures),
    )
    report.index.parent.mkdir(parents=True, exist_ok=True)
    report.index.write_text(html, encoding="utf-8")
