"""Small helpers shared by the stage CLIs."""

from __future__ import annotations

import typer

from worldprobe.workspace import Workspace


def workspace_of(ctx: typer.Context) -> Workspace:
    """The workspace chosen by the global ``--workspace`` option (or its default)."""
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, Workspace) else Workspace.resolve()
