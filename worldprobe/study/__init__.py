"""A whole study from one TOML file: datasets x models x prompts -> activations -> probes + controls -> report.

The package's rooms, one job each: ``settings`` (parse and check a study file: ``load_study``), ``plan`` (its work
units and the disk they need), ``runners`` (one unit carried out), ``executors`` (serial, a process pool, Ray) and
``run`` (``run_study``: the stages in order, finished units skipped).
"""

from __future__ import annotations

from worldprobe.study.executors import ProcessExecutor, SerialExecutor, make_executor
from worldprobe.study.plan import (
    STAGES,
    CacheEstimate,
    Unit,
    check_device,
    check_disk,
    disk_needed,
    estimate_disk,
    model_shape,
    plan,
)
from worldprobe.study.run import results_table, run_study
from worldprobe.study.runners import run_unit
from worldprobe.study.settings import (
    DATASET_RULES,
    EXECUTORS,
    HEAD_RULES,
    SECTIONS,
    DatasetEntry,
    Study,
    load_study,
    resolve_study_path,
    shipped_study,
)

__all__ = [
    "DATASET_RULES", "EXECUTORS", "HEAD_RULES", "SECTIONS", "STAGES", "CacheEstimate", "DatasetEntry",
    "ProcessExecutor", "SerialExecutor", "Study", "Unit", "check_device", "check_disk", "disk_needed",
    "estimate_disk", "load_study", "make_executor", "model_shape", "plan", "resolve_study_path", "results_table",
    "run_study", "run_unit", "shipped_study",
]  # fmt: skip
