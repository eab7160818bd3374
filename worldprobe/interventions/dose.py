"""Dose-response of steering: how far the answer moves per unit the probe's reading was moved, for the probe
direction and each control, with bootstrap intervals over entities (pairs of one entity share its weight).

``answer_shift`` of a steered answer is its reading (in the steered target's units) minus the same entity's unsteered
reading; it is missing when either answer is unparsed (or names a group without train entities), and the parse rate
of every dose says how often that happened.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from worldprobe.interventions.stats import (
    Estimate,
    maybe,
    pairs_weights,
    quiet_estimate,
    resample_counts,
    weighted_slope,
)
from worldprobe.probes.bootstrap import fmt, weighted_mean, weighted_median, weighted_spearman

KINDS = ("probe", "random", "orthogonal", "random_init")
REFERENCE_SHIFT = {"year": 100.0, "latitude": 10.0, "longitude": 10.0}
"""The dose the verdict sentence quotes (the largest positive dose when it was not run)."""
UNITS = {"year": "years", "latitude": "degrees of latitude", "longitude": "degrees of longitude"}


def _stat_on_pairs(frame: pd.DataFrame, w: np.ndarray, fn) -> Estimate | None:
    """``fn(values..., pair weights)`` on the pairs of ``frame`` (rows with a finite answer shift)."""
    ok = np.isfinite(frame["answer_shift"].to_numpy(dtype=np.float64))
    if ok.sum() < 2:
        return None
    part = frame[ok]
    entity = part["entity"].to_numpy()
    used = np.unique(entity)
    if len(used) < 2:
        return None
    pw = pairs_weights(w, entity)
    found = quiet_estimate(lambda v: fn(part, v), pw)
    return Estimate(found.value, found.low, found.high, int(len(used)))


def slope(frame: pd.DataFrame, w: np.ndarray) -> Estimate | None:
    """Answer shift per unit of intended shift (least squares with intercept over the pairs); n = entities."""
    return _stat_on_pairs(frame, w, lambda p, v: weighted_slope(p["shift"].to_numpy(float),
                                                                p["answer_shift"].to_numpy(float), v))  # fmt: skip


def monotonicity(frame: pd.DataFrame, w: np.ndarray) -> Estimate | None:
    """Spearman ρ of intended shift and answer shift over the pairs (n = entities)."""
    return _stat_on_pairs(frame, w, lambda p, v: weighted_spearman(p["shift"].to_numpy(float),
                                                                   p["answer_shift"].to_numpy(float), v)[:, 0])


def per_dose(frame: pd.DataFrame, w: np.ndarray) -> list[dict[str, Any]]:
    """Per intended shift: items, parse rate, mean and median answer shift, share of changed answers and the mean
    change of the neutral continuation's log-probability."""
    out = []
    for shift, part in frame.groupby("shift", sort=True):
        entity = part["entity"].to_numpy()
        pw = pairs_weights(w, entity)
        row: dict[str, Any] = {
            "shift": float(shift), "items": len(part), "entities": int(len(np.unique(entity))),
            "parse_rate": _mean(part["parsed"].to_numpy(dtype=float), pw).to_dict(),
            "mean_answer_shift": maybe(_stat_on_pairs(part, w, lambda p, v: weighted_mean(
                p["answer_shift"].to_numpy(float), v))),
            "median_answer_shift": maybe(_stat_on_pairs(part, w, lambda p, v: weighted_median(
                p["answer_shift"].to_numpy(float), v))),
            "changed_rate": _mean(part["changed"].to_numpy(dtype=float), pw).to_dict(),
        }  # fmt: skip
        delta = part["logprob_delta"].to_numpy(dtype=float)
        if np.isfinite(delta).all():
            row["logprob_delta"] = _mean(delta, pw).to_dict()
        out.append(row)
    return out


def _mean(values: np.ndarray, w: np.ndarray) -> Estimate:
    return quiet_estimate(lambda v: weighted_mean(values, v), w)


def summarise(steering: pd.DataFrame, n_entities: int, target: str, *, resamples: int, seed: int) -> dict[str, Any]:
    """Per direction kind (probe and each control, seeds pooled): slope, Spearman, per-dose table, per-seed slopes;
    the paired slope difference probe - random; and the verdict sentence."""
    w = resample_counts(n_entities, resamples, seed)
    steered = steering[steering["kind"] != "none"]
    kinds: dict[str, Any] = {}
    for kind in [k for k in KINDS if k in set(steered["kind"])]:
        part = steered[steered["kind"] == kind]
        kinds[kind] = {
            "directions": sorted(part["direction"].unique().tolist()),
            "slope": maybe(slope(part, w)), "spearman": maybe(monotonicity(part, w)),
            "per_dose": per_dose(pd.concat([steering[steering["kind"] == "none"], part]), w),
            "per_direction_slope": {d: maybe(slope(g, w)) for d, g in part.groupby("direction")},
        }  # fmt: skip
    summary: dict[str, Any] = {"target": target, "unit": UNITS.get(target, target), "kinds": kinds}
    if {"probe", "random"} <= set(kinds):
        summary["slope_difference_probe_minus_random"] = maybe(_paired_slope_difference(steered, w))
    summary["verdict"] = verdict(summary, sorted(steered["shift"].unique()))
    return summary


def _paired_slope_difference(steered: pd.DataFrame, w: np.ndarray) -> Estimate | None:
    """slope(probe) - slope(random, seeds pooled) on the same resampled entities."""
    ok = np.isfinite(steered["answer_shift"].to_numpy(dtype=np.float64))
    probe = steered[ok & (steered["kind"] == "probe").to_numpy()]
    rand = steered[ok & (steered["kind"] == "random").to_numpy()]
    if len(probe) < 2 or len(rand) < 2:
        return None

    def stat(v: np.ndarray) -> np.ndarray:
        a = weighted_slope(probe["shift"].to_numpy(float), probe["answer_shift"].to_numpy(float),
                           pairs_weights(v, probe["entity"].to_numpy()))  # fmt: skip
        b = weighted_slope(rand["shift"].to_numpy(float), rand["answer_shift"].to_numpy(float),
                           pairs_weights(v, rand["entity"].to_numpy()))  # fmt: skip
        return a - b

    found = quiet_estimate(stat, w)
    return Estimate(found.value, found.low, found.high, int(len(np.unique(probe["entity"]))))


def reference_shift(target: str, shifts: list[float]) -> float | None:
    """The dose the verdict quotes: +100 years / +10 degrees when run, else the largest positive dose."""
    positive = [s for s in shifts if s > 0]
    if not positive:
        return None
    wanted = REFERENCE_SHIFT.get(target)
    return wanted if wanted in positive else max(positive)


def verdict(summary: dict[str, Any], shifts: list[float]) -> str:
    """"Moving the probe's reading by +100 years moves the model's answer by X [CI] ...; random directions: Y [CI]"."""
    target, unit, kinds = summary["target"], summary["unit"], summary["kinds"]
    ref = reference_shift(target, [float(s) for s in shifts])
    if ref is None or "probe" not in kinds:
        return "no steered answers to judge"

    def at(kind: str) -> str:
        rows = [r for r in kinds.get(kind, {}).get("per_dose", []) if r["shift"] == ref]
        found = rows[0]["mean_answer_shift"] if rows else None
        if not found:
            return "no parsed answers"
        e = Estimate(**found)
        return f"{fmt(e.value, 1, signed=True)} {unit} [{fmt(e.low, 1)}, {fmt(e.high, 1)}] (n = {e.n})"

    def slope_text(kind: str) -> str:
        found = kinds.get(kind, {}).get("slope")
        return "–" if not found else Estimate(**found).text(2)

    text = (f"moving the probe's reading of {target} by {fmt(ref, 0, signed=True)} {unit} moves the model's answer by "
            f"{at('probe')}, slope {slope_text('probe')}")  # fmt: skip
    for kind, label in (("random", "random directions of the same norm"), ("orthogonal", "orthogonal directions"),
                        ("random_init", "the random-init twin's probe direction")):  # fmt: skip
        if kind in kinds:
            text += f"; {label}: {at(kind)}, slope {slope_text(kind)}"
    return text
