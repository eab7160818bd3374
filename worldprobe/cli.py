"""The ``worldprobe`` command: global options, then one subcommand per stage. No logic of its own."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import typer

from worldprobe import __version__, study_cli, verify
from worldprobe.datasets import cli as datasets_cli
from worldprobe.errors import WorldprobeError
from worldprobe.extract import cli as extract_cli
from worldprobe.probes import cli as probes_cli
from worldprobe.probes import neurons_cli
from worldprobe.reports import cli as reports_cli
from worldprobe.workspace import Workspace

app = typer.Typer(
    name="worldprobe",
    help=(
        "Probe what language models know about where and when.\n\n"
        "Stages, each reading the previous one's files in the workspace: "
        "`datasets build` -> `extract` -> `probe` -> `report`."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"worldprobe {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    workspace: Path = typer.Option(
        None, "--workspace", "-w", envvar="WORLDPROBE_WORKSPACE",
        help="Workspace folder holding datasets/, activations/, results/ and reports/ (default ./workspace).",
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:  # fmt: skip
    ctx.obj = Workspace.resolve(workspace)


for stage in (datasets_cli, extract_cli, probes_cli, neurons_cli, reports_cli, study_cli, verify):
    stage.register(app)


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None,
    line: str | None = None,
) -> None:  # fmt: skip
    """Warnings as one line on stderr ("warning: ..."), without the source line Python shows by default."""
    typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)


def main() -> None:
    """Entry point: run the app and print user errors as one line (exit code 2), no traceback."""
    warnings.showwarning = _one_line_warning
    try:
        code = app(standalone_mode=False)  # click returns the code of a typer.Exit instead of raising it here
    except WorldprobeError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as error:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
