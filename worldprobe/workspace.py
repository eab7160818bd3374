"""The one place that knows the workspace folder layout and the download cache location."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from worldprobe import config
from worldprobe.checks import PathRule, check_argument
from worldprobe.errors import WorldprobeError

STAGES = ("datasets", "activations", "results", "reports")


@dataclass(frozen=True)
class Workspace:
    """A workspace folder with one subfolder per stage (created on first use)."""

    root: Path

    def __post_init__(self) -> None:
        if not isinstance(self.root, str | os.PathLike):
            raise TypeError(f"Workspace(root) takes a folder path, not {type(self.root).__name__}")
        object.__setattr__(self, "root", Path(self.root).expanduser())

    @classmethod
    def resolve(cls, root: str | Path | None = None) -> Workspace:
        """The workspace given, else ``$WORLDPROBE_WORKSPACE``, else ``./workspace``."""
        chosen = root or os.environ.get(config.WORKSPACE_ENV) or config.DEFAULT_WORKSPACE
        return cls(Path(chosen).expanduser().resolve())

    def refuse_read_only(self) -> None:
        """A WorldprobeError, before any work, when the workspace (or the folder it would be made in) cannot be
        written: a read-only mount or a shared folder without write permission. The alternative was a traceback at
        the first write, after the work (a whole layer sweep) was done."""
        folder = self.root
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not os.access(folder, os.W_OK):
            raise WorldprobeError("the workspace cannot be written here (read-only)", file=folder,
                                  hint=f"use a writable folder: --workspace DIR or ${config.WORKSPACE_ENV} "
                                  "(copy the workspace there to keep its work)")  # fmt: skip

    def relative(self, path: str | Path) -> str:
        """``path`` as a product records it: relative to the workspace when inside it (``activations/<cache>``), so
        a moved or copied workspace still names its own files; else as given."""
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    def stage_dir(self, stage: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        path = self.root / stage
        _make_folder(path, "the workspace", f"--workspace DIR or ${config.WORKSPACE_ENV}")
        return path

    @property
    def datasets(self) -> Path:
        return self.stage_dir("datasets")

    @property
    def activations(self) -> Path:
        return self.stage_dir("activations")

    @property
    def results(self) -> Path:
        return self.stage_dir("results")

    @property
    def reports(self) -> Path:
        return self.stage_dir("reports")

    def dataset_table(self, name: str) -> Path:
        return self.datasets / f"{name}.parquet"

    def dataset_report(self, name: str) -> Path:
        return self.datasets / f"{name}.build.json"


WORKSPACE = PathRule(also=(Workspace,), noun="folder path")
"""The rule of a ``workspace`` argument (:func:`worldprobe.checks.checked_arguments`)."""


def as_workspace(workspace: Workspace | str | Path | None) -> Workspace:
    """Accept a Workspace, a path or None (default resolution) wherever the API takes a workspace."""
    if isinstance(workspace, Workspace):
        return workspace
    return Workspace.resolve(check_argument("workspace", WORKSPACE, workspace))


def cache_dir(*parts: str) -> Path:
    """The download cache (``$WORLDPROBE_CACHE`` or the platform user cache), with optional subfolders."""
    root = os.environ.get(config.CACHE_ENV) or platformdirs.user_cache_dir(config.APP_NAME)
    path = Path(root).expanduser().joinpath(*parts)
    _make_folder(path, "the download cache", f"set ${config.CACHE_ENV} to a folder you can write")
    return path


def _make_folder(path: Path, what: str, hint: str) -> None:
    """Create ``path`` (and parents); a file in the way or a folder that cannot be written is a user error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorldprobeError(f"cannot use {what} here: {error.strerror}", file=path, hint=hint) from None
