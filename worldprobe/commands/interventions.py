"""CLI commands of the interventions stage: ``worldprobe ask`` and ``worldprobe steer``."""

from __future__ import annotations

from typing import Annotated

import typer

from worldprobe.commands.common import count_option, seed_option, set_threads, workspace_of
from worldprobe.config import DEFAULT_MODEL, DEFAULT_PROMPT, DEFAULT_SHOTS, DEFAULT_STEER_LIMIT
from worldprobe.errors import WorldprobeError

# The options ask and steer share, declared once.
Dataset = Annotated[str, typer.Option("--dataset", "-d", help="A dataset with an activation cache of --model.")]
Model = Annotated[str, typer.Option(
    "--model", "-m", help="Model of the activation cache (preset, random:<preset>, hub id, folder or .gguf).")]
Prompt = Annotated[str, typer.Option("--prompt", "-p", help="Prompt of the activation cache the probe is fitted on.")]
Shots = Annotated[int, typer.Option("--shots", min=0, help="Seeded train examples of a few-shot prompt.")]
MaxNewTokens = Annotated[int | None, typer.Option(
    "--max-new-tokens", min=1, help="Token budget per answer (default per question).")]
BatchSize = Annotated[int | None, typer.Option(
    "--batch-size", min=1, help="Prompts per batch (default by model size).")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto|fast|float32|bfloat16|float16.")]
Device = Annotated[str, typer.Option("--device", help="auto|cpu|cuda|mps.")]
LoadIn4bit = Annotated[bool, typer.Option("--load-in-4bit", help="bitsandbytes 4-bit weights.")]
LoadIn8bit = Annotated[bool, typer.Option("--load-in-8bit", help="bitsandbytes 8-bit weights.")]
GgufFile = Annotated[str | None, typer.Option(
    "--gguf-file", help="A GGUF file (inside --model's folder, or a path).")]
Threads = Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for torch.")]
Revision = Annotated[str | None, typer.Option(
    "--revision", help="Hub model revision, as given to extract.")]


def _quantization(load_in_4bit: bool, load_in_8bit: bool) -> str | None:
    if load_in_4bit and load_in_8bit:
        raise WorldprobeError("choose one of --load-in-4bit and --load-in-8bit")
    return "4bit" if load_in_4bit else "8bit" if load_in_8bit else None


def _shifts(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise WorldprobeError(f"cannot read shifts {text!r}", field="shifts", hint="e.g. -100,-50,0,50,100") from None


def _estimate(found: dict | None, digits: int = 2) -> str:
    from worldprobe.probes.bootstrap import Estimate

    return "–" if not found else f"{Estimate(**found).text(digits)} (n = {found['n']})"


def ask(
    ctx: typer.Context,
    dataset: Dataset,
    model: Model = DEFAULT_MODEL,
    question: str = typer.Option(None, "--question", "-q", help="Question name (default: the dataset's "
                                 "first: death_year, release_year, publication_year, country, state, borough)."),
    prompt: Prompt = DEFAULT_PROMPT,
    fmt: str = typer.Option("auto", "--format", help="auto (chat template if the tokenizer has one) | chat | fewshot."),
    shots: Shots = DEFAULT_SHOTS,
    limit: int = count_option("--limit", help="A seeded sample of N test entities (default: all test entities)."),
    layer: int = typer.Option(None, "--layer", min=0, help="Probe layer (default: chosen on train rows)."),
    tolerance: float = typer.Option(None, "--tolerance", min=0, help="Correct within N years / km (default 50 / 500)."),
    max_new_tokens: MaxNewTokens = None,
    batch_size: BatchSize = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    load_in_4bit: LoadIn4bit = False,
    load_in_8bit: LoadIn8bit = False,
    gguf_file: GgufFile = None,
    seed: int = seed_option(help="Seed of the sample, few-shot examples and bootstrap."),
    threads: Threads = None,
    revision: Revision = None,
) -> None:  # fmt: skip
    """Ask the model its dataset's question about each test entity; compare its answers with the probe's reading."""
    from worldprobe.interventions.ask import run_ask
    from worldprobe.probes.results import read_summary

    set_threads(threads)
    folder = run_ask(
        dataset, model, question=question, prompt=prompt, workspace=workspace_of(ctx), fmt=fmt, shots=shots,
        limit=limit, layer=layer, tolerance=tolerance, batch_size=batch_size, max_new_tokens=max_new_tokens,
        dtype=dtype, device=device, quantization=_quantization(load_in_4bit, load_in_8bit), gguf_file=gguf_file,
        seed=seed, revision=revision,
    )  # fmt: skip
    s = read_summary(folder)
    typer.echo(f"{s['question']['name']} ({s['format']}), probe layer {s['probe']['selected_layer']}/"
               f"{s['probe']['n_layers']}: parse rate {_estimate(s['parse_rate'])}")  # fmt: skip
    typer.echo(f"accuracy: answers {_estimate(s['answer_accuracy'])}, probe {_estimate(s['probe_accuracy'])}")
    typer.echo(str(folder))


def steer(
    ctx: typer.Context,
    dataset: Dataset,
    model: Model = DEFAULT_MODEL,
    question: str = typer.Option(None, "--question", "-q", help="Question name (default: the dataset's first)."),
    prompt: Prompt = DEFAULT_PROMPT,
    target: str = typer.Option(None, "--target", help="Target whose reading is moved (default: year / latitude)."),
    shifts: str = typer.Option(None, "--shifts", help="Intended shifts in target units, e.g. -100,-50,0,50,100 "
                               "(default -1000..1000 years, -40..40 degrees)."),
    layer: int = typer.Option(None, "--layer", min=0, help="Steered layer (default: train-chosen, before the last "
                              "block)."),
    window: int = count_option("--window", default=1, help="Steer blocks layer..layer+window-1, each shift/window."),
    positions: str = typer.Option("last", "--positions", help="last (the entity's last token) | entity (all of them)."),
    steer_generated: bool = typer.Option(False, "--steer-generated", help="Also add the vector at generated tokens."),
    random_directions: int = typer.Option(5, "--random", min=0, help="Random directions of the same norm (seeds)."),
    orthogonal_directions: int = typer.Option(1, "--orthogonal", min=0, help="Directions orthogonal to the probe."),
    random_init: bool = typer.Option(True, "--random-init/--no-random-init", help="The random-init twin's probe "
                                     "direction as a control (its cache is extracted when missing)."),
    use_cache: bool = typer.Option(True, "--kv-cache/--no-kv-cache", help="Generate with the KV cache."),
    fmt: str = typer.Option("auto", "--format", help="auto | chat | fewshot."),
    shots: Shots = DEFAULT_SHOTS,
    limit: int = count_option("--limit", default=DEFAULT_STEER_LIMIT, help="A seeded sample of N test entities."),
    max_new_tokens: MaxNewTokens = None,
    batch_size: BatchSize = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    load_in_4bit: LoadIn4bit = False,
    load_in_8bit: LoadIn8bit = False,
    gguf_file: GgufFile = None,
    seed: int = seed_option(help="Seed of the sample, directions and bootstrap."),
    threads: Threads = None,
    revision: Revision = None,
) -> None:  # fmt: skip
    """Steer the model along the probe direction while it answers; measure the dose-response beside controls."""
    from worldprobe.interventions.steer import run_steer
    from worldprobe.probes.results import read_summary

    set_threads(threads)
    folder = run_steer(
        dataset, model, question=question, prompt=prompt, workspace=workspace_of(ctx), target=target,
        shifts=_shifts(shifts), layer=layer, window=window, positions=positions, generated=steer_generated,
        random_directions=random_directions, orthogonal_directions=orthogonal_directions, random_init=random_init,
        use_cache=use_cache, fmt=fmt, shots=shots, limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens,
        dtype=dtype, device=device, quantization=_quantization(load_in_4bit, load_in_8bit), gguf_file=gguf_file,
        seed=seed, revision=revision,
    )  # fmt: skip
    s = read_summary(folder)
    for kind, found in s["kinds"].items():
        typer.echo(f"{kind:12s} slope {_estimate(found['slope'])}, spearman {_estimate(found['spearman'])}")
    typer.echo(s["verdict"])
    typer.echo(str(folder))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main `worldprobe` app."""
    app.command("ask")(ask)
    app.command("steer")(steer)
