"""Stage 4: maps, timelines, layer curves and the HTML report.

``build_report(workspace, out=None, seed=DEFAULT_SEED) -> Report`` is imported lazily, so the CLI starts without
loading matplotlib.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_report"]


def __getattr__(name: str) -> Any:
    if name == "build_report":
        from worldprobe.reports.build import build_report

        return build_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
