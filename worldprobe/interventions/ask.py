"""``worldprobe ask``: pose each test entity its dataset's question, parse the answers and compare them, entity by
entity, with the probe's reading at its train-chosen layer. Writes ``answers.parquet`` and ``summary.json`` into
``results/<dataset>__<model>__<prompt>__ask-<question>__<key>/``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from worldprobe.checks import Rule, checked_arguments
from worldprobe.config import DEFAULT_MODEL, DEFAULT_RESAMPLES, DEFAULT_SEED
from worldprobe.extract.models import load_requested, requested
from worldprobe.extract.runner import default_batch_size
from worldprobe.interventions import behaviour
from worldprobe.interventions import setup as setup_mod
from worldprobe.interventions.generate import generate
from worldprobe.interventions.options import ASK_ARGUMENTS, Asking
from worldprobe.probes.results import ANSWERS, RunFolder, is_complete, run_key, write_run
from worldprobe.reuse import starting_work
from worldprobe.workspace import Workspace, as_workspace


@checked_arguments(**ASK_ARGUMENTS, layer=Rule(int, minimum=0), tolerance=Rule(float, minimum=0))
def run_ask(
    dataset: str,
    model: str | Any = DEFAULT_MODEL,
    *,
    question: str | None = None,
    prompt: str = "empty",
    workspace: Workspace | str | Path | None = None,
    asking: Asking = Asking(),
    limit: int | None = None,
    layer: int | None = None,
    tolerance: float | None = None,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    progress: bool = True,
) -> RunFolder:
    """Ask ``model`` the ``question`` of ``dataset`` about its test entities (all, or a seeded sample of ``limit``)
    and write the answers beside the probe's predictions; return the results folder (reused when finished).

    ``model``: a name, a :class:`~worldprobe.extract.models.ModelRequest` or a loaded model (as for
    ``run_extraction``); ``prompt`` names the activation cache the probe is fitted on (``worldprobe extract -p``);
    ``asking``: the prompt format, few-shot examples, batch size and token budget (:class:`Asking`); ``layer``: the
    probe's layer (None: chosen on train rows); ``tolerance``: an answer within this many years or km is correct.
    """
    request = requested(model, seed)
    fmt, shots, batch_size, max_new_tokens = asking.format, asking.shots, asking.batch_size, asking.max_new_tokens
    model = request.name
    clock, cpu = time.perf_counter(), time.process_time()
    ws = as_workspace(workspace)
    s = setup_mod.prepare_for(request, ws, dataset, prompt, question, fmt, layer=layer, progress=progress)
    rows = setup_mod.nested_sample(s.entities["is_test"].to_numpy(dtype=bool) & (s.y == s.y).all(axis=1), limit, seed)
    budget = max_new_tokens or s.question.max_new_tokens
    settings = {
        "stage": "ask", "question": s.question.name, "format": fmt, "shots": shots, "limit": limit,
        "layer": s.layer, "tolerance": tolerance, "max_new_tokens": budget, "seed": seed, "resamples": resamples,
        "model_options": request.options,
    }  # fmt: skip
    key = run_key([s.cache.manifest], settings)
    folder = setup_mod.result_folder(s, "ask", key)
    if is_complete(folder, key, (ANSWERS,)):
        return folder
    starting_work(f"{folder.name}")
    loaded = load_requested(request)
    texts, encoded, used = setup_mod.prompts_for(s, loaded.tokenizer, rows, fmt, shots, seed)
    answers = generate(loaded, encoded, max_new_tokens=budget, batch_size=batch_size or default_batch_size(loaded),
                       progress=progress, desc=f"ask {dataset}")  # fmt: skip
    table = setup_mod.base_columns(s, rows)
    table["format"] = used
    table["prompt_text"] = texts
    table["answer_text"] = [a.text for a in answers]
    table["n_new_tokens"] = [len(a.token_ids) for a in answers]
    table["stop"] = [a.stop for a in answers]
    table = table.join(setup_mod.parse_answers(s, table["answer_text"].tolist(), rows))
    table = table.join(behaviour.judge(s, table, tolerance))
    summary = {
        "run_key": key, "stage": "ask", "dataset": dataset, "model": model, "prompt": prompt,
        "question": {"name": s.question.name, "kind": s.question.kind, "template": s.question.template,
                     "instruction": s.question.instruction if used == "chat" else "", "truth": list(s.question.truth)},
        "format": used, "shots": shots if used == "fewshot" else 0, "max_new_tokens": budget,
        "tolerance": tolerance if tolerance is not None else behaviour.DEFAULT_TOLERANCE.get(s.question.kind),
        "probe": setup_mod.probe_record(s), "settings": settings, "seed": seed, "resamples": resamples,
        "stops": table["stop"].value_counts().to_dict(),
        **behaviour.summarise(s, table, resamples=resamples, seed=seed),
        "time": {"wall_seconds": time.perf_counter() - clock, "cpu_seconds": time.process_time() - cpu},
    }  # fmt: skip
    return write_run(folder, {ANSWERS: table}, summary)
