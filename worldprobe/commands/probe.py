"""``worldprobe probe``: extract the random-init twins its random_init control reads and the pooled embeddings its
embedding control reads (when asked for and missing), then run the probe stage."""

from __future__ import annotations

import typer

from worldprobe.checks import check_call
from worldprobe.commands.common import count_option, seed_option, set_threads, workspace_of
from worldprobe.config import DEFAULT_MARGINS, DEFAULT_MODEL, DEFAULT_PROMPT, DEFAULT_RESAMPLES, RANDOM_INIT_SEEDS
from worldprobe.workspace import Workspace


def probe(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset whose activation cache to probe."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model of the cache (as given to extract)."),
    prompt: str = typer.Option(DEFAULT_PROMPT, "--prompt", "-p", help="Prompt of the cache."),
    probe_kind: str = typer.Option("ridge", "--probe", help="ridge | mlp."),
    layers: str = typer.Option("all", "--layers", help="all | 0,5,10 | 12:20 (inclusive); must be cached."),
    target: str = typer.Option(None, "--target", help="Any numeric column of the entity table (default: the "
                               "dataset's targets, e.g. latitude+longitude)."),
    log_target: bool = typer.Option(False, "--log-target", help="Probe log10 of --target (non-positive rows dropped)."),
    holdout: list[str] = typer.Option([], "--holdout", help="Column for held-out blocks at the best layer (repeat)."),
    standardize: bool = typer.Option(None, "--standardize/--no-standardize",
                                     help="Z-score activation dimensions on train rows (default: on, measured)."),
    control: list[str] = typer.Option([], "--control", help="Control to run beside the probe (repeat): all, "
                                      "random_init, shuffled, lexical, embedding, group_oracle, within_group, "
                                      "alt_world."),
    seed: int = seed_option(help="Seed of the MLP probe, the controls and the bootstrap."),
    random_init_seeds: int = typer.Option(RANDOM_INIT_SEEDS, "--random-init-seeds",
                                          help="Random-weight twins for the random_init control (seeds seed..)."),
    resamples: int = typer.Option(DEFAULT_RESAMPLES, "--resamples", help="Bootstrap resamples per interval "
                                  "printed for reading (the comparisons a label reads use 10,000)."),
    margin_r2: float = typer.Option(DEFAULT_MARGINS["r2"], "--margin-r2",
                                    help="Equivalence margin for differences of R² (docs/verdicts.md)."),
    margin_r: float = typer.Option(DEFAULT_MARGINS["r"], "--margin-r",
                                   help="Equivalence margin for the within-group difference of r."),
    resplits: int = typer.Option(0, "--resplits", help="Also refit the probe, lexical and random-init "
                                 "controls on K re-drawn train/test splits and print their spread."),
    dtype: str = typer.Option(None, "--dtype", help="Probe the cache extracted with this dtype (as given to "
                              "extract) when there are several; default: the only one."),
    threads: int = count_option("--threads", help="CPU threads for torch (default: torch's choice; 1 is "
                                "often fastest on a CPU shared with other jobs)."),
) -> None:  # fmt: skip
    """Fit probes on every requested layer of a cached run; write metrics, predictions, hold-outs and a summary,
    with the verdict (docs/verdicts.md).

    Example: worldprobe probe -d world_place -m smollm2-135m --control all --holdout country"""
    from worldprobe.datasets.prompts import get_prompt
    from worldprobe.extract.options import ModelRequest
    from worldprobe.probes.controls import resolve_controls
    from worldprobe.probes.experiments import run_probe
    from worldprobe.probes.options import ProbeOptions
    from worldprobe.probes.results import read_summary

    get_prompt(dataset, prompt)  # an unknown dataset or prompt, not a missing cache
    resolve_controls(control)  # a misspelt control before the probe's work, not after it
    check_call(run_probe, seed=seed, layers=None if layers == "all" else layers, target=target)  # before the twins
    options = ProbeOptions(
        log_target=log_target, holdouts=tuple(holdout), standardize=standardize, random_init_seeds=random_init_seeds,
        resamples=resamples, resplits=resplits, margin_r2=margin_r2, margin_r=margin_r,
    )  # fmt: skip

    set_threads(threads)
    ws = workspace_of(ctx)
    if "random_init" in resolve_controls(control):
        extract_twins(ws, dataset, model, prompt, layers, dtype, [seed + i for i in range(random_init_seeds)])
    if "embedding" in resolve_controls(control):
        extract_pooled_embedding(ws, dataset, model, prompt, dtype)
    folder = run_probe(
        dataset, model if dtype is None else ModelRequest(model, dtype=dtype), prompt, workspace=ws, probe=probe_kind,
        layers=None if layers == "all" else layers, target=target, controls=tuple(control), seed=seed,
        options=options,
    )  # fmt: skip
    summary = read_summary(folder)
    typer.echo(f"{summary['dataset']} x {summary['model']}: {summary['verdict']['label']}")
    typer.echo(summary["verdict"]["sentence"])
    if summary.get("alpha_on_edge_layers"):
        typer.secho(f"note: best alpha on the grid edge at layers {summary['alpha_on_edge_layers']}", fg="yellow")
    typer.echo(str(folder))


def extract_twins(
    ws: Workspace, dataset: str, model: str, prompt: str, layers: str, dtype: str | None, seeds: list[int]
) -> None:
    """The random_init control reads its twins' caches: extract the missing ones first, one per seed, with the rows,
    dtype and aggregation of the model's cache and the layers the probe reads (a finished twin is reused)."""
    from worldprobe.devices import cache_dtype
    from worldprobe.extract import extract_twin
    from worldprobe.extract.cache import find_cache, open_cache, parse_layers

    narrow = {} if dtype is None else {"dtype": cache_dtype(dtype)}
    cache = open_cache(find_cache(dataset, model, prompt, workspace=ws, **narrow))
    chosen = cache.layers if layers == "all" else parse_layers(layers, cache.n_layers)
    for seed in seeds:
        extract_twin(dataset, model, prompt, cache.manifest, seed=seed, workspace=ws, layers=chosen)


def extract_pooled_embedding(ws: Workspace, dataset: str, model: str, prompt: str, dtype: str | None) -> None:
    """The embedding control reads layer 0 averaged over each entity's tokens: extract it beside the model's cache
    when missing (one block's forward pass; a finished one is reused)."""
    from worldprobe.devices import cache_dtype
    from worldprobe.extract.cache import find_cache, read_manifest
    from worldprobe.extract.runner import extract_pooled

    narrow = {} if dtype is None else {"dtype": cache_dtype(dtype)}
    extract_pooled(read_manifest(find_cache(dataset, model, prompt, workspace=ws, **narrow)), workspace=ws)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main `worldprobe` app."""
    app.command("probe")(probe)
