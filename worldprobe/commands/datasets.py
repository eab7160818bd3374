"""CLI commands of the datasets stage: ``worldprobe datasets build | list | show``."""

from __future__ import annotations

import time

import pandas as pd
import typer

from worldprobe.commands.common import count_option, seed_option, workspace_of
from worldprobe.datasets.builder import DEFAULT_SOURCE, SOURCE_DESCRIPTIONS, BuildOptions, available, build
from worldprobe.datasets.registry import DATASETS, get_spec
from worldprobe.datasets.table import load, load_report

app = typer.Typer(
    help="Stage 1: entity tables (names, the text the model reads, real-world targets, groups and split).",
    no_args_is_help=True,
)
TOP_GROUPS = 12


@app.command("build")
def build_command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help=f"Dataset to build: {', '.join(DATASETS)}."),
    source: str = typer.Option(
        DEFAULT_SOURCE, "--source", "-s", help=f"Where the data come from: {', '.join(SOURCE_DESCRIPTIONS)}."
    ),
    from_path: str = typer.Option(
        None, "--from", help="A local file or URL to read instead of the source's default location."
    ),
    seed: int = seed_option(help="Seed of every random choice (splits, sampling)."),
    drop_split_leaks: bool = typer.Option(
        False, "--drop-split-leaks", help="Drop the test side of texts that sit on both sides of the split."
    ),
    limit: int = count_option("--limit", help="A seeded sample of N rows (--seed), kept in table order."),
    sha256: str = typer.Option(
        None, "--sha256", help="The input file's sha256: checked, and a cached --from URL is then used offline."
    ),
) -> None:
    """Build a dataset into <workspace>/datasets/<name>.parquet and its <name>.build.json report."""
    started = time.perf_counter()
    options = BuildOptions(from_path=from_path, seed=seed, drop_split_leaks=drop_split_leaks, limit=limit,
                           extra={"sha256": sha256} if sha256 else {})  # fmt: skip
    path, report = build(name, source, options, workspace_of(ctx))
    n_test = int(pd.read_parquet(path, columns=["is_test"])["is_test"].sum())
    seconds = time.perf_counter() - started
    typer.echo(f"{name}: {report.rows_out:,} rows ({n_test:,} test) from {source} in {seconds:.1f} s -> {path}")
    for reason, count in report.dropped.items():
        typer.echo(f"  dropped {count:,} row(s): {reason}")
    for note in report.notes:
        typer.echo(f"  note: {note}")


@app.command("list")
def list_command() -> None:
    """List the datasets, the sources each can be built from, and what the sources are."""
    sources = available()
    typer.echo("datasets:")
    for spec in DATASETS.values():
        built_from = ", ".join(f"{s} (default)" if s == DEFAULT_SOURCE else s for s in sources.get(spec.name, []))
        typer.echo(f"  {spec.name:<18} {spec.kind:<5} {spec.description}")
        typer.echo(f"  {'':<18} sources: {built_from or 'none yet'}; groups: {', '.join(spec.group_columns)}")
    typer.echo("sources:")
    for source, description in SOURCE_DESCRIPTIONS.items():
        typer.echo(f"  {source:<18} {description}")


@app.command("show")
def show_command(ctx: typer.Context, name: str = typer.Argument(..., help="A built dataset.")) -> None:
    """Summarise a built dataset: source, split sizes, target ranges, counts by type and group, drops."""
    workspace = workspace_of(ctx)
    spec = get_spec(name)
    table = load(name, workspace)
    report = load_report(name, workspace)
    n_test = int(table["is_test"].sum())
    typer.echo(f"{name} ({spec.description})")
    typer.echo(f"  source: {report['source']}; fingerprint {report['fingerprint']}")
    for item in report["inputs"]:
        typer.echo(f"  input: {item.get('what')} (sha256 {str(item.get('sha256', '?'))[:12]}...)")
    typer.echo(
        f"  rows: {len(table):,} (train {len(table) - n_test:,}, test {n_test:,}); split: {report['split_rule']}"
    )
    typer.echo(f"  rows in: {report['rows_in']:,}; dropped: {_counts(report['dropped']) or 'none'}")
    leaks = report.get("details", {}).get("split_leaks")
    if leaks is not None:
        typer.echo(f"  texts on both sides of the split: {len(leaks)}")
    for target in spec.targets:
        for side, rows in (("train", table[~table["is_test"]]), ("test", table[table["is_test"]])):
            if len(rows):
                values = rows[target]
                typer.echo(f"  {target} ({side}): {values.min():.6g} .. {values.max():.6g}, mean {values.mean():.6g}")
    for column in dict.fromkeys(("entity_type", *spec.group_columns)):
        counts = table[column].value_counts()
        shown = _counts(counts.head(TOP_GROUPS).to_dict())
        more = f", ... {len(counts) - TOP_GROUPS} more" if len(counts) > TOP_GROUPS else ""
        typer.echo(f"  by {column} ({len(counts)} groups): {shown}{more}")


def _counts(counts: dict) -> str:
    return ", ".join(f"{key} {value:,}" for key, value in counts.items())


def register(main: typer.Typer) -> None:
    """Add this stage's commands to the main `worldprobe` app."""
    main.add_typer(app, name="datasets")
