"""CLI command of the single-neuron search (`worldprobe neurons`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `neurons` command to the main `worldprobe` app."""
