"""CLI commands of the extract stage: ``worldprobe extract`` and ``worldprobe models``."""

from __future__ import annotations

from dataclasses import replace

import typer

from worldprobe.commands.common import count_option, model_request, seed_option, set_threads, workspace_of
from worldprobe.config import DEFAULT_MODEL, DEFAULT_PROMPT
from worldprobe.errors import WorldprobeError


def extract(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="A built dataset (worldprobe datasets build ...)."),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m",
        help="Preset (see `worldprobe models`), random:<preset>, hub id, local folder or .gguf file.",
    ),
    prompt: str = typer.Option(DEFAULT_PROMPT, "--prompt", "-p", help="Prompt of the dataset (empty, coords, ...)."),
    layers: str = typer.Option("all", "--layers", help="all | 0,5,10 | 12:20 (inclusive)."),
    batch_size: int = count_option("--batch-size", help="Entities per forward pass (default by model size)."),
    dtype: str = typer.Option(
        "auto", "--dtype",
        help="auto|fast|float32|bfloat16|float16 (auto: float32 on CPU; fast: bfloat16 on CPUs with bfloat16 flags).",
    ),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps (cuda uses device_map=auto)."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="bitsandbytes 4-bit weights (.\\[quant] extra)."),
    load_in_8bit: bool = typer.Option(False, "--load-in-8bit", help="bitsandbytes 8-bit weights (LLM.int8)."),
    limit: int = count_option("--limit", help="A seeded sample of N entities (--seed), as in datasets build."),
    mean: bool = typer.Option(False, "--mean", help="Average over the entity's tokens instead of its last token."),
    gguf_file: str = typer.Option(None, "--gguf-file", help="A GGUF file (inside --model's folder, or a path)."),
    seed: int = seed_option(help="Seed of random prompts and random:<model> weights."),
    max_memory: str = typer.Option(None, "--max-memory", help="device_map limits: 0=20GiB,cpu=64GiB."),
    threads: int = count_option("--threads", help="CPU threads for torch (default: torch's choice)."),
    flush_every: int = count_option("--flush-every", default=2048, help="Entities between progress-ledger writes."),
    revision: str = typer.Option(None, "--revision", help="Hub model revision: branch, tag or commit (recorded with "
                                 "the commit it resolves to)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Delete this request's cache folder and extract it afresh "
                                 "(for a damaged cache)."),
    share_prefix: bool = typer.Option(True, "--share-prefix/--every-token", help="Run the prompt prefix every row "
                                      "shares (the BOS, a prompt's words) once, the rows the same to rounding; "
                                      "--every-token feeds every token of every row."),
) -> None:  # fmt: skip
    """Cache each entity's residual stream (last token, every requested layer) for probes; resumable.

    Example: worldprobe extract -d world_place -m smollm2-135m --dtype fast"""
    from worldprobe.devices import resolve_device
    from worldprobe.extract.runner import Batching, run_extraction

    request = model_request(model, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, dtype=dtype, device=device,
                            gguf_file=gguf_file, revision=revision)  # fmt: skip
    limits = _parse_max_memory(max_memory)
    if limits and not resolve_device(device).startswith("cuda"):
        raise WorldprobeError(
            "--max-memory bounds the GPUs of --device cuda; on this device it would be ignored", field="max-memory",
            hint="leave it out, or use --device cuda",
        )  # fmt: skip
    set_threads(threads)
    path = run_extraction(
        dataset, replace(request, max_memory=limits), prompt, workspace=workspace_of(ctx), layers=layers,
        aggregation="mean" if mean else "last", limit=limit, seed=seed,
        batching=Batching(batch_size=batch_size, flush_rows=flush_every, share_prefix=share_prefix), rebuild=rebuild,
    )  # fmt: skip
    typer.echo(str(path))


def _parse_max_memory(text: str | None) -> dict[int | str, str] | None:
    """``0=20GiB,1=20GiB,cpu=64GiB`` -> ``{0: "20GiB", 1: "20GiB", "cpu": "64GiB"}`` (accelerate's max_memory)."""
    if not text:
        return None
    limits: dict[int | str, str] = {}
    for item in text.split(","):
        device, sep, size = item.partition("=")
        if not sep or not size.strip():
            raise WorldprobeError(f"cannot read {item!r} in --max-memory", field="max-memory", hint="0=20GiB,cpu=64GiB")
        limits[int(device) if device.strip().isdigit() else device.strip()] = size.strip()
    return limits


def models() -> None:
    """List the model presets.

    Example: worldprobe models"""
    from worldprobe.extract.models import PRESETS

    for preset in PRESETS.values():
        typer.echo(f"{preset.name:14s} {preset.n_layers:3d} x {preset.d_model:<5d} {preset.description}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main `worldprobe` app."""
    app.command("extract")(extract)
    app.command("models")(models)
