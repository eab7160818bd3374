"""Choosing and testing a steering cell: the direction x layer x position chosen on the map's train (select)
entities only (``choose``, its rule ``CHOICE_RULE``), then tested on test entities against zero, random directions of
the same norm and the random-init twin's direction, with paired intervals (``summarise_test``), and said in words
(``steer_verdict``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from worldprobe.errors import WorldprobeError
from worldprobe.interventions import directions as dirs
from worldprobe.interventions import steermap
from worldprobe.probes.bootstrap import fmt
from worldprobe.probes.inference import TEST_RESAMPLES, compare, family

MIN_PARSED = 0.5
"""A cell of the map can be chosen only when at least this share of the select entities gave parsed answers at both
±k (of the most any cell got): an edit that breaks most answers is not chosen on the few it leaves readable."""


CHOICE_RULE = (f"the largest antisymmetric shift at the largest dose on the train (select) entities, among cells with "
               f"both answers parsed for at least {MIN_PARSED:.0%} of the entities the best-parsed cell has")


def choose(select_map: pd.DataFrame, doses: list[float]) -> dict[str, Any]:
    """The direction x layer x position (a method, never a random direction) with the largest antisymmetric shift
    at the largest dose on the select (train) entities, among the cells whose answers parse (:data:`MIN_PARSED`; all
    cells when none do); ties: the larger ordered share, then the shallower layer."""
    k = max(doses)
    at_k = select_map[select_map["dose"] == k]
    rows = at_k[(at_k["kind"] == "method") & np.isfinite(at_k["antisymmetric_shift"])]
    if rows.empty:
        raise WorldprobeError("no steered answer of the train entities could be parsed: nothing to choose from",
                              field="question", hint="check the question's answers (worldprobe ask)")  # fmt: skip
    readable = rows[rows["n"] >= MIN_PARSED * at_k["n"].max()]
    best = (readable if len(readable) else rows).sort_values(["antisymmetric_shift", "ordered_share", "layer"],
                                                             ascending=[False, False, True]).iloc[0]  # fmt: skip
    return {**best.to_dict(), "readable": bool(len(readable))}


def summarise_test(
    items: pd.DataFrame,
    baseline: pd.Series,
    best: dirs.SteeringDirection,
    position: str,
    doses: list[float],
    with_twin: bool,
    resamples: int,
    seed: int,
    unit: str,
) -> dict[str, Any]:
    """The chosen cell on the test entities: its antisymmetric shift against 0, the random directions and the twin's
    direction (paired), Holm over those tests, the ordered share, ridge at the same place for reading, the side
    effects and the verdict sentence."""
    k = max(doses)
    test = items[(items["split"] == "test") & (items["position"] == position) & (items["layer"] == best.layer)]
    chosen = test[(test["direction"] == best.name) & (test["kind"] == "method")]
    random_items = test[test["kind"] == "random"]
    w = steermap.weights(len(baseline), TEST_RESAMPLES, seed + 3)
    a, r = steermap.paired_antisymmetric(chosen, random_items, baseline, doses, k)
    comparisons = [_paired("follows", a, np.zeros_like(a), w, "antisymmetric shift at the largest dose vs 0")]
    comparisons.append(_paired("beyond_random", a, r, w, "minus the random directions' (same norm), paired"))
    if with_twin:
        _, t = steermap.paired_antisymmetric(chosen, test[test["kind"] == "random_init"], baseline, doses, k)
        comparisons.append(_paired("beyond_twin", a, t, w, "minus the random-init twin's direction, paired"))
    decided = family({"steer": comparisons})
    outcomes = {key: d.outcome for (_, key), d in decided.holm.items()}
    grid = sorted({0.0, *doses})
    share = steermap.mean_estimate(steermap.ordered(steermap.answers_by_dose(chosen, baseline, doses)),
                                   steermap.weights(len(baseline), resamples, seed))  # fmt: skip
    ridge = test[(test["method"] == "ridge") & (test["kind"] == "method")]
    ridge_shift = steermap.mean_estimate(
        steermap.antisymmetric(steermap.answers_by_dose(ridge, baseline, doses), grid, k), w) if len(ridge) else None
    side = _side_effects(items, baseline, best, k, w)
    summary = {
        "comparisons": [c.to_dict() for c in comparisons], "outcomes": outcomes, "family_size": decided.size,
        "ordered_share": share.to_dict(), "largest_dose": k,
        "ridge_antisymmetric_shift": ridge_shift.to_dict() if ridge_shift is not None else None,
        "side_effects": side,
    }  # fmt: skip
    summary["verdict"] = steer_verdict(summary, best, position, unit)
    return summary


def _paired(key: str, a: np.ndarray, b: np.ndarray, w: np.ndarray, what: str):
    """A comparison of the mean of a - b over entities where both are finite (antisymmetric shifts in target
    units); no equivalence margin is declared for steering (the equivalence test is not run)."""
    keep = np.isfinite(a) & np.isfinite(b)
    diff = (a - b)[keep]
    wk = w[:, keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = (wk @ diff) / wk.sum(axis=1)
    value = float(diff.mean()) if keep.any() else float("nan")
    found = compare(key, "antisymmetric_shift_diff", value, samples, int(keep.sum()), margin=float("nan"))
    return found


def _side_effects(items: pd.DataFrame, baseline: pd.Series, best: dirs.SteeringDirection, k: float,
                  w: np.ndarray) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {}
    neutral = items[items["kind"] == "neutral"]
    for name, label in ((best.name, "chosen"), (None, "random")):
        part = neutral[neutral["direction"] == name] if name else neutral[neutral["direction"].str.startswith(
            "random-")]  # fmt: skip
        if len(part):
            per_entity = part.groupby("entity")["logprob_delta"].mean().reindex(baseline.index)
            out[f"logprob_delta_{label}"] = steermap.mean_estimate(per_entity.to_numpy(), w).to_dict()
    other = items[items["kind"] == "other_entity"]
    if len(other):
        table = steermap.answers_by_dose(other, baseline, [-k, k])
        grid = sorted({0.0, -k, k})
        out["other_entity_antisymmetric_shift"] = steermap.mean_estimate(
            steermap.antisymmetric(table, grid, k), w).to_dict()  # fmt: skip
    return out


def against_zero(outcome: str) -> str:
    """An outcome of a test against 0 as words: 'above 0', 'below 0' or 'inconclusive against 0'."""
    return f"{outcome} 0" if outcome in ("above", "below") else f"{outcome} against 0"


def steer_verdict(summary: dict[str, Any], best: dirs.SteeringDirection, position: str, unit: str) -> str:
    """One sentence: what the chosen direction does to the answers on test entities, each claim with its test."""
    comparisons = {c["key"]: c for c in summary["comparisons"]}
    outcomes = summary["outcomes"]
    follows = comparisons["follows"]["estimate"]
    where = f"{best.name} at layer {best.layer} ({position} token{'s' if position == 'entity' else ''})"
    k = summary["largest_dose"]
    text = (f"Chosen on train entities: {where}. On {follows['n']} test entities, ±{k:g}|Δμ| moves the answer "
            f"antisymmetrically by {fmt(follows['value'], 1, signed=True)} [{fmt(follows['low'], 1)}, "
            f"{fmt(follows['high'], 1)}] {unit}: {against_zero(outcomes['follows'])}")  # fmt: skip
    for key, label in (("beyond_random", "random directions of the same norm"),
                       ("beyond_twin", "the random-init twin's direction")):  # fmt: skip
        if key in comparisons:
            e = comparisons[key]["estimate"]
            text += (f"; minus {label}: {fmt(e['value'], 1, signed=True)} [{fmt(e['low'], 1)}, {fmt(e['high'], 1)}], "
                     f"{outcomes[key]}")  # fmt: skip
    share = summary["ordered_share"]
    text += (f". Answers ordered with the dose for {fmt(share['value'])} [{fmt(share['low'])}, {fmt(share['high'])}] "
             f"of the entities. Decided under Holm's correction over the {summary['family_size']} tests of this "
             "run.")  # fmt: skip
    if outcomes.get("follows") != "above":
        text += " So: no direction tried is shown to move the answer."
    return text
