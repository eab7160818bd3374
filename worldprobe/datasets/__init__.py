"""Stage 1: entity tables (name, text the model reads, real-world target, groups, split)."""

from worldprobe.datasets.registry import DATASETS, DatasetSpec, get_spec
from worldprobe.datasets.table import BuildReport, load, load_report, write_table

__all__ = ["DATASETS", "BuildReport", "DatasetSpec", "get_spec", "load", "load_report", "write_table"]
