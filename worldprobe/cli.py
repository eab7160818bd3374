"""The ``worldprobe`` command: global options, then one subcommand per stage. No logic of its own."""

from __future__ import annotations

import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import typer

from worldprobe import __version__, config
from worldprobe.commands import datasets, extract, interventions, neurons, probe, report, study, verify
from worldprobe.errors import WorldprobeError
from worldprobe.workspace import Workspace

app = typer.Typer(
    name="worldprobe",
    help=(
        "Probe what language models know about where and when.\n\n"
        "Stages, each reading the previous one's files in the workspace: "
        "`datasets build` -> `extract` -> `probe` -> `report`; `ask`, `steer` and `context` test the model's behaviour."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"worldprobe {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    workspace: Path = typer.Option(
        None, "--workspace", "-w", envvar=config.WORKSPACE_ENV,
        help="Workspace folder holding datasets/, activations/, results/ and reports/ (default ./workspace).",
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:  # fmt: skip
    ctx.obj = Workspace.resolve(workspace)
    from worldprobe.datasets.registry import load_user_specs

    load_user_specs(ctx.obj.datasets)  # datasets of one's own built in this workspace


for commands in (datasets, extract, probe, neurons, interventions, report, study, verify):
    commands.register(app)


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None,
    line: str | None = None,
) -> None:  # fmt: skip
    """Warnings as one line on stderr ("warning: ..."), without the source line Python shows by default."""
    typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)


def main() -> None:
    """Entry point: run the app; print a user error (a WorldprobeError or a usage error: missing option, bad value,
    unknown command) as one line with a hint and exit with code 2, and warnings as one line each. Programming
    errors keep their traceback."""
    warnings.showwarning = _one_line_warning
    for stream in (sys.stdout, sys.stderr):  # a latin-1 terminal: a path or name it cannot show is escaped, not fatal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    for ending in (signal.SIGTERM, signal.SIGHUP):  # kill, a batch system's time limit; a closed terminal
        signal.signal(ending, _terminated)
    try:
        command = plain_flags(typer.main.get_command(app))
        code = command.main(standalone_mode=False, prog_name="worldprobe")  # a typer.Exit's code is returned
    except WorldprobeError as error:
        _fail(str(error))
    except MemoryError:
        _fail("out of memory (hint: a smaller --batch-size, fewer --workers, --layers with fewer layers, or a machine "
              "with more memory; finished work is kept and the same command resumes)")  # fmt: skip
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as error:
        if not isinstance(error, _usage_errors()):
            raise
        if type(error).__name__ == "NoArgsIsHelpError":  # `worldprobe` or `worldprobe datasets` alone: the help
            if error.format_message().strip():  # (with rich, the help is already printed)
                typer.echo(error.format_message(), err=True)
            sys.exit(2)
        _fail(_usage_message(error))
    if code == INTERRUPTED:  # Ctrl-C: typer turns KeyboardInterrupt into Exit(130)
        typer.echo("interrupted (the same command resumes the work)", err=True)
    sys.exit(code if isinstance(code, int) else 0)


INTERRUPTED = 130


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (``kill``, a batch system's time limit) or SIGHUP (a closed terminal) ends the run as Ctrl-C does,
    worker processes included: such a signal reaches this process only, and the pool's workers went on extracting,
    adopted by PID 1, holding the cache locks. Each child gets SIGTERM; this process then unwinds through
    KeyboardInterrupt (exit 130, "interrupted")."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.terminate()
    raise KeyboardInterrupt


def plain_flags(command: Any) -> Any:
    """The command tree with no metavar on its on/off flags: typer's help shows ``--dry-run <bool>``, which reads as
    if the flag took a value (``run --dry-run true`` then took "true" for a study)."""
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False):
            param.metavar = ""
    if hasattr(command, "get_help_option"):  # --help is made per context, outside params
        command.get_help_option = _plain_help(command.get_help_option)
    for sub in getattr(command, "commands", {}).values():
        plain_flags(sub)
    return command


def _plain_help(make: Any) -> Any:
    def help_option(ctx: Any) -> Any:
        option = make(ctx)
        if option is not None:
            option.metavar = ""
        return option

    return help_option


def _usage_errors() -> tuple[type[Exception], ...]:
    """The usage-error types of the click that typer uses: its bundled copy (typer >= 0.25) or click itself."""
    types: list[type[Exception]] = [typer.TyperException]
    try:
        import click

        types.append(click.ClickException)
    except ImportError:  # pragma: no cover - typer bundles click
        pass
    return tuple(types)


def _usage_message(error: Exception) -> str:
    """``Invalid value for '--limit': ... (hint: worldprobe datasets build --help)`` from a click usage error."""
    ctx = getattr(error, "ctx", None)
    command = ctx.command_path if ctx is not None else "worldprobe"
    if getattr(error, "option_name", None) in ("-w", "--workspace"):
        sub = command.removeprefix("worldprobe").strip()
        return (f"{error.format_message()} (hint: --workspace is a global option and goes before the command: "
                f"`worldprobe --workspace PATH {sub} ...`, or set $WORLDPROBE_WORKSPACE)")  # fmt: skip
    return f"{error.format_message()} (hint: see `{command} --help`)"


def _fail(message: str) -> None:
    """Print ``error: <message>`` as one line on stderr and exit with code 2."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    typer.secho(f"error: {line}", err=True, fg=typer.colors.RED)
    sys.exit(2)


if __name__ == "__main__":
    main()
