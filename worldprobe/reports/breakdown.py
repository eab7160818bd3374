"""Per entity type: the probe and its controls on each type's test rows, and where that changes the story (a mixture
dataset can hide it: us_place ZIP codes carry their place in their digits; docs/verdicts.md)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from worldprobe.probes.bootstrap import Estimate
from worldprobe.probes.headline import MIN_SUBSET_ROWS
from worldprobe.probes.verdict import CONTROL_NAMES, short
from worldprobe.reports.summary import amount

SHOWN_CONTROLS = ("lexical", "random_init", "embedding")


def breakdown_table(run: dict[str, Any]) -> pd.DataFrame:
    """One row per entity type with enough test rows: n, R² [CI], median error and the paired Δ against the lexical,
    random-init and embedding controls; empty when the run has fewer than two such types."""
    subsets = run["headline"].get("subsets", {})
    types = subsets.get("types", {})
    if not types:
        return pd.DataFrame()
    unit = run["headline"].get("error_unit", "")
    rows = []
    for name, entry in sorted(types.items(), key=lambda item: -item[1]["n"]):
        error = entry["median_error"]
        row = {"entity type": name, "n test": entry["n"], "test R² [95% CI]": short(entry["r2"]),
               "median error": f"{amount(error['value'])} {unit}"}  # fmt: skip
        for control in SHOWN_CONTROLS:
            if control in entry["controls"]:
                row[f"Δ vs {control.replace('_', ' ')}"] = short(entry["controls"][control]["diff_r2"], signed=True)
        rows.append(row)
    return pd.DataFrame(rows)


def breakdown_notes(run: dict[str, Any]) -> list[str]:
    """Plain sentences where an entity type tells another story than all test rows together: its R² interval lies
    below zero, or a control's interval lies on another side of zero there than overall. These read unadjusted
    intervals of subsets (exploratory, outside the verdict's family) and say so."""
    head = run["headline"]
    overall = {c: _side(head["controls"][c]["own"]["diff_r2"]) for c in SHOWN_CONTROLS if c in head.get("controls", {})}
    notes = []
    for name, entry in head.get("subsets", {}).get("types", {}).items():
        r2 = Estimate(**entry["r2"])
        if r2.high < 0:
            notes.append(f"On {name} alone (n = {entry['n']}) the probe's test R² is {r2.text()}: worse than "
                         "predicting the mean of those rows (unadjusted interval, exploratory).")  # fmt: skip
        for control, side in overall.items():
            if control not in entry["controls"]:
                continue
            here = _side(entry["controls"][control]["diff_r2"])
            if (here == "above") != (side == "above"):  # beaten here but not overall, or the other way round
                diff = Estimate(**entry["controls"][control]["diff_r2"])
                notes.append(
                    f"On {name} alone (n = {entry['n']}) the interval of the probe minus {CONTROL_NAMES[control]} "
                    f"{_words(here)} ({diff.text(signed=True)}), unlike on all test rows ({_words(side)}; unadjusted "
                    "intervals, exploratory)."
                )
    return notes


def small_types_note(run: dict[str, Any]) -> list[str]:
    """A sentence naming the entity types left out of the per-type table for having fewer than MIN_SUBSET_ROWS test
    rows (their rows still count in every overall number); nothing when none were left out."""
    subsets = run["headline"].get("subsets", {})
    small = subsets.get("too_few_rows", {})
    if not small:
        return []
    named = ", ".join(f"{name} ({n})" for name, n in sorted(small.items(), key=lambda item: (-item[1], item[0])))
    shown = "not broken out" if subsets.get("types") else "not broken out (fewer than two types are large enough)"
    return [f"Entity types with fewer than {MIN_SUBSET_ROWS} test rows are {shown}; their rows count in every overall "
            f"number: {named}."]  # fmt: skip


def _side(entry: dict[str, Any]) -> str:
    est = Estimate(**entry)
    return "above" if est.low > 0 else "below" if est.high < 0 else "tie"


def _words(side: str) -> str:
    return {"above": "lies above 0", "below": "lies below 0", "tie": "includes 0"}[side]
