"""CLI command of the whole study (`worldprobe run`)."""

from __future__ import annotations

import socket
from pathlib import Path

import typer

from worldprobe.commands.common import count_option, workspace_of
from worldprobe.errors import WorldprobeError

RAY_CONNECT_SECONDS = 10


def register(app: typer.Typer) -> None:
    """Add the `run` command to the main `worldprobe` app."""
    app.command("run")(run)


def run(
    ctx: typer.Context,
    study: str = typer.Argument(
        None, help="A study TOML file, or the name of a shipped study (`quick`, `ladder`, `paper`). Default: quick."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the work and the disk it needs, then stop."),
    executor: str = typer.Option(
        None,
        "--executor",
        help="`serial`, `processes` (a local pool, one torch thread "
        "each) or `ray` (needs the optional `ray` extra). Default: the study's [study] "
        "executor, else serial.",
    ),
    address: str = typer.Option(None, "--address", help="Ray cluster address (e.g. `auto`); default: a local Ray."),
    workers: int = count_option(
        "--workers",
        help="Local worker processes (processes, ray); default: the study's [study] workers, else the CPU count.",
    ),
) -> None:
    """Run a whole study: datasets -> activations -> probes + controls + neurons -> ask, steer, context -> report.

    Finished work is skipped, so running the same command again after an interruption resumes it.

    Examples: worldprobe run · worldprobe run ladder · worldprobe run my_study.toml --dry-run
    """
    from worldprobe.study import (
        check_device,
        check_disk,
        estimate_disk,
        load_study,
        make_executor,
        results_table,
        run_study,
    )

    workspace = workspace_of(ctx, writes=not dry_run)  # a plan writes nothing
    parsed = load_study(study)
    chosen = executor or parsed.executor
    _check_executor(chosen, address, workers)
    estimates = estimate_disk(parsed, workspace)
    if dry_run:  # a plan: a shortfall of disk or a missing device is a warning, the exit status 0
        from worldprobe.dryrun import describe_plan

        typer.echo("\n".join(describe_plan(parsed, estimates, workspace)))
        return
    check_disk(estimates, workspace)
    workers = workers or parsed.workers
    if chosen != "ray":  # a Ray cluster's workers check their own devices
        check_device(parsed)
    outputs = run_study(parsed, workspace, executor=make_executor(chosen, address=address, num_workers=workers))
    typer.echo(results_table(parsed, workspace))
    for path in outputs.get("report", []):
        typer.echo(f"report: {path}")
        typer.echo(f"verdict table as Markdown: {Path(path).with_name('verdicts.md')}")


def _check_executor(executor: str, address: str | None, workers: int | None) -> None:
    """A known executor; --workers only for processes and ray, --address (auto, local, host:port, ray://host:port)
    only for ray, and a reachable one."""
    from worldprobe.checks import check_argument
    from worldprobe.study import EXECUTORS
    from worldprobe.study.settings import HEAD_RULES

    check_argument("workers", HEAD_RULES["workers"], workers)  # the rule of [study] workers
    if executor not in EXECUTORS:
        raise WorldprobeError(
            f"unknown executor {executor!r}", field="executor", hint=f"executors: {', '.join(EXECUTORS)}"
        )
    if workers is not None and executor == "serial":
        raise WorldprobeError("--workers applies to --executor processes or ray; the serial run would ignore it",
                              field="workers", hint="add --executor processes, or leave it out")  # fmt: skip
    if address is not None and executor != "ray":
        raise WorldprobeError(f"--address applies to --executor ray; the {executor} run would ignore it",
                              field="address", hint="add --executor ray, or leave it out")  # fmt: skip
    if address is not None and address not in ("auto", "local"):
        host, colon, port = address.removeprefix("ray://").rpartition(":")
        if not (colon and host and port.isdigit()):
            raise WorldprobeError(f"cannot read the Ray address {address!r}", field="address",
                                  hint="auto, local, host:port or ray://host:port")  # fmt: skip
        try:  # Ray itself waits for an unreachable head node for ever
            socket.create_connection((host, int(port)), timeout=RAY_CONNECT_SECONDS).close()
        except OSError as error:
            raise WorldprobeError(f"cannot reach the Ray cluster at {address}: {error.strerror or error}",
                                  field="address", hint="start it with `ray start --head`, or check host and port",
                                  ) from None  # fmt: skip
