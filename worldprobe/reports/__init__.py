"""Stage 4: maps, timelines, layer curves and the HTML report.

``build_report(workspace, out=None, seed=DEFAULT_SEED) -> Report`` is imported lazily, so the CLI starts without
loading matplotlib.
"""

from worldprobe.lazy import lazy_exports

__all__ = ["build_report"]
__getattr__ = lazy_exports(__name__, {"build_report": "worldprobe.reports.build"})
