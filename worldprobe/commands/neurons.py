"""CLI command of the single-neuron search (`worldprobe neurons`)."""

from __future__ import annotations

import pandas as pd
import typer

from worldprobe.commands.common import count_option, model_request, seed_option, set_threads, workspace_of
from worldprobe.config import DEFAULT_MODEL, DEFAULT_PROMPT, DEFAULT_TOP_K


def register(app: typer.Typer) -> None:
    """Add the `neurons` command to the main `worldprobe` app."""
    app.command("neurons")(neurons)


def neurons(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="A built dataset, e.g. world_place."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model preset, hub id or folder."),
    prompt: str = typer.Option(DEFAULT_PROMPT, "--prompt", "-p", help="Prompt name of the dataset."),
    top_k: int = count_option(
        "--top-k", "-k", default=DEFAULT_TOP_K, help="Neurons kept per layer and target (chosen on train rows)."
    ),
    layers: str = typer.Option("all", "--layers", help="all | 0,5,10 | 12:20 (layer 0 has residual dims only)."),
    limit: int = count_option("--limit", help="A seeded sample of N entities (--seed), as in extract."),
    batch_size: int = count_option("--batch-size", help="Entities per forward pass (default by model size)."),
    seed: int = seed_option(help="Seed of random prompts and random-init models."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (a finished cache's dtype when there is one, else float32 "
                              "on CPU) | fast | float32 | bfloat16 | float16."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="bitsandbytes 4-bit weights."),
    load_in_8bit: bool = typer.Option(False, "--load-in-8bit", help="bitsandbytes 8-bit weights."),
    revision: str = typer.Option(None, "--revision", help="Hub model revision, as given to extract."),
    threads: int = count_option("--threads", help="CPU threads for torch (default: torch's choice)."),
) -> None:
    """Find single MLP neurons and residual dimensions that encode the targets: ranked by Pearson r on train rows,
    scored (Spearman, R² of a line fitted on train) on test rows, with the cosine of each neuron's weights to the
    probe direction. Writes neurons.parquet into the results folder.

    Example: worldprobe neurons -d historical_figure -m smollm2-135m --top-k 10"""
    from worldprobe.neurons.search import find_neurons
    from worldprobe.probes.results import NEURONS_FILE

    set_threads(threads)
    request = model_request(model, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, dtype=dtype, device=device,
                            revision=revision)  # fmt: skip
    folder = find_neurons(dataset, request, prompt, workspace=workspace_of(ctx), top_k=top_k, layers=layers,
                          limit=limit, seed=seed, batch_size=batch_size)  # fmt: skip
    table = pd.read_parquet(folder / NEURONS_FILE)
    typer.echo(best_neurons(table).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"wrote {folder / NEURONS_FILE}")


def best_neurons(table: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """Per kind and target, the ``n`` rank-1 neurons (one per layer) with the largest |train r| (chosen on train)."""
    first = table[table["rank"] == 1].assign(strength=lambda f: f["train_pearson"].abs())
    top = first.sort_values("strength", ascending=False).groupby(["kind", "target"], sort=True).head(n)
    columns = ["kind", "target", "layer", "neuron", "train_pearson", "test_spearman", "test_r2", "cos_in", "cos_out"]
    return top.sort_values(["kind", "target", "strength"], ascending=[True, True, False])[columns]
