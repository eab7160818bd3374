"""Small helpers shared by the stage CLIs: the workspace, and the options every stage checks the same way."""

from __future__ import annotations

from typing import Any

import typer

from worldprobe.checks import whole_number
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
    """``--seed N``: a whole number in 0..2**63-1 (what numpy, torch and TOML all accept), checked by the seed rule
    of the function the command calls (``worldprobe.checks.SEED``): the same error from the CLI, the API and a study."""
    return typer.Option(DEFAULT_SEED, "--seed", help=help)


def count_option(*names: str, default: int | None = None, help: str) -> Any:
    """A count option (``--limit``, ``--batch-size``, ``--threads`` ...): a whole number, or absent. Its range is the
    rule of the argument it becomes, checked by the function the command calls before any work (no second bound
    here: the CLI, the API and a study file give the same error)."""
    return typer.Option(default, *names, help=help)


def set_threads(threads: int | None) -> None:
    """``--threads N``: torch's CPU threads (None: torch's choice), at least 1."""
    whole_number(threads, "threads")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def quantization_of(load_in_4bit: bool, load_in_8bit: bool) -> str | None:
    """``--load-in-4bit`` / ``--load-in-8bit`` as a quantization name (one of them at most)."""
    from worldprobe.errors import WorldprobeError

    if load_in_4bit and load_in_8bit:
        raise WorldprobeError("choose one of --load-in-4bit and --load-in-8bit")
    return "4bit" if load_in_4bit else "8bit" if load_in_8bit else None


def model_request(model: str, *, load_in_4bit: bool = False, load_in_8bit: bool = False, **options: Any) -> Any:
    """The :class:`~worldprobe.extract.models.ModelRequest` a command's model options make (``dtype``, ``device``,
    ``gguf_file``, ``revision``, ``max_memory`` as given; the quantization from the two flags)."""
    from worldprobe.extract.options import ModelRequest

    return ModelRequest(model, quantization=quantization_of(load_in_4bit, load_in_8bit), **options)
