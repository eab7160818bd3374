"""Stage 1: entity tables (name, text the model reads, real-world target, groups, split).

Python API::

    from worldprobe.datasets import BuildOptions, build, load
    path, report = build("world_place", "packaged", BuildOptions(limit=500, seed=0), workspace)
    table = load("world_place", workspace)
    path, report = build_own("my_places", "places.csv", "place", group_by="borough", workspace=workspace)
"""

from worldprobe.datasets.registry import DATASETS, DatasetSpec, get_spec
from worldprobe.datasets.table import BuildReport, load, load_report, write_table
from worldprobe.lazy import lazy_dir, lazy_exports

_EXPORTS = {
    **dict.fromkeys(["BuildContext", "BuildOptions", "build", "register_builder"], "worldprobe.datasets.builder"),
    "build_own": "worldprobe.datasets.sources.own",
}
__all__ = ["DATASETS", "BuildReport", "DatasetSpec", "get_spec", "load", "load_report", "write_table", *_EXPORTS]
__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(_EXPORTS)
