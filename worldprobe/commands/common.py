"""Small helpers shared by the stage CLIs: the workspace, and the options every stage checks the same way."""

from __future__ import annotations

from typing import Any

import typer

from worldprobe.checks import SEED_MAX
from worldprobe.config import DEFAULT_SEED
from worldprobe.workspace import Workspace


def workspace_of(ctx: typer.Context, *, writes: bool = True) -> Workspace:
    """The workspace chosen by the global ``--workspace`` option (or its default); a command that ``writes`` there
    is refused up front when the workspace is read-only (not with a traceback after its work)."""
    root = ctx.find_root()
    workspace = root.obj if isinstance(root.obj, Workspace) else Workspace.resolve()
    if writes:
        workspace.refuse_read_only()
    return workspace


def seed_option(help: str) -> Any:
    """``--seed N``: a whole number in 0..2**63-1 (what numpy, torch and TOML all accept)."""
    return typer.Option(DEFAULT_SEED, "--seed", min=0, max=SEED_MAX, help=help)


def count_option(*names: str, default: int | None = None, help: str) -> Any:
    """A count option (``--limit``, ``--batch-size``, ``--threads`` ...): a whole number of at least 1, or absent."""
    return typer.Option(default, *names, min=1, help=help)


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch's CPU threads (None: torch's choice)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
