"""CLI commands of the interventions stage: ``worldprobe ask``, ``worldprobe steer`` and ``worldprobe context``."""

from __future__ import annotations

from typing import Annotated

import typer

from worldprobe.commands.common import count_option, model_request, seed_option, set_threads, workspace_of
from worldprobe.config import (
    DEFAULT_MODEL,
    DEFAULT_PROMPT,
    DEFAULT_SHOTS,
    DEFAULT_STEER_LIMIT,
    STEER_DOSES,
    STEER_MAP_RANDOM,
    STEER_METHODS,
    STEER_SELECT,
)
from worldprobe.errors import WorldprobeError
from worldprobe.interventions.options import Asking, DasSettings, Steering

# The options ask and steer share, declared once.
Dataset = Annotated[str, typer.Option("--dataset", "-d", help="A dataset with an activation cache of --model.")]
Model = Annotated[str, typer.Option(
    "--model", "-m", help="Model of the activation cache (preset, random:<preset>, hub id, folder or .gguf).")]
Prompt = Annotated[str, typer.Option("--prompt", "-p", help="Prompt of the activation cache the probe is fitted on.")]
Shots = Annotated[int, typer.Option("--shots", help="Seeded train examples of a few-shot prompt.")]
MaxNewTokens = Annotated[int | None, typer.Option(
    "--max-new-tokens", help="Token budget per answer (default per question).")]
BatchSize = Annotated[int | None, typer.Option(
    "--batch-size", help="Prompts per batch (default by model size).")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto|fast|float32|bfloat16|float16.")]
Device = Annotated[str, typer.Option("--device", help="auto|cpu|cuda|mps.")]
LoadIn4bit = Annotated[bool, typer.Option("--load-in-4bit", help="bitsandbytes 4-bit weights.")]
LoadIn8bit = Annotated[bool, typer.Option("--load-in-8bit", help="bitsandbytes 8-bit weights.")]
GgufFile = Annotated[str | None, typer.Option(
    "--gguf-file", help="A GGUF file (inside --model's folder, or a path).")]
Threads = Annotated[int | None, typer.Option("--threads", help="CPU threads for torch.")]
Revision = Annotated[str | None, typer.Option(
    "--revision", help="Hub model revision, as given to extract.")]


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
    layer: int = typer.Option(None, "--layer", help="Probe layer (default: chosen on train rows)."),
    tolerance: float = typer.Option(None, "--tolerance", help="Correct within N years / km (default 50 / 500)."),
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
    """Ask the model its dataset's question about each test entity; compare its answers with the probe's reading.

    Example: worldprobe ask -d historical_figure -m gemma3-270m --limit 200"""
    from worldprobe.interventions.ask import run_ask
    from worldprobe.probes.results import read_summary

    set_threads(threads)
    request = model_request(model, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, dtype=dtype, device=device,
                            gguf_file=gguf_file, revision=revision)  # fmt: skip
    folder = run_ask(
        dataset, request, question=question, prompt=prompt, workspace=workspace_of(ctx),
        asking=Asking(format=fmt, shots=shots, batch_size=batch_size, max_new_tokens=max_new_tokens), limit=limit,
        layer=layer, tolerance=tolerance, seed=seed,
    )  # fmt: skip
    s = read_summary(folder)
    typer.echo(f"{s['question']['name']} ({s['format']}), probe layer {s['probe']['selected_layer']}/"
               f"{s['probe']['n_layers']}: parse rate {_estimate(s['parse_rate'])}")  # fmt: skip
    typer.echo(f"accuracy: answers {_estimate(s['answer_accuracy'])}, probe {_estimate(s['probe_accuracy'])}")
    typer.echo(str(folder))


def _floats(text: str | None, field: str, example: str) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise WorldprobeError(f"cannot read {field} {text!r}", field=field, hint=f"e.g. {example}") from None


def _ints(text: str | None, field: str, example: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise WorldprobeError(f"cannot read {field} {text!r}", field=field, hint=f"e.g. {example}") from None


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def steer(
    ctx: typer.Context,
    dataset: Dataset,
    model: Model = DEFAULT_MODEL,
    question: str = typer.Option(None, "--question", "-q", help="Question name (default: the dataset's first)."),
    prompt: Prompt = DEFAULT_PROMPT,
    target: str = typer.Option(None, "--target", help="Target the directions raise (default: year / latitude)."),
    direction: str = typer.Option(",".join(STEER_METHODS), "--direction", help="Comma-separated: ridge, pattern, "
                                  "mean_diff, pls1 (pls<k>), das (learned), or a .npy file of a vector (d,) or "
                                  "(layers+1, d)."),
    layers: str = typer.Option(None, "--layers", help="Comma-separated layers to steer (default: every cached layer "
                               "before the last block; 0 = the embedding output)."),
    positions: str = typer.Option("last", "--positions", help="Comma-separated: last (the entity's last token), "
                                  "entity (all its tokens)."),
    doses: str = typer.Option(None, "--doses", help="Multiples of |Δμ| at the layer, each with its negative "
                              "(default -2,-1,1,2)."),
    steer_generated: bool = typer.Option(False, "--steer-generated", help="Also add the vector at generated tokens."),
    select_limit: int = count_option("--select-limit", default=STEER_SELECT, help="Train entities the map is "
                                     "measured on (the direction, layer and position are chosen there)."),
    map_random: int = typer.Option(STEER_MAP_RANDOM, "--map-random",
                                   help="Random directions per layer in the map."),
    random_directions: int = typer.Option(5, "--random", help="Random directions of the same norm at the chosen "
                                          "layer (the test's control)."),
    random_init: bool = typer.Option(True, "--random-init/--no-random-init", help="The random-init twin's direction "
                                     "of the chosen method as a control (its cache is extracted when missing)."),
    das_entities: int = count_option("--das-entities", default=DasSettings.entities, help="Train entities a das "
                                     "direction learns from (outside the map's select entities)."),
    das_steps: int = count_option("--das-steps", default=DasSettings.steps, help="Training steps per layer of a das "
                                  "direction."),
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
    seed: int = seed_option(help="Seed of the samples, random directions and bootstrap."),
    threads: Threads = None,
    revision: Revision = None,
) -> None:  # fmt: skip
    """Map which direction, layer and position move the answer (train entities), then test the best one beside random
    directions of the same norm and the random-init twin's (test entities).

    Example: worldprobe steer -d historical_figure -m gemma3-270m --direction mean_diff,ridge --layers 4,8,12"""
    from worldprobe.interventions.steer import run_steer
    from worldprobe.probes.results import read_summary

    set_threads(threads)
    request = model_request(model, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, dtype=dtype, device=device,
                            gguf_file=gguf_file, revision=revision)  # fmt: skip
    steering = Steering(
        target=target, directions=_names(direction), layers=_ints(layers, "layers", "4,8,12"),
        positions=_names(positions), doses=_floats(doses, "doses", "-2,-1,1,2") or STEER_DOSES,
        generated=steer_generated, use_cache=use_cache, select_limit=select_limit, map_random=map_random,
        random_directions=random_directions, random_init=random_init,
        das=DasSettings(entities=das_entities, steps=das_steps),
    )  # fmt: skip
    folder = run_steer(
        dataset, request, question=question, prompt=prompt, workspace=workspace_of(ctx), steering=steering,
        asking=Asking(format=fmt, shots=shots, batch_size=batch_size, max_new_tokens=max_new_tokens), limit=limit,
        seed=seed,
    )  # fmt: skip
    typer.echo(map_text(folder))
    typer.echo(read_summary(folder)["verdict"])
    typer.echo(str(folder))


def map_text(folder) -> str:
    """The steering map as a table: antisymmetric shift at the largest dose per direction (rows) and layer (columns),
    per position, on the train entities it was chosen on; a cell where answers failed to parse for some entities
    shows on how many it stands (``193.0 (n=4)``)."""
    import pandas as pd

    from worldprobe.probes.results import STEERING_MAP

    table = pd.read_parquet(folder / f"{STEERING_MAP}.parquet")
    k = table["dose"].max()
    rows = table[(table["split"] == "select") & (table["dose"] == k)]
    rows = rows.assign(name=rows["direction"].where(rows["kind"] != "random", "random (mean)"))
    cells = rows.groupby(["position", "name", "layer"]).agg(shift=("antisymmetric_shift", "mean"), n=("n", "min"))
    most = int(rows["n"].max())
    cells["text"] = [f"{shift:.1f}" + (f" (n={n})" if n < most else "") for shift, n in zip(cells["shift"], cells["n"],
                                                                                              strict=True)]  # fmt: skip
    grid = cells["text"].unstack("layer")
    head = (f"antisymmetric shift at ±{k:g}|Δμ| on the train (select) entities ({most} with both answers parsed "
            "unless a cell says fewer), by direction and layer:")  # fmt: skip
    return head + "\n" + grid.to_string()


def context(
    ctx: typer.Context,
    dataset: Dataset,
    model: Model = DEFAULT_MODEL,
    question: str = typer.Option(None, "--question", "-q", help="Question name (default: the dataset's first)."),
    prompt: Prompt = DEFAULT_PROMPT,
    fmt: str = typer.Option("auto", "--format", help="auto | chat | fewshot."),
    shots: Shots = DEFAULT_SHOTS,
    limit: int = count_option("--limit", default=100, help="A seeded sample of N test entities."),
    max_new_tokens: MaxNewTokens = None,
    batch_size: BatchSize = None,
    dtype: Dtype = "auto",
    device: Device = "auto",
    load_in_4bit: LoadIn4bit = False,
    load_in_8bit: LoadIn8bit = False,
    gguf_file: GgufFile = None,
    seed: int = seed_option(help="Seed of the sample, the counterfactuals and the bootstrap."),
    threads: Threads = None,
    revision: Revision = None,
) -> None:  # fmt: skip
    """Put a false statement before the question ("X died in <year + 300>."): do the probe's reading at the entity and
    the answer follow it? Beside no statement, the same statement about another entity, and the true one.

    Example: worldprobe context -d historical_figure -m gemma3-270m --limit 100"""
    from worldprobe.interventions.context import run_context
    from worldprobe.probes.results import read_summary

    set_threads(threads)
    request = model_request(model, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, dtype=dtype, device=device,
                            gguf_file=gguf_file, revision=revision)  # fmt: skip
    folder = run_context(
        dataset, request, question=question, prompt=prompt, workspace=workspace_of(ctx),
        asking=Asking(format=fmt, shots=shots, batch_size=batch_size, max_new_tokens=max_new_tokens), limit=limit,
        seed=seed,
    )  # fmt: skip
    s = read_summary(folder)
    for condition, row in s["conditions"].items():
        typer.echo(f"{condition:15s} probe {row['probe_shift']:+.2f} [{row['probe_shift_ci_low']:+.2f}, "
                   f"{row['probe_shift_ci_high']:+.2f}]  answer {row['answer_shift']:+.2f} "
                   f"[{row['answer_shift_ci_low']:+.2f}, {row['answer_shift_ci_high']:+.2f}]  parsed "
                   f"{row['parse_rate']:.0%}")  # fmt: skip
    typer.echo(s["verdict"])
    typer.echo(str(folder))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main `worldprobe` app."""
    app.command("ask")(ask)
    app.command("steer")(steer)
    app.command("context")(context)
