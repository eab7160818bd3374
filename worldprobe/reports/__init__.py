"""Stage 4: maps, timelines, layer curves and the HTML report.

``build_report(workspace, out=None, seed=DEFAULT_SEED) -> Report`` and ``place_predictions(results_folder) ->
GeoDataFrame`` (a place run's predicted and true positions and errors) are imported lazily, so the CLI starts without
loading matplotlib or geopandas.
"""

from worldprobe.lazy import lazy_dir, lazy_exports

_EXPORTS = {"build_report": "worldprobe.reports.build", "place_predictions": "worldprobe.reports.geography"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(_EXPORTS)
