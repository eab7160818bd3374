"""CLI commands of the interventions stage: ``worldprobe ask`` and ``worldprobe steer``."""

from __future__ import annotations

import typer

from worldprobe.commands.common import count_option, seed_option, set_threads, workspace_of
from worldprobe.config import DEFAULT_MODEL, DEFAULT_PROMPT, DEFAULT_SHOTS, DEFAULT_STEER_LIMIT
from worldprobe.errors import WorldprobeError

_MODEL_HELP = "Model of the activation cache (preset, random:<preset>, hub id, folder or .gguf)."
_PROMPT_HELP = "Prompt of the activation cache the probe is fitted on."
_BUDGET_HELP = "Token budget per answer (default per question)."


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
    dataset: str = typer.Option(..., "--dataset", "-d", help="A dataset with an activation cache of --model."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=_MODEL_HELP),
    question: str = typer.Option(None, "--question", "-q", help="Question name (default: the dataset's "
                                 "first: death_year, release_year, publication_year, country, state, borough)."),
    prompt: str = typer.Option(DEFAULT_PROMPT, "--prompt", "-p", help=_PROMPT_HELP),
    fmt: str = typer.Option("auto", "--format", help="auto (chat template if the tokenizer has one) | chat | fewshot."),
    shots: int = typer.Option(DEFAULT_SHOTS, "--shots", min=0, help="Seeded train examples of a few-shot prompt."),
    limit: int = count_option("--limit", help="A seeded sample of N test entities (default: all test entities)."),
    layer: int = typer.Option(None, "--layer", min=0, help="Probe layer (default: chosen on train rows)."),
    tolerance: float = typer.Option(None, "--tolerance", min=0, help="Correct within N years / km (default 50 / 500)."),
    max_new_tokens: int = count_option("--max-new-tokens", help=_BUDGET_HELP),
    batch_size: int = count_option("--batch-size", help="Prompts per batch (default by model size)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto|fast|float32|bfloat16|float16."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="bitsandbytes 4-bit weights."),
    load_in_8bit: bool = typer.Option(False, "--load-in-8bit", help="bitsandbytes 8-bit weights."),
    gguf_file: str = typer.Option(None, "--gguf-file", help="A GGUF file (inside --model's folder, or a path)."),
    seed: int = seed_option(help="Seed of the sample, few-shot examples and bootstrap."),
    threads: int = count_option("--threads", help="CPU threads for torch."),
    revision: str = typer.Option(None, "--revision", help="Hub model revision, as given to extract."),
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
    dataset: str = typer.Option(..., "--dataset", "-d", help="A dataset with an activation cache of --model."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=_MODEL_HELP),
    question: str = typer.Option(None, "--question", "-q", help="Question name (default: the dataset's first)."),
    prompt: str = typer.Option(DEFAULT_PROMPT, "--prompt", "-p", help=_PROMPT_HELP),
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
    shots: int = typer.Option(DEFAULT_SHOTS, "--shots", min=0, help="Seeded train examples of a few-shot prompt."),
    limit: int = count_option("--limit", default=DEFAULT_STEER_LIMIT, help="A seeded sample of N test entities."),
    max_new_tokens: int = count_option("--max-new-tokens", help=_BUDGET_HELP),
    batch_size: int = count_option("--batch-size", help="Prompts per batch (default by model size)."),
    dtype: str = typer.Option("auto", "--dtype", help="auto|fast|float32|bfloat16|float16."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda|mps."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="bitsandbytes 4-bit weights."),
    load_in_8bit: bool = typer.Option(False, "--load-in-8bit", help="bitsandbytes 8-bit weights."),
    gguf_file: str = typer.Option(None, "--gguf-file", help="A GGUF file (inside --model's folder, or a path)."),
    seed: int = seed_option(help="Seed of the sample, directions and bootstrap."),
    threads: int = count_option("--threads", help="CPU threads for torch."),
    revision: str = typer.Option(None, "--revision", help="Hub model revision, as given to extract."),
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
