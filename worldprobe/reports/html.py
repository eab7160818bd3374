"""Render a built report into one ``index.html`` (jinja2), with every asset inline or next to it: no network.

Every text from the results (entity names, model names, groups, notes) is escaped for the context it lands in:
HTML text and attribute values by jinja2's autoescaping (on for every template), tables by pandas, link targets
URL-quoted (``urlencode``), and the hover points as JSON inside ``<script type="application/json">``, where
:func:`hover_json` writes ``<``, ``>`` and ``&`` as ``\\u`` escapes so no name can end or re-open the script
element (``</script>``, ``<!--``).
"""

from __future__ import annotations

import json

import jinja2
import pandas as pd

import worldprobe
from worldprobe.reports.content import Report
from worldprobe.reports.figure import FigureFile

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("worldprobe.reports", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def table_html(table: pd.DataFrame) -> str:
    """A DataFrame as an escaped HTML table (numbers to 3 significant decimals) in a box that scrolls sideways when the
    table is wider than the page; an interval "[a, b]" never breaks across lines (its comma is followed by a no-break
    space)."""
    unbroken = table.map(lambda value: value.replace(", ", ",\u00a0") if isinstance(value, str) else value)
    html = unbroken.to_html(
        index=False, escape=True, border=0, classes="data", float_format=lambda v: f"{v:.3f}", na_rep="–"
    )
    return f'<div class="scroll">{html}</div>'


SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})
"""JSON escapes for what could end or change a script element (``</script>``, ``<!--``, ``&``) or a JavaScript
line (U+2028, U+2029): ``JSON.parse`` reads them back as the same characters."""


def hover_json(figure: FigureFile) -> str:
    """The figure's hover points as compact JSON for the page script (``[[x, y, label], ...]``), safe inside
    ``<script type="application/json">`` whatever the labels hold."""
    points = [[p.x, p.y, p.label] for p in figure.hover]
    return json.dumps(points, ensure_ascii=False, separators=(",", ":"), allow_nan=False).translate(SCRIPT_SAFE)


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
