"""``worldprobe context``: tell the model otherwise in context, and see whether the probe's reading and the answer
follow (docs/how-to/behaviour.md; after Wei et al. 2023 and Minder et al., ICLR 2025).

For each test entity the dataset's question is asked under four conditions, the statement placed right before the
question (after any few-shot examples):

- ``none``: no statement;
- ``counterfactual``: a false statement about the entity ("X is in <another country>." / "X died in <year ± Δ>.");
- ``unrelated``: the same false statement about another test entity (does the mere value in context move things?);
- ``true``: the true statement about the entity.

Two things are read per condition: the **probe's reading** (the probe of the bare-name cache, at its train-chosen
layer, applied to the residual stream at the last token of the entity in the question) and the **answer** (parsed
as ``worldprobe ask`` parses it). Each is put as the **fraction of the way** from the truth to the counterfactual
along the counterfactual's displacement D: (value − base)·D / |D|², base the truth (for a group answer: the true
group's point, so a right answer is 0 and a copied counterfactual 1). Counterfactuals: another group whose point is
at least :data:`MIN_DISTANCE_KM` away (places; the entity's counterfactual coordinates move with its group), or the
year shifted by :data:`YEAR_SHIFT` of the dataset (time; the sign seeded per entity). Intervals resample entities;
the paired differences counterfactual − none and counterfactual − unrelated (probe and answer) are tested under Holm.
Writes ``context.parquet`` (one row per condition), ``context_answers.parquet`` (one row per entity x condition) and
``summary.json`` into ``results/<dataset>__<model>__<prompt>__context-<question>__<key>/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from worldprobe.checks import checked_arguments
from worldprobe.config import DEFAULT_MODEL, DEFAULT_RESAMPLES, DEFAULT_SEED
from worldprobe.datasets.registry import get_spec
from worldprobe.errors import WorldprobeError
from worldprobe.extract.models import LoadedModel, load_requested, requested
from worldprobe.extract.runner import default_batch_size, forward_batches
from worldprobe.interventions import setup as setup_mod
from worldprobe.interventions import steermap
from worldprobe.interventions.generate import generate
from worldprobe.interventions.options import CONTEXT_ARGUMENTS, Asking
from worldprobe.interventions.parse import UNPARSED
from worldprobe.probes.bootstrap import fmt
from worldprobe.probes.inference import TEST_RESAMPLES, compare, family
from worldprobe.probes.metrics import haversine_km
from worldprobe.probes.results import CONTEXT, CONTEXT_ANSWERS, RunFolder, is_complete, run_key, write_run
from worldprobe.reuse import starting_work
from worldprobe.workspace import Workspace, as_workspace

CONDITIONS = ("none", "counterfactual", "unrelated", "true")
STATEMENTS = {
    "world_place": "{entity} is in {value}.",
    "us_place": "{entity} is in {value}.",
    "nyc_place": "{entity} is in {value}.",
    "historical_figure": "{entity} died in {value}.",
    "art": "{entity} was released in {value}.",
    "headline": 'The headline "{entity}" was published in {value}.',
}
"""The statement of each dataset: {entity} is the entity's text, {value} a group name or a year."""
YEAR_SHIFT = {"historical_figure": 300.0, "art": 25.0, "headline": 5.0}
"""Years between the truth and a time counterfactual (the sign drawn per entity, seeded)."""
MIN_DISTANCE_KM = {"world_place": 2000.0, "us_place": 1000.0, "nyc_place": 5.0}
"""The counterfactual group's point is at least this far from the true group's."""
DEFAULT_CONTEXT_LIMIT = 100


@checked_arguments(**CONTEXT_ARGUMENTS)
def run_context(
    dataset: str,
    model: str | Any = DEFAULT_MODEL,
    *,
    question: str | None = None,
    prompt: str = "empty",
    workspace: Workspace | str | Path | None = None,
    asking: Asking = Asking(),
    limit: int | None = DEFAULT_CONTEXT_LIMIT,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    progress: bool = True,
) -> RunFolder:
    """Ask ``model`` its question about ``limit`` seeded test entities of ``dataset`` under the four conditions and
    write how far the probe's reading and the answer move toward the counterfactual; return the results folder
    (reused when finished). ``model`` and ``asking`` as for ``run_ask``. See the module docstring."""
    request = requested(model, seed)
    fmt, shots, batch_size, max_new_tokens = asking.format, asking.shots, asking.batch_size, asking.max_new_tokens
    model = request.name
    clock, cpu = time.perf_counter(), time.process_time()
    ws = as_workspace(workspace)
    s = setup_mod.prepare_for(request, ws, dataset, prompt, question, fmt, progress=progress)
    rows = setup_mod.nested_sample(s.entities["is_test"].to_numpy(dtype=bool) & np.isfinite(s.y).all(axis=1), limit,
                                 seed)  # fmt: skip
    if len(rows) < 2:
        raise WorldprobeError("the context experiment needs at least 2 test entities", field="limit")
    budget = max_new_tokens or s.question.max_new_tokens
    settings = {"stage": "context", "question": s.question.name, "format": fmt, "shots": shots, "limit": limit,
                "layer": s.layer, "max_new_tokens": budget, "seed": seed, "resamples": resamples,
                "model_options": request.options, "statement": STATEMENTS[dataset]}  # fmt: skip
    key = run_key([s.cache.manifest], settings)
    folder = setup_mod.result_folder(s, "context", key)
    if is_complete(folder, key, (CONTEXT, CONTEXT_ANSWERS)):
        return folder
    starting_work(f"{folder.name}")
    loaded = load_requested(request)
    plan = counterfactuals(s, rows, seed)
    size = batch_size or default_batch_size(loaded)
    frames = []
    for condition in CONDITIONS:
        prefaces = plan[f"statement_{condition}"].tolist()
        texts, encoded, used = setup_mod.prompts_for(s, loaded.tokenizer, rows, fmt, shots, seed, prefaces)
        answers = generate(loaded, encoded, max_new_tokens=budget, batch_size=size, progress=progress,
                           desc=f"context: {condition}")  # fmt: skip
        readings = probe_readings(s, loaded, encoded, size)
        frame = plan[["entity_id", "text"]].assign(condition=condition, statement=prefaces, prompt_text=texts,
                                                     format=used)  # fmt: skip
        frame["answer_text"] = [a.text for a in answers]
        frame = frame.join(setup_mod.parse_answers(s, frame["answer_text"].tolist(), rows))
        for j, target in enumerate(s.targets):
            frame[f"probe_{target}"] = readings[:, j]
        frame["probe_fraction"] = fraction(readings, plan, "truth", s.targets)
        frame["answer_fraction"] = fraction(frame[[f"reading_{t}" for t in s.targets]].to_numpy(dtype=np.float64),
                                            plan, "answer_base", s.targets)  # fmt: skip
        frame["parsed"] = frame["answer_status"] != UNPARSED
        frames.append(frame.join(plan.drop(columns=["entity_id", "text"]).add_prefix("plan_")))
    answers_table = pd.concat(frames, ignore_index=True)
    per_condition, comparisons, decided = summarise(answers_table, len(rows), resamples=resamples, seed=seed)
    summary = {
        "run_key": key, "stage": "context", "dataset": dataset, "model": model, "prompt": prompt,
        "question": {"name": s.question.name, "kind": s.question.kind, "template": s.question.template},
        "format": answers_table["format"].iloc[0], "statement": STATEMENTS[dataset], "n_entities": len(rows),
        "probe": setup_mod.probe_record(s), "settings": settings, "seed": seed,
        "counterfactual": ({"year_shift": YEAR_SHIFT[dataset]} if s.question.kind == "year" else
                           {"min_distance_km": MIN_DISTANCE_KM.get(dataset)}),
        "conditions": per_condition.set_index("condition").to_dict(orient="index"),
        "comparisons": [c.to_dict() for c in comparisons],
        "outcomes": {key_: d.outcome for (_, key_), d in decided.holm.items()}, "family_size": decided.size,
        "time": {"wall_seconds": time.perf_counter() - clock, "cpu_seconds": time.process_time() - cpu},
    }  # fmt: skip
    summary["verdict"] = context_verdict(summary)
    return write_run(folder, {CONTEXT: per_condition, CONTEXT_ANSWERS: answers_table}, summary)


def counterfactuals(s: setup_mod.Setup, rows: np.ndarray, seed: int) -> pd.DataFrame:
    """Per asked entity: its truth, the counterfactual value (as stated and in target units), the displacement D,
    the base of a group answer, and the statement of each condition."""
    rng = np.random.default_rng([seed, 7])
    entities = s.entities.loc[rows].reset_index(drop=True)
    texts = entities["text"].astype(str).to_numpy()
    truth = s.y[rows]
    template = STATEMENTS[s.dataset]
    out = pd.DataFrame({"entity_id": entities["entity_id"].astype(str), "text": texts})
    if s.question.kind == "year":
        shift = YEAR_SHIFT[s.dataset] * np.where(rng.random(len(rows)) < 0.5, -1.0, 1.0)
        true_value, false_value = np.round(truth[:, 0]), np.round(truth[:, 0] + shift)
        stated_true = [_year(v) for v in true_value]
        stated_false = [_year(v) for v in false_value]
        displacement = (false_value - truth[:, 0])[:, None]
        answer_base = truth
    else:
        column = get_spec(s.dataset).oracle_column
        points = s.centroids if s.centroids is not None else setup_mod.group_centroids(
            s.dataset, s.entities, column, s.targets, s.train)  # fmt: skip
        true_group = entities[column].astype(str).to_numpy()
        false_group = [_far_group(points, g, MIN_DISTANCE_KM.get(s.dataset, 0.0), rng) for g in true_group]
        names = _group_names(s.dataset, points.index)
        stated_true = [names.get(g, g) for g in true_group]
        stated_false = [names.get(g, g) for g in false_group]
        true_point = points.reindex(true_group)[s.targets].to_numpy(dtype=np.float64)
        false_point = points.reindex(false_group)[s.targets].to_numpy(dtype=np.float64)
        displacement = false_point - true_point
        answer_base = true_point if s.question.kind == "group" else truth
    order = rng.permutation(len(rows))
    other = np.roll(order, 1)[np.argsort(order)]  # another asked entity for each (a derangement for n >= 2)
    out["statement_none"] = ""
    out["statement_counterfactual"] = [template.format(entity=t, value=v) for t, v in zip(texts, stated_false,
                                                                                         strict=True)]  # fmt: skip
    out["statement_unrelated"] = [template.format(entity=texts[o], value=v) for o, v in zip(other, stated_false,
                                                                                           strict=True)]  # fmt: skip
    out["statement_true"] = [template.format(entity=t, value=v) for t, v in zip(texts, stated_true, strict=True)]
    out["stated_false"], out["stated_true"] = stated_false, stated_true
    for j, target in enumerate(s.targets):
        out[f"truth_{target}"] = truth[:, j]
        out[f"answer_base_{target}"] = answer_base[:, j]
        out[f"displacement_{target}"] = displacement[:, j]
    return out


def _year(value: float) -> str:
    year = int(value)
    return f"{-year} BC" if year < 0 else str(year)


def _far_group(points: pd.DataFrame, group: str, min_km: float, rng: np.random.Generator) -> str:
    """A seeded group whose point is at least ``min_km`` from ``group``'s (the farthest one when none is)."""
    names = points.index.to_numpy()
    if group not in points.index:
        return str(rng.choice(names))
    here = points.loc[[group], ["latitude", "longitude"]].to_numpy(dtype=np.float64)
    there = points[["latitude", "longitude"]].to_numpy(dtype=np.float64)
    distance = haversine_km(np.repeat(here, len(there), axis=0), there)
    far = names[(distance >= min_km) & (names != group)]
    return str(rng.choice(far)) if len(far) else str(names[np.argmax(distance)])


def _group_names(dataset: str, groups: pd.Index) -> dict[str, str]:
    """How a statement names a group: US states by name (the table holds their ids), others as they are."""
    if dataset != "us_place":
        return {}
    from worldprobe import geodata

    states = geodata.us_states(contiguous=False)
    return dict(zip(states["state_id"].astype(str), states["name"].astype(str), strict=True))


def probe_readings(s: setup_mod.Setup, loaded: LoadedModel, encoded: list, batch_size: int) -> np.ndarray:
    """(n, k) the probe's reading at the last token of the entity in the question, at the probe's layer."""
    out = np.empty((len(encoded), len(s.targets)))
    for batch, rows in forward_batches(loaded, encoded, batch_size, layers=[s.layer], padding_side="left"):
        out[batch.indices] = np.asarray(s.probe.predict(rows[s.layer].astype(np.float32)), dtype=np.float64).reshape(
            len(batch.indices), -1)  # fmt: skip
    return out


def fraction(values: np.ndarray, plan: pd.DataFrame, base: str, targets: list[str]) -> np.ndarray:
    """(n,) how far each value lies from its base toward the counterfactual: (value − base)·D / |D|²."""
    values = np.asarray(values, dtype=np.float64).reshape(len(plan), -1)
    start = plan[[f"{base}_{t}" for t in targets]].to_numpy(dtype=np.float64)
    d = plan[[f"displacement_{t}" for t in targets]].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((values - start) * d).sum(axis=1) / (d * d).sum(axis=1)


def summarise(table: pd.DataFrame, n: int, *, resamples: int, seed: int) -> tuple[pd.DataFrame, list, Any]:
    """One row per condition (the mean fractions and the parse rate with intervals over entities), the paired
    comparisons counterfactual − none and counterfactual − unrelated for the probe and the answer, and their Holm
    decisions."""
    w = steermap.weights(n, resamples, seed)
    wide = {c: table[table["condition"] == c].reset_index(drop=True) for c in CONDITIONS}
    rows = []
    for condition, part in wide.items():
        probe = steermap.mean_estimate(part["probe_fraction"].to_numpy(), w)
        answer = steermap.mean_estimate(part["answer_fraction"].to_numpy(), w)
        parsed = steermap.mean_estimate(part["parsed"].to_numpy(dtype=np.float64), w)
        rows.append({"condition": condition, "n": n, "probe_shift": probe.value, "probe_shift_ci_low": probe.low,
                     "probe_shift_ci_high": probe.high, "answer_shift": answer.value,
                     "answer_shift_ci_low": answer.low, "answer_shift_ci_high": answer.high, "answer_n": answer.n,
                     "parse_rate": parsed.value, "parse_rate_ci_low": parsed.low,
                     "parse_rate_ci_high": parsed.high})  # fmt: skip
    tests = steermap.weights(n, TEST_RESAMPLES, seed + 1)
    comparisons = []
    for what in ("probe", "answer"):
        for other in ("none", "unrelated"):
            a = wide["counterfactual"][f"{what}_fraction"].to_numpy(dtype=np.float64)
            b = wide[other][f"{what}_fraction"].to_numpy(dtype=np.float64)
            keep = np.isfinite(a) & np.isfinite(b)
            diff = (a - b)[keep]
            wk = tests[:, keep]
            with np.errstate(invalid="ignore", divide="ignore"):
                samples = (wk @ diff) / wk.sum(axis=1)
            comparisons.append(compare(f"{what}_vs_{other}", "fraction_diff", float(diff.mean()) if keep.any()
                                       else float("nan"), samples, int(keep.sum()), margin=float("nan")))  # fmt: skip
    return pd.DataFrame(rows), comparisons, family({"context": comparisons})


def context_verdict(summary: dict[str, Any]) -> str:
    """One sentence: how far toward the counterfactual the probe's reading and the answer move, each tested."""
    comparisons = {c["key"]: c for c in summary["comparisons"]}
    outcomes = summary["outcomes"]
    conditions = summary["conditions"]

    def part(what: str) -> str:
        cf = conditions["counterfactual"]
        est = comparisons[f"{what}_vs_none"]["estimate"]
        against = comparisons[f"{what}_vs_unrelated"]["estimate"]
        return (f"the {what} moves {fmt(cf[f'{what}_shift'])} [{fmt(cf[f'{what}_shift_ci_low'])}, "
                f"{fmt(cf[f'{what}_shift_ci_high'])}] of the way to the counterfactual (vs no statement "
                f"{fmt(est['value'], signed=True)} [{fmt(est['low'])}, {fmt(est['high'])}], "
                f"{outcomes[f'{what}_vs_none']}; vs the statement about another entity "
                f"{fmt(against['value'], signed=True)} [{fmt(against['low'])}, {fmt(against['high'])}], "
                f"{outcomes[f'{what}_vs_unrelated']})")  # fmt: skip

    return (f"With a false statement before the question ({summary['n_entities']} test entities): {part('probe')}; "
            f"{part('answer')}. Fractions: 0 = the truth, 1 = the counterfactual; Holm over the "
            f"{summary['family_size']} tests of this run.")  # fmt: skip
