"""Probe vs behaviour, per entity: is the answer right, is the probe right, how do their errors relate.

Every number carries its n and a bootstrap interval over the asked entities (one resample matrix for the whole
table, so probe and answer statistics of the same resample are paired). Unparsed answers count as wrong in every
accuracy over all asked entities; statistics of answer values use the parsed answers and say how many.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from worldprobe.interventions.parse import UNPARSED
from worldprobe.interventions.setup import Setup, nearest_group
from worldprobe.interventions.stats import maybe, quiet_estimate, rate, resample_counts, subset
from worldprobe.probes.bootstrap import (
    weighted_mean,
    weighted_median,
    weighted_pearson,
    weighted_r2,
    weighted_spearman,
)
from worldprobe.probes.metrics import haversine_km

DEFAULT_TOLERANCE = {"year": 50.0, "coordinates": 500.0}
"""Within tolerance: |answer - truth| <= 50 years, or <= 500 km; a group answer must name the entity's group."""
TOLERANCE_UNITS = {"year": "years", "coordinates": "km", "group": "km"}


def judge(setup: Setup, answers: pd.DataFrame, tolerance: float | None) -> pd.DataFrame:
    """Per-entity columns: ``answer_error`` / ``probe_error`` (signed years; km for places) and ``answer_correct`` /
    ``probe_correct`` (within tolerance, or the right group; an unparsed answer is never correct)."""
    kind = setup.question.kind
    true = answers[[f"true_{t}" for t in setup.targets]].to_numpy(dtype=np.float64)
    pred = answers[[f"pred_{t}" for t in setup.targets]].to_numpy(dtype=np.float64)
    reading = answers[[f"reading_{t}" for t in setup.targets]].to_numpy(dtype=np.float64)
    out = pd.DataFrame(index=answers.index)
    if kind == "year":
        out["answer_error"] = reading[:, 0] - true[:, 0]
        out["probe_error"] = pred[:, 0] - true[:, 0]
    else:
        out["answer_error"] = _km(true, reading)
        out["probe_error"] = _km(true, pred)
    if kind == "group":
        truth = answers["truth_group"].astype(object).to_numpy()
        out["answer_correct"] = (answers["answer_group"].astype(object).to_numpy() == truth) & pd.notna(truth)
        out["probe_group"] = nearest_group(setup, pred)
        out["probe_correct"] = out["probe_group"].to_numpy() == truth
    else:
        limit = DEFAULT_TOLERANCE[kind] if tolerance is None else float(tolerance)
        out["answer_correct"] = np.abs(out["answer_error"].to_numpy()) <= limit  # NaN compares False
        out["probe_correct"] = np.abs(out["probe_error"].to_numpy()) <= limit
    return out


def mean_cols(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """A (B, k) statistic averaged over its target columns (latitude and longitude) -> (B,)."""

    def stat(w: np.ndarray) -> np.ndarray:
        out = np.asarray(fn(w), dtype=np.float64)
        if out.ndim < 2:
            return out
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples stay NaN
            return np.nanmean(out, axis=1)

    return stat


def _km(true: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Haversine km per row; NaN where a point is missing."""
    out = np.full(len(true), np.nan)
    ok = np.isfinite(points).all(axis=1)
    if ok.any():
        out[ok] = haversine_km(true[ok], points[ok])
    return out


def summarise(setup: Setup, answers: pd.DataFrame, *, resamples: int, seed: int) -> dict[str, Any]:
    """The ask summary: parse rate, accuracies, answer/probe vs truth, the 2x2 table, error correlation, the probe's
    R² on entities answered right vs wrong, and the same accuracies per entity type."""
    n = len(answers)
    w = resample_counts(n, resamples, seed)
    parsed = (answers["answer_status"] != UNPARSED).to_numpy()
    answer_ok = answers["answer_correct"].to_numpy(dtype=bool)
    probe_ok = answers["probe_correct"].to_numpy(dtype=bool)
    true = answers[[f"true_{t}" for t in setup.targets]].to_numpy(dtype=np.float64)
    pred = answers[[f"pred_{t}" for t in setup.targets]].to_numpy(dtype=np.float64)
    reading = answers[[f"reading_{t}" for t in setup.targets]].to_numpy(dtype=np.float64)
    readable = np.isfinite(reading).all(axis=1)
    a_err, p_err = answers["answer_error"].to_numpy(dtype=np.float64), answers["probe_error"].to_numpy(dtype=np.float64)
    both = np.isfinite(a_err) & np.isfinite(p_err)
    unit = TOLERANCE_UNITS[setup.question.kind]

    summary: dict[str, Any] = {
        "n_asked": n,
        "parse_rate": rate(parsed, w).to_dict(),
        "status_counts": answers["answer_status"].value_counts().to_dict(),
        "answer_accuracy": rate(answer_ok, w).to_dict(),
        "probe_accuracy": rate(probe_ok, w).to_dict(),
        "accuracy_difference": quiet_estimate(
            lambda v: weighted_mean(answer_ok.astype(float), v) - weighted_mean(probe_ok.astype(float), v), w
        ).to_dict(),
        "answer_accuracy_parsed": maybe(subset(lambda v: weighted_mean(answer_ok[parsed].astype(float), v), w, parsed)),
        "two_by_two": {
            "probe_right_answer_right": int((probe_ok & answer_ok).sum()),
            "probe_right_answer_wrong": int((probe_ok & ~answer_ok).sum()),
            "probe_wrong_answer_right": int((~probe_ok & answer_ok).sum()),
            "probe_wrong_answer_wrong": int((~probe_ok & ~answer_ok).sum()),
        },
        "error_unit": unit,
        "median_abs_error": {
            "answer": maybe(subset(lambda v: weighted_median(np.abs(a_err[both]), v), w, both)),
            "probe": maybe(subset(lambda v: weighted_median(np.abs(p_err[both]), v), w, both)),
            "probe_all_asked": quiet_estimate(lambda v: weighted_median(np.abs(p_err), v), w).to_dict(),
        },
        "error_spearman": maybe(subset(lambda v: weighted_spearman(a_err[both], p_err[both], v)[:, 0], w, both)),
    }
    rows = readable
    summary["answer_vs_truth"] = {
        "pearson": maybe(subset(mean_cols(lambda v: weighted_pearson(true[rows], reading[rows], v)), w, rows)),
        "spearman": maybe(subset(mean_cols(lambda v: weighted_spearman(true[rows], reading[rows], v)), w, rows)),
        "r2": maybe(subset(mean_cols(lambda v: weighted_r2(true[rows], reading[rows], v)), w, rows)),
    }
    summary["probe_vs_truth"] = {
        "pearson": maybe(subset(mean_cols(lambda v: weighted_pearson(true[rows], pred[rows], v)), w, rows)),
        "spearman": maybe(subset(mean_cols(lambda v: weighted_spearman(true[rows], pred[rows], v)), w, rows)),
        "r2": maybe(subset(mean_cols(lambda v: weighted_r2(true[rows], pred[rows], v)), w, rows)),
        "r2_all_asked": quiet_estimate(mean_cols(lambda v: weighted_r2(true, pred, v)), w).to_dict(),
    }
    summary["probe_r2_by_answer"] = {
        "answer_right": maybe(subset(mean_cols(lambda v: weighted_r2(true[answer_ok], pred[answer_ok], v)), w,
                                     answer_ok)),  # fmt: skip
        "answer_wrong": maybe(subset(mean_cols(lambda v: weighted_r2(true[~answer_ok], pred[~answer_ok], v)), w,
                                     ~answer_ok)),  # fmt: skip
    }
    summary["probe_median_abs_error_by_answer"] = {  # R² of a subset depends on its spread; the error does not
        "answer_right": maybe(subset(lambda v: weighted_median(np.abs(p_err[answer_ok]), v), w, answer_ok)),
        "answer_wrong": maybe(subset(lambda v: weighted_median(np.abs(p_err[~answer_ok]), v), w, ~answer_ok)),
    }
    summary["by_entity_type"] = {
        str(kind): {
            "n": int(mask.sum()),
            "parse_rate": maybe(subset(lambda v, m=mask: weighted_mean(parsed[m].astype(float), v), w, mask)),
            "answer_accuracy": maybe(subset(lambda v, m=mask: weighted_mean(answer_ok[m].astype(float), v), w, mask)),
            "probe_accuracy": maybe(subset(lambda v, m=mask: weighted_mean(probe_ok[m].astype(float), v), w, mask)),
        }
        for kind, mask in ((k, (answers["entity_type"] == k).to_numpy())
                           for k in sorted(answers["entity_type"].unique()))
    }  # fmt: skip
    return summary
