"""CLI commands of the reports stage."""

from __future__ import annotations

from pathlib import Path

import typer

from worldprobe.checks import check_call
from worldprobe.commands.common import count_option, seed_option, workspace_of
from worldprobe.errors import WorldprobeError


def report(
    ctx: typer.Context,
    out: Path = typer.Option(
        None, "--out", "-o", help="Folder for index.html, verdicts.md and figures/ (default workspace/reports)."
    ),
    seed: int = seed_option(help="Seed of the sampled points (error lines, hover, example entities)."),
    svg: bool = typer.Option(False, "--svg", help="Also write each figure as SVG (vector, for papers) beside its PNG."),
    workers: int = count_option("--workers", help="Processes drawing the datasets' sections (default 1)."),
) -> None:
    """Draw maps, timelines and layer curves from workspace/results/; write one offline index.html and verdicts.md.

    Example: worldprobe --workspace my-ws report"""
    from worldprobe.reports.build import build_report

    check_call(build_report, seed=seed, workers=1 if workers is None else workers)  # before the output folder is made
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            problem = "it is a file, not a folder" if out.is_file() else error.strerror
            raise WorldprobeError(f"cannot write the report here: {problem}", file=out, field="out",
                                  hint="--out a folder you can write") from None  # fmt: skip
    written = build_report(workspace_of(ctx), out, seed, svg=svg, workers=workers or 1)
    for note in written.missing:
        typer.secho(f"missing: {note}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{len(written.figures)} figures, {len(written.sections)} dataset(s)")
    typer.echo(str(written.index))
    typer.echo(str(written.index.with_name("verdicts.md")))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main `worldprobe` app."""
    app.command("report")(report)
