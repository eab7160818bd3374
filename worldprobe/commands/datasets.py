"""CLI commands of the datasets stage: ``worldprobe datasets build | list | show``."""

from __future__ import annotations

import time

import pandas as pd
import typer

from worldprobe.commands.common import count_option, seed_option, workspace_of
from worldprobe.datasets.builder import DEFAULT_SOURCE, SOURCE_DESCRIPTIONS, BuildOptions, available, build
from worldprobe.datasets.registry import DATASETS, all_specs, get_spec, load_user_specs
from worldprobe.datasets.table import load, load_report
from worldprobe.errors import WorldprobeError

app = typer.Typer(
    help="Stage 1: entity tables (names, the text the model reads, real-world targets, groups and split).",
    no_args_is_help=True,
)
TOP_GROUPS = 12


@app.command("build")
def build_command(
    ctx: typer.Context,
    name: str = typer.Argument(..., help=f"Dataset to build: {', '.join(DATASETS)}, or a name of your own with "
                               "--from FILE.csv --kind place|time."),
    source: str = typer.Option(
        None, "--source", "-s", help=f"Where the data come from: {', '.join(SOURCE_DESCRIPTIONS)} (default: "
        f"{DEFAULT_SOURCE}; csv with --kind)."
    ),
    from_path: str = typer.Option(
        None, "--from", help="A local file or URL to read instead of the source's default location; with --kind, "
        "your own CSV (name, latitude, longitude | year; optional entity_type and group columns)."
    ),
    kind: str = typer.Option(None, "--kind", help="place | time: build a dataset of your own from --from FILE.csv."),
    group_by: str = typer.Option(None, "--group-by", help="With --kind: the column that groups your entities "
                                 "(default: 10° cells for places, centuries or decades for time)."),
    test_size: float = typer.Option(0.2, "--test-size", min=0.01, max=0.99, help="With --kind: the share of test "
                                    "entities (a seeded split grouped by text)."),
    seed: int = seed_option(help="Seed of every random choice (splits, sampling)."),
    drop_split_leaks: bool = typer.Option(
        False, "--drop-split-leaks", help="Drop the test side of texts that sit on both sides of the split."
    ),
    limit: int = count_option("--limit", help="A seeded sample of N rows (--seed), kept in table order."),
    sha256: str = typer.Option(
        None, "--sha256", help="The input file's sha256: checked, and a cached --from URL is then used offline."
    ),
) -> None:
    """Build a dataset into <workspace>/datasets/<name>.parquet and its <name>.build.json report.

    Examples: worldprobe datasets build world_place --limit 2000 ·
    worldprobe datasets build my_places --from places.csv --kind place --group-by borough"""
    started = time.perf_counter()
    workspace = workspace_of(ctx)
    if kind is not None or (name not in DATASETS and from_path and source in (None, "csv")):
        if not from_path or kind is None:
            raise WorldprobeError(f"a dataset of your own ({name}) needs --from FILE.csv and --kind place|time",
                                  field="kind" if from_path else "from_path")  # fmt: skip
        if source not in (None, "csv") or drop_split_leaks or sha256:
            raise WorldprobeError("--source, --drop-split-leaks and --sha256 do not apply to a CSV of your own",
                                  field="source")  # fmt: skip
        from worldprobe.datasets.sources.own import build_own

        path, report = build_own(name, from_path, kind, group_by=group_by, test_size=test_size, seed=seed,
                                 limit=limit, workspace=workspace)  # fmt: skip
        source = "csv"
    else:
        if group_by is not None or test_size != 0.2:
            raise WorldprobeError("--group-by and --test-size apply to a dataset of your own (--kind)",
                                  field="group_by" if group_by is not None else "test_size")  # fmt: skip
        source = source or DEFAULT_SOURCE
        options = BuildOptions(from_path=from_path, seed=seed, drop_split_leaks=drop_split_leaks, limit=limit,
                               extra={"sha256": sha256} if sha256 else {})  # fmt: skip
        path, report = build(name, source, options, workspace)
    n_test = int(pd.read_parquet(path, columns=["is_test"])["is_test"].sum())
    seconds = time.perf_counter() - started
    typer.echo(f"{name}: {report.rows_out:,} rows ({n_test:,} test) from {source} in {seconds:.1f} s -> {path}")
    for reason, count in report.dropped.items():
        typer.echo(f"  dropped {count:,} row(s): {reason}")
    for note in report.notes:
        typer.echo(f"  note: {note}")


@app.command("list")
def list_command(ctx: typer.Context) -> None:
    """List the datasets (shipped, and your own in this workspace), the sources each can be built from, and what the
    sources are.

    Example: worldprobe datasets list"""
    load_user_specs(workspace_of(ctx, writes=False).datasets)
    sources = available()
    typer.echo("datasets:")
    for spec in all_specs().values():
        built_from = ", ".join(f"{s} (default)" if s == DEFAULT_SOURCE else s for s in sources.get(spec.name, []))
        typer.echo(f"  {spec.name:<18} {spec.kind:<5} {spec.description}")
        typer.echo(f"  {'':<18} sources: {built_from or 'none yet'}; groups: {', '.join(spec.group_columns)}")
    typer.echo("sources:")
    for source, description in SOURCE_DESCRIPTIONS.items():
        typer.echo(f"  {source:<18} {description}")


@app.command("show")
def show_command(ctx: typer.Context, name: str = typer.Argument(..., help="A built dataset.")) -> None:
    """Summarise a built dataset: source, split sizes, target ranges, counts by type and group, drops.

    Example: worldprobe datasets show world_place"""
    workspace = workspace_of(ctx, writes=False)
    spec = get_spec(name)
    table = load(name, workspace)
    report = load_report(name, workspace)
    n_test = int(table["is_test"].sum())
    typer.echo(f"{name} ({spec.description})")
    typer.echo(f"  source: {report.source}; fingerprint {report.fingerprint}")
    for item in report.inputs:
        typer.echo(f"  input: {item.get('what')} (sha256 {str(item.get('sha256', '?'))[:12]}...)")
    typer.echo(
        f"  rows: {len(table):,} (train {len(table) - n_test:,}, test {n_test:,}); split: {report.split_rule}"
    )
    typer.echo(f"  rows in: {report.rows_in:,}; dropped: {_counts(report.dropped) or 'none'}")
    leaks = report.details.get("split_leaks")
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
