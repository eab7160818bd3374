"""``worldprobe steer``: which direction, at which layer and position, moves the model's answer
(docs/how-to/behaviour.md), chosen on train entities and then measured on test entities beside controls of the same
norm.

1. **Directions** per layer (``worldprobe.interventions.directions``; train rows only): ``ridge``, ``pattern``,
   ``mean_diff``, ``pls<k>`` or the user's ``.npy`` vectors, each a unit vector oriented to raise the steered target;
   ``das`` is learned with the model by interchange interventions on other train entities
   (:mod:`~worldprobe.interventions.das`; split ``das`` of ``steering.parquet`` holds their unsteered answers).
2. **Doses** are multiples of |Δμ| at the layer (the norm of the top-minus-bottom-quartile mean difference): every
   direction at a layer is added at the same norm; each row also records the edit's norm relative to the median
   residual norm (‖Δh‖/‖h‖) and the dose in target units through the direction's own calibration.
3. **The map** (split ``select``): a seeded sample of train entities (never a few-shot example of the prompt) is
   asked with every direction x layer x position x dose, beside ``map_random`` random directions per layer and
   position (the random band); :mod:`~worldprobe.interventions.steermap` gives the antisymmetric shift and the
   ordered share with intervals over entities.
4. **The choice**, on those train entities only: the direction, layer and position whose antisymmetric shift at the
   largest dose is largest.
5. **The test** (split ``test``): test entities asked with the chosen direction, the ``ridge`` direction at the same
   place (for comparison), ``random`` random directions of the same norm, and the random-init twin's direction of the
   chosen method; side effects: the log-probability of a neutral continuation after the steered entity, and the
   answer when the same edit is made at another entity of the prompt (the first few-shot example).
6. **The verdict**: the chosen direction's antisymmetric shift against 0, against the random directions and against
   the twin's direction (paired), under Holm over those tests (``worldprobe.probes.inference``).

The edit is added after block l (l = 0: the embedding output) at the entity's last token (``entity``: every entity
token) of the prompt pass, and at generated tokens too with ``generated`` (``worldprobe.interventions.generate``:
once per position, with or without the KV cache). Writes ``steering.parquet`` (one row per answer),
``steering_map.parquet`` (:data:`~worldprobe.interventions.steermap.MAP_COLUMNS`) and ``summary.json`` into
``results/<dataset>__<model>__<prompt>__steer-<question>__<key>/``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from worldprobe.checks import checked_arguments
from worldprobe.config import (
    DEFAULT_MODEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    DEFAULT_STEER_LIMIT,
)
from worldprobe.errors import WorldprobeError
from worldprobe.extract.models import LoadedModel, load_requested, requested
from worldprobe.extract.runner import default_batch_size
from worldprobe.extract.tokens import EncodedEntity
from worldprobe.interventions import das, questions, steermap
from worldprobe.interventions import directions as dirs
from worldprobe.interventions import setup as setup_mod
from worldprobe.interventions.generate import Answer, Edit, continuation_logprobs, generate
from worldprobe.interventions.options import (
    STEER_ARGUMENTS,
    Asking,
    DasSettings,
    Steering,
    checked_doses,
    checked_methods,
    checked_positions,
)
from worldprobe.interventions.parse import UNPARSED
from worldprobe.interventions.steerchoice import CHOICE_RULE, MIN_PARSED, choose, summarise_test
from worldprobe.probes.results import STEERING, STEERING_MAP, RunFolder, is_complete, run_key, write_run
from worldprobe.reuse import starting_work
from worldprobe.workspace import Workspace, as_workspace

NEUTRAL_CONTINUATION = " is the subject of this sentence."
"""The side-effect probe: its log-probability after the (steered) entity should not care about the steered target."""


@dataclass(frozen=True)
class Cell:
    """One place to steer: a direction (its layer inside) and the positions mode."""

    direction: dirs.SteeringDirection
    position: str

    @property
    def kind(self) -> str:
        return self.direction.method if self.direction.method in ("random", "random_init") else "method"


@checked_arguments(**STEER_ARGUMENTS)
def run_steer(
    dataset: str,
    model: str | Any = DEFAULT_MODEL,
    *,
    question: str | None = None,
    prompt: str = "empty",
    workspace: Workspace | str | Path | None = None,
    steering: Steering = Steering(),
    asking: Asking = Asking(),
    limit: int | None = DEFAULT_STEER_LIMIT,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    progress: bool = True,
) -> RunFolder:
    """Map which direction x layer x position moves ``model``'s answers to ``question`` on train entities, choose
    the best there, measure it on ``limit`` test entities beside its controls, and write the results folder (reused
    when finished). ``steering``: what is mapped and tested (:class:`Steering`); ``model`` and ``asking`` as for
    ``run_ask``. See the module docstring."""
    request = requested(model, seed)
    fmt, shots, batch_size, max_new_tokens = asking.format, asking.shots, asking.batch_size, asking.max_new_tokens
    st = steering
    target, directions, layers, positions, doses = st.target, st.directions, st.layers, st.positions, st.doses
    generated, use_cache, select_limit, map_random = st.generated, st.use_cache, st.select_limit, st.map_random
    random_directions, random_init, das_settings = st.random_directions, st.random_init, st.das
    revision = request.revision
    model = request.name
    clock, cpu = time.perf_counter(), time.process_time()
    doses = checked_doses(doses)
    positions = checked_positions(positions)
    methods = checked_methods(directions)
    ws = as_workspace(workspace)
    setup_mod.check_format(request, fmt)
    manifest = setup_mod.cache_manifest(ws, dataset, model, prompt, revision=revision, dtype=request.cache_dtype)
    chosen_layers = checked_layers(layers, int(manifest["n_layers"]), [int(v) for v in manifest["layers"]])
    s = setup_mod.prepare(ws, dataset, model, prompt, question, steerable=True, revision=revision,
                          dtype=request.cache_dtype, progress=progress)  # fmt: skip
    target = target or s.targets[0]
    if target not in s.targets:
        raise WorldprobeError(f"{dataset} has no target {target!r}", field="target", hint=f"targets: {s.targets}")
    t_index = s.targets.index(target)
    budget = max_new_tokens or s.question.max_new_tokens
    settings = {
        "stage": "steer", "question": s.question.name, "target": target, "directions": methods,
        "direction_files": {m: setup_mod.file_digest(m) for m in methods if m.endswith(".npy")},
        "layers": chosen_layers, "positions": positions, "doses": doses, "generated": generated,
        "select_limit": select_limit, "limit": limit, "map_random": map_random, "random": random_directions,
        "random_init": random_init, "use_cache": use_cache, "format": fmt, "shots": shots, "max_new_tokens": budget,
        "seed": seed, "resamples": resamples, "model_options": request.options, "neutral": NEUTRAL_CONTINUATION,
        "choice": CHOICE_RULE, **({"das": das_settings.to_dict()} if "das" in methods else {}),
    }  # fmt: skip
    key = run_key([s.cache.manifest], settings)
    folder = setup_mod.result_folder(s, "steer", key)
    if is_complete(folder, key, (STEERING, STEERING_MAP)):
        return folder
    starting_work(f"{folder.name}")

    y = s.y[:, t_index]
    stats, per_layer = _layer_directions(s, chosen_layers, [m for m in methods if m != "das"], y, map_random, seed)
    loaded = load_requested(request)
    examples_used, select_rows, pool = _select_rows(s, select_limit, shots, fmt, loaded, seed)
    test_rows = setup_mod.nested_sample(s.entities["is_test"].to_numpy(dtype=bool) & np.isfinite(y), limit, seed)
    asker = _Asker(s, loaded, fmt, shots, seed, budget, batch_size or default_batch_size(loaded), use_cache,
                   generated, t_index, progress)  # fmt: skip

    learned = None
    if "das" in methods:
        pool[select_rows] = False
        learned = _das_directions(asker, setup_mod.nested_sample(pool, das_settings.entities, seed + 11), chosen_layers,
                                  per_layer, methods.index("das"), y, das_settings)  # fmt: skip
    select = asker.baseline("select", select_rows)
    cells = [Cell(d, p) for v in chosen_layers for d in per_layer[v] for p in positions]
    select_items = asker.steer("select", select_rows, select.prompts, cells, doses, stats, desc="steering map")
    baselines = {"select": select.readings}
    chosen = choose(steermap.steering_map(select_items, baselines, doses, resamples=resamples, seed=seed), doses)

    test = asker.baseline("test", test_rows)
    layer, position = int(chosen["layer"]), str(chosen["position"])
    best = next(d for d in per_layer[layer] if d.name == chosen["direction"])
    test_cells = [Cell(best, position)]
    if best.method != "ridge":
        test_cells += [Cell(d, position) for d in per_layer[layer] if d.method == "ridge"]
    test_cells += [Cell(d, position) for d in dirs.random_directions(random_directions, layer, len(best.unit),
                                                                      seed + 1)]  # fmt: skip
    twin = _twin_direction(ws, s, layer, best, y, seed) if random_init else None
    if twin is not None:
        test_cells.append(Cell(twin, position))
    test_items = asker.steer("test", test_rows, test.prompts, test_cells, doses, stats, desc="steering test")
    side = asker.side_effects(test_rows, test.prompts, Cell(best, position), test_cells, doses, stats)
    baselines["test"] = test.readings
    tables = [learned.table] if learned is not None else []
    items = pd.concat([*tables, select.table, select_items, test.table, test_items, side], ignore_index=True)
    steering_map = steermap.steering_map(items[items["kind"].isin(("method", "random", "random_init"))], baselines,
                                         doses, resamples=resamples, seed=seed)  # fmt: skip
    summary = {
        "run_key": key, "stage": "steer", "dataset": dataset, "model": model, "prompt": prompt,
        "question": {"name": s.question.name, "kind": s.question.kind, "template": s.question.template},
        "format": asker.used, "target": target, "unit": UNITS.get(target, target), "doses": doses,
        "doses_unit": "multiples of |Δμ| (the norm of the top-minus-bottom-quartile mean difference at the layer)",
        "layers": chosen_layers, "positions": positions, "directions": methods, "generated": generated,
        "use_cache": use_cache, "max_new_tokens": budget, "probe": setup_mod.probe_record(s), "settings": settings,
        "select": {"n_entities": len(select_rows), "few_shot_examples_left_out": examples_used},
        "das": learned.record if learned is not None else None,
        "random_init_control": _twin_note(best, twin is not None, random_init),
        "n_test_entities": len(test_rows), "layer_stats": {str(v): _stats_record(stats[v]) for v in chosen_layers},
        "calibration": {f"{d.name}@{v}": {"per_target_unit": d.per_target_unit, "flipped": d.flipped,
                                          "cos_mean_diff": float(d.unit @ stats[v].mean_diff / stats[v].dmu_norm)}
                        for v in chosen_layers for d in per_layer[v] if d.method != "random"},
        "chosen": {**{k: chosen[k] for k in ("direction", "method", "layer", "position")}, "n": int(chosen["n"]),
                   "criterion": CHOICE_RULE if chosen["readable"] else
                   "the largest antisymmetric shift at the largest dose on the train (select) entities (no cell had "
                   f"both answers parsed for {MIN_PARSED:.0%} of them)"},
        **summarise_test(items, baselines["test"], best, position, doses, twin is not None, resamples, seed,
                       UNITS.get(target, target)),
        "time": {"wall_seconds": time.perf_counter() - clock, "cpu_seconds": time.process_time() - cpu},
    }  # fmt: skip
    return write_run(folder, {STEERING: items, STEERING_MAP: steering_map}, summary)


UNITS = {"year": "years", "latitude": "degrees of latitude", "longitude": "degrees of longitude"}


# --- checks ------------------------------------------------------------------------------------------------------


def checked_layers(layers: Sequence[int] | None, n_layers: int, cached: list[int]) -> list[int]:
    """The layers to steer: default every cached layer before the last block; each must be cached and read by a
    later position (not after the last block)."""
    if layers is None:
        return [v for v in cached if v < n_layers]
    values = sorted({int(v) for v in layers})
    late = [v for v in values if v >= n_layers]
    if late:
        raise WorldprobeError(
            f"steering after block {late[0]} (the last of {n_layers}) cannot reach the answer: the entity's state "
            "there is read by no later position", field="layers", hint=f"layers 0..{n_layers - 1}",
        )  # fmt: skip
    missing = [v for v in values if v not in cached]
    if missing:
        raise WorldprobeError(f"layers {missing} are not in the activation cache", field="layers",
                              hint=f"cached: {cached}")  # fmt: skip
    return values


# --- directions --------------------------------------------------------------------------------------------------


def _layer_directions(s: setup_mod.Setup, layers: list[int], methods: list[str], y: np.ndarray, map_random: int,
                      seed: int) -> tuple[dict[int, dirs.LayerStats], dict[int, list[dirs.SteeringDirection]]]:
    """Per layer: its dose statistics and the directions of the map (methods, then random ones), from train rows."""
    stats, per_layer = {}, {}
    train = s.train & np.isfinite(y)
    for v in layers:
        x = np.asarray(s.cache.layer(v), dtype=np.float64)[train]
        stats[v] = dirs.layer_stats(v, x, y[train])
        found = dirs.method_directions(methods, v, x, y[train], stats[v], s.n_layers)
        per_layer[v] = found + dirs.random_directions(map_random, v, x.shape[1], seed)
    return stats, per_layer


def _twin_direction(ws: Workspace, s: setup_mod.Setup, layer: int, best: dirs.SteeringDirection, y: np.ndarray,
                    seed: int) -> dirs.SteeringDirection | None:  # fmt: skip
    """The chosen method's direction on the random-init twin's activations (same train entities), or None for a user
    file or a learned direction (a twin has no counterpart of the user's vector, and gives no answers to learn from)."""
    if best.method in NO_TWIN:
        return None
    from worldprobe.extract import extract_twin, open_cache

    twin = open_cache(extract_twin(s.dataset, s.model, s.prompt, s.cache.manifest, seed=seed, workspace=ws,
                                   layers=[layer]))  # fmt: skip
    position = pd.Series(np.arange(len(twin.entities)), index=twin.entities["entity_id"].astype(str))
    wanted = s.entities["entity_id"].astype(str)
    if not wanted.isin(position.index).all():
        raise WorldprobeError("the random-init cache lacks entities of the model's cache", file=twin.path,
                              hint="rebuild both caches from the same dataset table and --limit")  # fmt: skip
    train = s.train & np.isfinite(y)
    x = np.asarray(twin.layer(layer), dtype=np.float64)[position[wanted].to_numpy()][train]
    found = dirs.method_directions([best.method], layer, x, y[train], dirs.layer_stats(layer, x, y[train]),
                                   s.n_layers)[0]  # fmt: skip
    return dirs.SteeringDirection("random_init", "random_init", layer, found.unit, found.per_target_unit, found.flipped)


NO_TWIN = {"file": "a user's vector has no counterpart on the twin",
           "das": "a learned direction needs the model's own answers, which a random-init twin does not give"}


def _twin_note(best: dirs.SteeringDirection, with_twin: bool, asked: bool) -> str:
    """Whether the random-init twin's direction was a control of this run, and why not."""
    if with_twin:
        return f"run: the {best.method} direction computed on the random-init twin's activations"
    return "not asked (random_init=False)" if not asked else f"not run: {NO_TWIN[best.method]}"


@dataclass
class _Learned:
    """The das directions' unsteered train answers (split ``das``) and what training recorded."""

    table: pd.DataFrame
    record: dict[str, Any]


def _das_directions(asker: _Asker, rows: np.ndarray, layers: list[int], per_layer: dict[int, list],
                    at: int, y: np.ndarray, settings: DasSettings) -> _Learned:  # fmt: skip
    """Train a ``das`` direction per layer on the train entities ``rows`` (their own answers) and insert it at
    position ``at`` of each layer's directions, oriented by those answers (:func:`das.train_das`) and calibrated on
    the cached train activations like every method."""
    asked = asker.baseline("das", rows)
    readings = np.where(asked.table["parsed"].to_numpy(), asked.table["reading"].to_numpy(), np.nan)
    fits = das.train_das(asker.loaded, asked.prompts, [a.token_ids for a in asked.answers], readings, layers,
                         settings=settings, seed=asker.seed, progress=asker.progress)  # fmt: skip
    s = asker.s
    train = s.train & np.isfinite(y)
    agrees = {}
    for v in layers:
        x = np.asarray(s.cache.layer(v), dtype=np.float64)[train]
        cached = dirs.oriented("das", "das", v, fits[v].vector, x, y[train])
        agrees[v] = not cached.flipped
        per_layer[v].insert(at, dirs.SteeringDirection("das", "das", v, fits[v].vector, cached.per_target_unit))
    record = {"n_entities": len(rows), "n_parsed": int(np.isfinite(readings).sum()), "settings": settings.to_dict(),
              "rule": "train entities outside the map's select sample and the prompt's few-shot examples",
              "oriented": "the das entities' states along it, in the question's prompt, rise with their answers",
              "layers": {str(v): {**fits[v].record(), "cached_activations_agree": agrees[v]}
                         for v in layers}}  # fmt: skip
    return _Learned(asked.table, record)


def _stats_record(stats: dirs.LayerStats) -> dict[str, float]:
    return {"dmu_norm": stats.dmu_norm, "target_gap": stats.target_gap, "median_residual_norm": stats.median_norm,
            "dmu_relative_norm": stats.dmu_norm / stats.median_norm}  # fmt: skip


# --- asking ------------------------------------------------------------------------------------------------------


def _select_rows(s: setup_mod.Setup, limit: int, shots: int, fmt: str, loaded: LoadedModel, seed: int
                 ) -> tuple[int, np.ndarray, np.ndarray]:  # fmt: skip
    """A seeded sample of train entities for the map, leaving out the prompt's few-shot examples (their answers are
    in the prompt); the number of train entities left out for that; the mask of train entities it was drawn from."""
    train = s.train & np.isfinite(s.y).all(axis=1)
    used = questions.resolve_format(loaded.tokenizer, fmt)
    left_out = 0
    if used == "fewshot" and shots:
        texts = {t for t, _ in questions.fewshot_examples(s.entities[s.train], s.question, shots, seed)}
        example = s.entities["text"].astype(str).isin(texts).to_numpy()
        left_out = int((train & example).sum())
        train &= ~example
    return left_out, setup_mod.nested_sample(train, limit, seed), train


@dataclass
class _Asked:
    """The unsteered answers of one split: the prompts, the table rows and each entity's reading."""

    prompts: list[EncodedEntity]
    table: pd.DataFrame
    readings: pd.Series  # entity index -> reading of the steered target
    answers: list[Answer]


class _Asker:
    """Asks the rendered question of rows of the cache, unsteered or with one cell's edit at a set of doses."""

    def __init__(self, s: setup_mod.Setup, loaded: LoadedModel, fmt: str, shots: int, seed: int, budget: int,
                 batch_size: int, use_cache: bool, generated: bool, t_index: int, progress: bool) -> None:  # fmt: skip
        self.s, self.loaded, self.fmt, self.shots, self.seed = s, loaded, fmt, shots, seed
        self.budget, self.batch_size, self.use_cache, self.generated = budget, batch_size, use_cache, generated
        self.t_index, self.progress = t_index, progress
        self.used = questions.resolve_format(loaded.tokenizer, fmt)

    def baseline(self, split: str, rows: np.ndarray) -> _Asked:
        _, encoded, _ = setup_mod.prompts_for(self.s, self.loaded.tokenizer, rows, self.fmt, self.shots, self.seed)
        answers = generate(self.loaded, encoded, max_new_tokens=self.budget, batch_size=self.batch_size,
                           use_cache=self.use_cache, progress=self.progress, desc=f"unsteered {split}")  # fmt: skip
        items = pd.DataFrame({"entity": np.arange(len(rows)), "method": "none", "direction": "none", "kind": "none",
                              "layer": -1, "position": "none", "dose": 0.0, "edit_norm": 0.0, "relative_norm": 0.0,
                              "dose_target_units": 0.0})  # fmt: skip
        table = self._table(split, rows, items, answers)
        return _Asked(encoded, table, table.set_index("entity")["reading"], answers)

    def steer(self, split: str, rows: np.ndarray, encoded: list[EncodedEntity], cells: list[Cell], doses: list[float],
              stats: dict[int, dirs.LayerStats], *, desc: str, at: list[EncodedEntity] | None = None,
              kind: str | None = None) -> pd.DataFrame:  # fmt: skip
        """Every cell x dose x row; each (layer, position) group of cells is one generation job (``at``: the
        positions to edit, when not the asked entity's)."""
        frames = []
        groups: dict[tuple[int, str], list[Cell]] = {}
        for cell in cells:
            groups.setdefault((cell.direction.layer, cell.position), []).append(cell)
        bar = tqdm(total=len(cells) * len(doses) * len(rows), desc=desc, unit="answer", disable=not self.progress,
                   dynamic_ncols=True)  # fmt: skip
        for (layer, position), group in groups.items():
            plan = [(cell, dose) for cell in group for dose in doses]
            norm = stats[layer].dmu_norm
            vectors = np.zeros((len(plan) * len(rows), len(group[0].direction.unit)), dtype=np.float32)
            meta = []
            for i, (cell, dose) in enumerate(plan):
                vectors[i * len(rows) : (i + 1) * len(rows)] = dose * norm * cell.direction.unit
                d = cell.direction
                meta.append({"method": d.method, "direction": d.name, "kind": kind or cell.kind, "layer": layer,
                             "position": position, "dose": dose, "edit_norm": abs(dose) * norm,
                             "relative_norm": abs(dose) * norm / stats[layer].median_norm,
                             "dose_target_units": np.sign(dose) * d.target_units(abs(dose) * norm)})  # fmt: skip
            prompts = (at or encoded) * len(plan)
            answers = generate(self.loaded, prompts, max_new_tokens=self.budget, batch_size=self.batch_size,
                               edit=Edit({layer: vectors}, positions=position, generated=self.generated),
                               use_cache=self.use_cache, progress=False)  # fmt: skip
            bar.update(len(prompts))
            items = pd.DataFrame([{**m, "entity": e} for m in meta for e in range(len(rows))])
            frames.append(self._table(split, rows, items, answers))
        bar.close()
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def side_effects(self, rows: np.ndarray, encoded: list[EncodedEntity], best: Cell, cells: list[Cell],
                     doses: list[float], stats: dict[int, dirs.LayerStats]) -> pd.DataFrame:  # fmt: skip
        """The neutral continuation's log-probability after the entity, unsteered and at ±the largest dose of the
        chosen direction and the random ones (``logprob_delta`` on the test items); and the answers when the chosen
        edit is made at the first few-shot example's entity instead (kind ``other_entity``)."""
        k = max(doses)
        layer, position = best.direction.layer, best.position
        neutral = questions.encode_prompts(self.loaded.tokenizer,
                                           [t + NEUTRAL_CONTINUATION for t in self._texts(rows)],
                                           [(0, len(t)) for t in self._texts(rows)])  # fmt: skip
        measured = [c for c in cells if c.kind in ("method", "random") and c.direction.method != "ridge"
                    or c is best]  # fmt: skip
        plan = [(None, 0.0)] + [(cell, dose) for cell in measured for dose in (-k, k)]
        vectors = np.zeros((len(plan) * len(rows), len(best.direction.unit)), dtype=np.float32)
        for i, (cell, dose) in enumerate(plan):
            if cell is not None:
                vectors[i * len(rows) : (i + 1) * len(rows)] = dose * stats[layer].dmu_norm * cell.direction.unit
        logprob = continuation_logprobs(self.loaded, neutral * len(plan), batch_size=max(1, self.batch_size // 2),
                                        edit=Edit({layer: vectors}, positions=position),
                                        progress=False).reshape(len(plan), len(rows))  # fmt: skip
        rows_out = [{"split": "test", "entity": e, "method": "neutral", "direction": cell.direction.name if cell
                     else "none", "kind": "neutral", "layer": layer, "position": position, "dose": dose,
                     "logprob_neutral": logprob[i, e], "logprob_delta": logprob[i, e] - logprob[0, e]}
                    for i, (cell, dose) in enumerate(plan) for e in range(len(rows))]  # fmt: skip
        frames = [pd.DataFrame(rows_out)]
        other = self._example_positions(rows)
        if other is not None:
            frames.append(self.steer("test", rows, encoded, [best], [-k, k], stats, desc="other entity", at=other,
                                     kind="other_entity"))  # fmt: skip
        return pd.concat(frames, ignore_index=True)

    def _texts(self, rows: np.ndarray) -> list[str]:
        return self.s.entities.loc[rows, "text"].astype(str).tolist()

    def _example_positions(self, rows: np.ndarray) -> list[EncodedEntity] | None:
        """The prompts with the first few-shot example's entity as the edited position (None without examples)."""
        if self.used != "fewshot" or not self.shots:
            return None
        texts, _, _ = setup_mod.prompts_for(self.s, self.loaded.tokenizer, rows, self.fmt, self.shots, self.seed)
        first = questions.fewshot_examples(self.s.entities[self.s.train], self.s.question, self.shots, self.seed)[0][0]
        start = len("Q: ") + self.s.question.template.index("{entity}")
        return questions.encode_prompts(self.loaded.tokenizer, texts, [(start, start + len(first))] * len(texts))

    def _table(self, split: str, rows: np.ndarray, items: pd.DataFrame, answers: list) -> pd.DataFrame:
        """Item rows with the entity's identity and truth, the answer, its parse and its reading of the target."""
        entity_rows = rows[items["entity"].to_numpy()]
        table = items.assign(split=split, row=entity_rows)
        table["entity_id"] = self.s.entities.loc[entity_rows, "entity_id"].astype(str).to_numpy()
        table["text"] = self.s.entities.loc[entity_rows, "text"].astype(str).to_numpy()
        table["truth"] = self.s.y[entity_rows, self.t_index]
        table["answer_text"] = [a.text for a in answers]
        table["n_new_tokens"] = [len(a.token_ids) for a in answers]
        table["stop"] = [a.stop for a in answers]
        parsed = setup_mod.parse_answers(self.s, table["answer_text"].tolist(), entity_rows)
        table["answer_status"] = parsed["answer_status"].to_numpy()
        table["reading"] = parsed[f"reading_{self.s.targets[self.t_index]}"].to_numpy(dtype=np.float64)
        table["parsed"] = table["answer_status"] != UNPARSED
        return table
