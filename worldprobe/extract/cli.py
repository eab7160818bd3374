"""CLI commands of the extract stage."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main `worldprobe` app."""
