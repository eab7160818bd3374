"""``worldprobe steer``: add multiples of the probe direction to the residual stream at the entity while the model
answers its question, and measure how the answer moves, beside control directions of the same norm.

The steered layer is the probe's train-chosen layer (``worldprobe.probes.selection``) among the layers before the last
block (an edit after the last block is read by no later position); ``--layer`` overrides it. For each asked test
entity and each intended shift s (in target units), the edit ``s * pinv(W)[:, target]`` moves the probe's reading at
the steered layer by exactly s (``worldprobe.interventions.direction``); it is added after
block l at the entity's last token (``--positions entity``: every entity token) of the prompt pass only (unless
``generated``). With ``window`` > 1 the edit is spread over blocks l .. l+window-1, each layer's own probe direction
carrying s / window. A side effect is measured on a neutral continuation: the change of its mean token log-probability
after the steered entity. Writes ``steering.parquet`` and ``summary.json`` into
``results/<dataset>__<model>__<prompt>__steer-<question>__<key>/``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from worldprobe.config import DEFAULT_MODEL, DEFAULT_RESAMPLES, DEFAULT_SEED, DEFAULT_SHOTS, DEFAULT_STEER_LIMIT
from worldprobe.devices import cache_dtype
from worldprobe.errors import WorldprobeError
from worldprobe.extract.models import load_model_kept
from worldprobe.extract.runner import default_batch_size
from worldprobe.interventions import direction, dose, questions
from worldprobe.interventions import setup as setup_mod
from worldprobe.interventions.generate import POSITIONS, Edit, continuation_logprobs, generate
from worldprobe.interventions.parse import UNPARSED
from worldprobe.probes.results import STEERING, is_complete, run_key, write_run
from worldprobe.workspace import Workspace, as_workspace

DEFAULT_SHIFTS = {"year": (-1000.0, -300.0, -100.0, 0.0, 100.0, 300.0, 1000.0),
                  "latitude": (-40.0, -20.0, -10.0, 0.0, 10.0, 20.0, 40.0),
                  "longitude": (-40.0, -20.0, -10.0, 0.0, 10.0, 20.0, 40.0)}  # fmt: skip
"""Intended shifts of the probe's reading. On SmolLM2-135M a +200-year edit is 2% of the residual norm and about half
a standard deviation of the activations along the probe direction, so the ladder reaches further (see
``edit_size`` in the summary)."""
NEUTRAL_CONTINUATION = " is the subject of this sentence."
"""The side-effect probe: its log-probability after the (steered) entity should not care about the steered target."""


@dataclass(frozen=True)
class Direction:
    """One steering direction: name (``probe``, ``random-3``, ...), kind, and per steered layer the vector that
    moves the probe's reading by +1 target unit (probe) or a vector of that norm (controls)."""

    name: str
    kind: str
    per_unit: dict[int, np.ndarray]


def run_steer(
    dataset: str,
    model: str = DEFAULT_MODEL,
    *,
    question: str | None = None,
    prompt: str = "empty",
    workspace: Workspace | str | Path | None = None,
    target: str | None = None,
    shifts: Sequence[float] | None = None,
    layer: int | None = None,
    window: int = 1,
    positions: str = "last",
    generated: bool = False,
    random_directions: int = 5,
    orthogonal_directions: int = 1,
    random_init: bool = True,
    use_cache: bool = True,
    fmt: str = "auto",
    shots: int = DEFAULT_SHOTS,
    limit: int | None = DEFAULT_STEER_LIMIT,
    batch_size: int | None = None,
    max_new_tokens: int | None = None,
    dtype: str = "auto",
    device: str = "auto",
    quantization: str | None = None,
    gguf_file: str | None = None,
    revision: str | None = None,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    progress: bool = True,
) -> Path:
    """Steer ``model`` along the probe direction of ``target`` (default: the dataset's first target) while it answers
    ``question`` about ``limit`` seeded test entities, with the controls, and write the dose-response; return the
    results folder (reused when finished). See the module docstring."""
    clock, cpu = time.perf_counter(), time.process_time()
    if positions not in POSITIONS:
        raise WorldprobeError(f"unknown positions {positions!r}", field="positions", hint=f"one of {POSITIONS}")
    if window < 1:
        raise WorldprobeError(f"--window must be at least 1, not {window}", field="window")
    if random_directions < 0 or orthogonal_directions < 0:
        raise WorldprobeError("the numbers of control directions cannot be negative", field="random")
    ws = as_workspace(workspace)
    options = setup_mod.model_options(dtype, device, quantization, gguf_file, seed, revision)
    setup_mod.check_format(model, fmt, options)
    s = setup_mod.prepare(ws, dataset, model, prompt, question, layer=layer, steerable=True, revision=revision,
                          dtype=cache_dtype(dtype, device), progress=progress)  # fmt: skip
    target = target or s.targets[0]
    if target not in s.targets:
        raise WorldprobeError(f"{dataset} has no target {target!r}", field="target", hint=f"targets: {s.targets}")
    t_index = s.targets.index(target)
    chosen_shifts = sorted({0.0, *[float(v) for v in (shifts or DEFAULT_SHIFTS[target])]})
    layers = list(range(s.layer, s.layer + window))
    if layers[-1] >= s.n_layers:
        raise WorldprobeError(
            f"steering after block {layers[-1]} (the last of {s.n_layers}) cannot reach the answer: the entity's state "
            "there is read by no later position", field="layer", hint="choose an earlier --layer or a smaller --window",
        )  # fmt: skip
    missing = [v for v in layers if v not in s.cache.layers]
    if missing:
        raise WorldprobeError(f"layers {missing} are not in the activation cache", file=s.cache.path, field="layer")
    rows = setup_mod.sample_rows(s.entities["is_test"].to_numpy(dtype=bool) & np.isfinite(s.y).all(axis=1), limit,
                                 seed)  # fmt: skip
    budget = max_new_tokens or s.question.max_new_tokens
    twin_manifest = _twin_manifest(ws, s, layers, seed) if random_init else None
    settings = {
        "stage": "steer", "question": s.question.name, "target": target, "shifts": chosen_shifts, "layers": layers,
        "positions": positions, "generated": generated, "random": random_directions,
        "orthogonal": orthogonal_directions, "random_init": random_init, "use_cache": use_cache, "format": fmt,
        "shots": shots, "limit": limit, "max_new_tokens": budget, "seed": seed, "resamples": resamples,
        "model_options": options, "neutral": NEUTRAL_CONTINUATION,
    }  # fmt: skip
    key = run_key([s.cache.manifest, *([twin_manifest] if twin_manifest else [])], settings)
    folder = setup_mod.result_folder(s, "steer", key)
    if is_complete(folder, key, (STEERING,)):
        return folder

    twin_path = twin_manifest["path"] if twin_manifest else None
    directions, coefs = _directions(s, layers, t_index, random_directions, orthogonal_directions, twin_path, seed)
    items = _items(len(rows), directions, chosen_shifts)
    edit = Edit(_vectors(items, directions, layers, window), positions=positions, generated=generated)
    loaded = load_model_kept(model, **options)
    texts, encoded, used = setup_mod.prompts_for(s, loaded.tokenizer, rows, fmt, shots, seed)
    size = batch_size or default_batch_size(loaded)
    item_encoded = [encoded[i] for i in items["entity"]]
    answers = generate(loaded, item_encoded, max_new_tokens=budget, batch_size=size, edit=edit, use_cache=use_cache,
                       progress=progress, desc=f"steer {dataset}")  # fmt: skip
    neutral = _neutral(loaded.tokenizer, s.entities.loc[rows, "text"].astype(str).tolist())
    logprob = continuation_logprobs(loaded, [neutral[i] for i in items["entity"]], batch_size=max(1, size // 2),
                                    edit=Edit(edit.vectors, positions=positions), progress=progress)  # fmt: skip

    table = _table(s, rows, items, answers, logprob, t_index, directions, coefs, window)
    table.insert(0, "format", used)
    summary = {
        "run_key": key, "stage": "steer", "dataset": dataset, "model": model, "prompt": prompt,
        "question": {"name": s.question.name, "kind": s.question.kind, "template": s.question.template},
        "format": used, "target": target, "shifts": chosen_shifts, "layers": layers, "positions": positions,
        "generated": generated, "use_cache": use_cache, "max_new_tokens": budget, "n_entities": len(rows),
        "n_items": len(items), "probe": setup_mod.probe_record(s), "settings": settings, "seed": seed,
        "edit_size": _edit_size(s, directions[0], layers, chosen_shifts, window),
        "controls": {"random": random_directions, "orthogonal": orthogonal_directions, "random_init": random_init,
                     "twin_cache": (twin_manifest or {}).get("path")},
        "neutral_continuation": NEUTRAL_CONTINUATION,
        **dose.summarise(table, len(rows), target, resamples=resamples, seed=seed),
        "time": {"wall_seconds": time.perf_counter() - clock, "cpu_seconds": time.process_time() - cpu},
    }  # fmt: skip
    return write_run(folder, {STEERING: table}, summary)


def _edit_size(s: setup_mod.Setup, probe: Direction, layers: list[int], shifts: list[float], window: int) -> dict:
    """How large each dose's probe edit is: its norm, relative to the median residual norm of the layer's cached
    entities, and in standard deviations of the train activations along the edit."""
    out = {}
    for v in layers:
        x = np.asarray(s.cache.layer(v), dtype=np.float64)[s.train]
        unit_vector = probe.per_unit[v]
        along = x @ (unit_vector / np.linalg.norm(unit_vector))
        median_norm = float(np.median(np.linalg.norm(x, axis=1)))
        out[str(v)] = {
            "per_unit_norm": float(np.linalg.norm(unit_vector)), "median_residual_norm": median_norm,
            "std_along_edit": float(along.std()),
            "by_shift": {str(sh): {"norm": abs(sh) / window * float(np.linalg.norm(unit_vector)),
                                   "relative_norm": abs(sh) / window * float(np.linalg.norm(unit_vector)) / median_norm,
                                   "in_std_along_edit": abs(sh) / window * float(np.linalg.norm(unit_vector))
                                   / float(along.std())} for sh in shifts if sh != 0},
        }  # fmt: skip
    return out


def _twin_manifest(ws: Workspace, s: setup_mod.Setup, layers: list[int], seed: int) -> dict:
    """The random-init twin's cache (extracted when missing, as the probe stage's ``random_init`` control does)."""
    from worldprobe.extract import extract_twin, open_cache

    path = extract_twin(s.dataset, s.model, s.prompt, s.cache.manifest, seed=seed, workspace=ws, layers=layers)
    return {**open_cache(path).manifest, "path": str(path)}


def _directions(
    s: setup_mod.Setup, layers: list[int], t_index: int, n_random: int, n_orthogonal: int, twin: str | None, seed: int
) -> tuple[list[Direction], dict[int, np.ndarray]]:
    """The probe direction and the controls per steered layer (the probe refitted at each layer of a window), and
    the probe's coefficients (k, d) per layer."""
    probe_units, norms, coefs, x_trains = {}, {}, {}, {}
    for v in layers:
        probe = s.probe if v == s.layer else direction.fit_probe(s.cache.layer(v), s.y, s.train)
        coefs[v] = direction.coefficients(probe)
        probe_units[v] = direction.unit_shift_vector(coefs[v], t_index)
        norms[v] = float(np.linalg.norm(probe_units[v]))
        x_trains[v] = np.asarray(s.cache.layer(v), dtype=np.float32)[s.train]
    out = [Direction("probe", "probe", probe_units)]
    seeds = np.random.default_rng(seed).integers(0, 2**31, size=(2, max(n_random, n_orthogonal, 1)))
    for k in range(n_random):
        out.append(Direction(f"random-{k}", "random", {
            v: norms[v] * direction.random_direction(len(probe_units[v]), int(seeds[0, k]) + v) for v in layers}))
    for k in range(n_orthogonal):
        out.append(Direction(f"orthogonal-{k}", "orthogonal", {
            v: norms[v] * direction.orthogonal_direction(x_trains[v], coefs[v], int(seeds[1, k]) + v) for v in layers}))
    if twin:
        out.append(Direction("random_init", "random_init", _twin_units(s, layers, t_index, norms, twin)))
    return out, coefs


def _twin_units(s: setup_mod.Setup, layers: list[int], t_index: int, norms: dict[int, float], twin_path: str) -> dict:
    """The random-init twin's probe direction per layer (fitted on the same train entities), at the probe's norm."""
    from worldprobe.extract import open_cache

    twin = open_cache(twin_path)
    position = pd.Series(np.arange(len(twin.entities)), index=twin.entities["entity_id"].astype(str))
    wanted = s.entities["entity_id"].astype(str)
    if not wanted.isin(position.index).all():
        raise WorldprobeError("the random-init cache lacks entities of the model's cache", file=twin.path,
                              hint="rebuild both caches from the same dataset table and --limit")  # fmt: skip
    order = position[wanted].to_numpy()
    out = {}
    for v in layers:
        x = np.asarray(twin.layer(v), dtype=np.float32)[order]
        coef = direction.coefficients(direction.fit_probe(x, s.y, s.train))
        out[v] = norms[v] * direction.unit(direction.unit_shift_vector(coef, t_index))
    return out


def _items(n_entities: int, directions: list[Direction], shifts: list[float]) -> pd.DataFrame:
    """One unsteered item per entity, and one per entity x direction x non-zero shift."""
    base = [(e, "none", "none", 0.0) for e in range(n_entities)]
    steered = [(e, d.name, d.kind, sh) for d in directions for sh in shifts if sh != 0 for e in range(n_entities)]
    return pd.DataFrame(base + steered, columns=["entity", "direction", "kind", "shift"])


def _vectors(items: pd.DataFrame, directions: list[Direction], layers: list[int], window: int) -> dict[int, np.ndarray]:
    """(n_items, d) float32 per steered layer: shift / window times the direction's per-unit vector."""
    by_name = {d.name: d for d in directions}
    d_model = len(directions[0].per_unit[layers[0]])
    out = {v: np.zeros((len(items), d_model), dtype=np.float32) for v in layers}
    for i, (name, shift) in enumerate(zip(items["direction"], items["shift"], strict=True)):
        if name == "none":
            continue
        for v in layers:
            out[v][i] = (shift / window) * by_name[name].per_unit[v]
    return out


def _neutral(tokenizer, texts: list[str]) -> list:
    """Each entity followed by the neutral continuation (BOS first when the tokenizer has one)."""
    return questions.encode_prompts(tokenizer, [t + NEUTRAL_CONTINUATION for t in texts],
                                    [(0, len(t)) for t in texts])  # fmt: skip


def _table(
    s: setup_mod.Setup, rows: np.ndarray, items: pd.DataFrame, answers: list, logprob: np.ndarray, t_index: int,
    directions: list[Direction], coefs: dict[int, np.ndarray], window: int,
) -> pd.DataFrame:  # fmt: skip
    """The steering table: one row per item with the answer, its reading, the shift against the entity's unsteered
    answer, the probe's own reading shift, the vector norm and the side effect."""
    base = setup_mod.base_columns(s, rows)
    table = items.join(base.iloc[items["entity"].to_numpy()].reset_index(drop=True))
    table["answer_text"] = [a.text for a in answers]
    table["n_new_tokens"] = [len(a.token_ids) for a in answers]
    table["stop"] = [a.stop for a in answers]
    entity_rows = rows[items["entity"].to_numpy()]
    table = table.join(setup_mod.parse_answers(s, table["answer_text"].tolist(), entity_rows))
    target = s.targets[t_index]
    by_name = {d.name: d for d in directions}
    layers = sorted(coefs)
    reading_shift, norm = [], []
    for name, shift in zip(items["direction"], items["shift"], strict=True):
        if name == "none":
            reading_shift.append(0.0)
            norm.append(0.0)
            continue
        vectors = {v: (shift / window) * by_name[name].per_unit[v] for v in layers}
        reading_shift.append(float(sum(coefs[v][t_index] @ vectors[v] for v in layers)))
        norm.append(float(np.sqrt(sum(np.sum(vectors[v] ** 2) for v in layers))))
    table["vector_norm"] = norm
    table["probe_reading_shift"] = reading_shift
    table["parsed"] = table["answer_status"] != UNPARSED
    baseline = table[table["kind"] == "none"].set_index("entity")
    table["baseline_text"] = baseline["answer_text"].reindex(table["entity"]).to_numpy()
    table["baseline_reading"] = baseline[f"reading_{target}"].reindex(table["entity"]).to_numpy()
    table["answer_shift"] = table[f"reading_{target}"] - table["baseline_reading"]
    table["changed"] = table["answer_text"] != table["baseline_text"]
    table["logprob_neutral"] = logprob
    table["logprob_delta"] = logprob - pd.Series(logprob[items["kind"].to_numpy() == "none"]).reindex(
        table["entity"]).to_numpy()  # fmt: skip
    return table
