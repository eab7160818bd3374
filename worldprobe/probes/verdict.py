"""One label and one plain paragraph per dataset x model, every word backed by its test (docs/verdicts.md).

The label reads, in order, the comparisons that rule something out (``worldprobe.probes.inference``): shuffled targets
(is there any readout?), the TF-IDF lexical control (more than the spelling?), the random-init twin (more than the
architecture and tokenizer?), then the within-group residual probe against its lexical twin (anything within the
group beyond the spelling?). Each comparison is ``above``, ``below``, ``equivalent`` (within the declared margin,
TOST) or ``inconclusive``, decided on p-values corrected by Holm over a family: the run's own comparisons for a run's
``summary.json``, every run of the table for a study's table and report (:func:`table_verdicts`). The sentence says
which outcome each comparison had, with its interval and n, and which label the uncorrected tests would give when it
differs. "Only" and "not" are never printed without an upper bound: an inconclusive comparison prints what its
interval still allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worldprobe.probes.bootstrap import Estimate, fmt
from worldprobe.probes.inference import Comparison, Decision, FamilyResult, family

GROUP_NOUNS = {"country": "country", "state_id": "state", "borough": "borough", "century": "century",
               "decade": "decade", "pub_year": "year"}  # fmt: skip
CONTROL_NAMES = {
    "shuffled": "shuffled targets",
    "random_init": "the random-init twin",
    "embedding": "the embedding layer",
    "lexical": "the TF-IDF lexical control",
}
LADDER = ("shuffled", "lexical", "random_init")
"""The comparisons of the probe with a control that the label reads, in order."""
LABELS = {
    "no_readout": "no readout shown",
    "unchecked": "unchecked (no lexical control)",
    "spelling_equivalent": "no more than spelling (±{m})",
    "spelling_below": "below spelling",
    "spelling_inconclusive": "inconclusive vs spelling",
    "architecture_equivalent": "no more than random weights (±{m})",
    "architecture_below": "below random weights",
    "architecture_inconclusive": "inconclusive vs random weights",
    "beyond_spelling": "beyond spelling; within-{group} not shown",
    "beyond_spelling_untested": "beyond spelling; within-{group} not tested",
    "within_group": "beyond spelling, within the {group}",
}


def comparisons_of(headline: Mapping[str, Any]) -> list[Comparison]:
    """The comparisons recorded in a run's headline."""
    return [Comparison.from_dict(c) for c in headline.get("comparisons", [])]


def verdict(
    headline: Mapping[str, Any],
    *,
    kind: str,
    group_column: str,
    n_layers: int,
    decided: FamilyResult | None = None,
    run: str = "run",
    scope: str = "this run",
) -> dict[str, Any]:
    """``{"label", "unadjusted_label", "holds", "sentence", "outcomes", "family_size"}`` for one run's headline.

    ``decided`` holds the decisions of the family the run belongs to (keys ``(run, comparison key)``); without it the
    family is the run's own comparisons. ``scope`` names the family in the sentence ("this run", "this table")."""
    if decided is None:
        decided = family({run: comparisons_of(headline)})
    group = GROUP_NOUNS.get(group_column, group_column)
    what = {"place": "where", "time": "when"}.get(kind, "what value")
    comparisons = {c.key: c for c in comparisons_of(headline)}
    holm = {key: d for (name, key), d in decided.holm.items() if name == run}
    raw = {key: d for (name, key), d in decided.unadjusted.items() if name == run}
    label = _label(holm, comparisons)
    unadjusted = _label(raw, comparisons)
    margins = headline.get("margins", {})
    name, unadjusted_name = (_name(x, group, margins, comparisons) for x in (label, unadjusted))
    twin_missing = name.endswith(NO_TWIN)
    text = [_opening(headline, n_layers)]
    for key in (*LADDER, "embedding"):
        if key in comparisons:
            text.append(_control_clause(comparisons[key], holm.get(key)))
    lexical = headline.get("controls", {}).get("lexical", {})
    if lexical.get("alpha_on_edge"):
        text.append(f"The lexical control's penalty ({lexical['alpha']:g}) is on an edge of its grid, so its R² may "
                    "be understated.")  # fmt: skip
    text += _within_clauses(headline, comparisons.get("within_group"), holm.get("within_group"), group)
    text += _alt_world_clauses(headline, comparisons.get("alt_world"), holm.get("alt_world"))
    text += _scale_clauses(headline)
    text += _resplit_clauses(headline)
    if twin_missing:
        text.append("The random-init twin was not run, so the architecture alone is not ruled out.")
    text.append(_meaning(label, group, what, comparisons, twin_missing, margins))
    holds = label == unadjusted
    ending = "." if holds else f"; without it the label would read '{unadjusted_name}'."
    text.append(f"Decided under {_scope_text(decided, scope)}{ending}")
    return {
        "label": name, "unadjusted_label": unadjusted_name, "holds": holds,
        "sentence": " ".join(text), "outcomes": {k: d.outcome for k, d in holm.items()},
        "family_size": decided.size,
    }  # fmt: skip


def table_verdicts(runs: Mapping[str, Mapping[str, Any]], *, settings: Mapping[str, Mapping[str, Any]]
                   ) -> tuple[dict[str, dict[str, Any]], FamilyResult]:  # fmt: skip
    """The verdict of every run of a table under one Holm family (every run's comparisons together). ``runs`` maps a
    run name to its headline, ``settings`` a run name to ``verdict``'s keyword arguments (kind, group_column,
    n_layers)."""
    decided = family({name: comparisons_of(head) for name, head in runs.items()})
    return {name: verdict(head, decided=decided, run=name, scope="this table", **settings[name])
            for name, head in runs.items()}, decided  # fmt: skip


def _scope_text(decided: FamilyResult, scope: str) -> str:
    return decided.describe(scope)


def _label(decisions: Mapping[str, Decision], comparisons: Mapping[str, Comparison]) -> str:
    def outcome(key: str) -> str | None:
        return decisions[key].outcome if key in decisions else None

    if outcome("shuffled") not in ("above", None):
        return "no_readout"
    if "lexical" not in comparisons:
        return "unchecked"
    if outcome("lexical") != "above":
        return f"spelling_{outcome('lexical')}"
    if "random_init" in comparisons and outcome("random_init") != "above":
        return f"architecture_{outcome('random_init')}"
    if "within_group" not in comparisons:
        return "beyond_spelling_untested"
    return "within_group" if outcome("within_group") == "above" else "beyond_spelling"


NO_TWIN = " (no random-init control)"


def _name(label: str, group: str, margins: Mapping[str, float], comparisons: Mapping[str, Comparison]) -> str:
    """The label in words; a label past the architecture's rung without a random-init twin says so."""
    text = LABELS[label].format(group=group, m=fmt(margins.get("r2", 0.05)))
    missing = "random_init" not in comparisons and label in ("beyond_spelling", "beyond_spelling_untested",
                                                             "within_group")
    return text + (NO_TWIN if missing else "")


def _opening(headline: Mapping[str, Any], n_layers: int) -> str:
    probe = headline["probe"]
    r2, rho = Estimate(**probe["r2"]), Estimate(**probe["spearman"])
    return (f"Test R² {r2.text()}, Spearman ρ {rho.text()} (n = {headline['n_test']} test entities; layer "
            f"{headline['selected_layer']}/{n_layers}, chosen on train rows).")  # fmt: skip


def outcome_text(comparison: Comparison, decision: Decision | None, unit: str = "R²") -> str:
    """``above (Holm p = .003)`` and the like: the outcome in words, the test behind it and its p-value."""
    if decision is None or not decision.adjusted:
        return f"unadjusted p {_p(comparison.p['difference'], comparison)}; not a label test"
    if decision.outcome in ("above", "below"):
        extra = f", and within ±{fmt(comparison.margin)}" if decision.within_margin else ""
        return f"{decision.outcome} (Holm p {_p(decision.p_difference, comparison)}{extra})"
    if decision.outcome == "equivalent":
        return (f"equivalent within ±{fmt(comparison.margin)} {unit} (TOST, Holm p "
                f"{_p(decision.p_equivalence, comparison)})")  # fmt: skip
    return f"inconclusive (neither a difference nor equivalence within ±{fmt(comparison.margin)} survives Holm)"


def _p(p: float, comparison: Comparison) -> str:
    """``= .012``; ``≤ .017`` when no resample fell on the other side (the p-value is then a bound set by the
    number of resamples); ``< .001``."""
    if p != p:  # NaN
        return "–"
    floor = 2 / (comparison.resamples + 1)
    at_floor = comparison.p["difference"] <= floor * (1 + 1e-9) and p < 1
    if at_floor:
        return f"≤ {fmt(p, 3)}" if p >= 0.001 else "< .001"
    return "< .001" if p < 0.001 else f"= {fmt(p, 3)}"


def _control_clause(comparison: Comparison, decision: Decision | None) -> str:
    title = CONTROL_NAMES.get(comparison.key, comparison.key)
    if decision is None or not decision.adjusted:  # outside the family: the number, no word that claims a side
        return f"Against {title}: ΔR² {comparison.estimate.text(signed=True)} ({outcome_text(comparison, decision)})."
    return f"Against {title}: ΔR² {comparison.estimate.text(signed=True)}, {outcome_text(comparison, decision)}."


def _within_clauses(headline: Mapping[str, Any], comparison: Comparison | None, decision: Decision | None,
                    group: str) -> list[str]:  # fmt: skip
    entry = headline.get("within_group")
    if entry is None:
        return [f"Within-{group} information was not tested (the within_group control was not run)."]
    if comparison is None:
        return [f"Within-{group} information was not tested: {entry.get('skipped', 'no residual probe')}."]
    model, lexical = Estimate(**entry["model_r"]), Estimate(**entry["lexical_r"])
    head = (f"Within the {group} (a probe fitted to offsets from the {group}'s train mean, layer {entry['layer']}; "
            f"n = {comparison.estimate.n} test entities of {entry['groups']} {group} groups with ≥ 2 train rows): r "
            f"{model.text()}, the spelling's {lexical.text()}; Δr {comparison.estimate.text(signed=True)}, "
            f"{outcome_text(comparison, decision, unit='r')}.")  # fmt: skip
    if decision is not None and decision.outcome != "above":
        head += (f" Within-{group} information beyond the spelling is not shown: Δr at most "
                 f"{fmt(comparison.estimate.high, signed=True)} (95% upper bound).")  # fmt: skip
    return [head]


def _alt_world_clauses(headline: Mapping[str, Any], comparison: Comparison | None,
                       decision: Decision | None) -> list[str]:  # fmt: skip
    entry = headline.get("alt_world")
    if entry is None:
        return []
    if "not_applicable" in entry:
        return [f"Alternative world: not applicable ({entry['not_applicable']})."]
    if comparison is None:
        return []
    matching = entry.get("matching", {})
    text = (f"In {entry['permutations']} alternative worlds matched on train rows to be as learnable from the spelling "
            f"(groups the spelling places alike swap places), the probe fits the true world better by "
            f"{comparison.estimate.text(signed=True)} R², {outcome_text(comparison, decision)}")  # fmt: skip
    if "gap_lexical" in entry:
        text += f"; the spelling's gap in the same worlds is {Estimate(**entry['gap_lexical']).text(signed=True)}"
    check = matching.get("check")
    if check:
        text += f" (on held-out train rows {Estimate(**check['estimate']).text(signed=True)})"
    return [text + "."]


def _scale_clauses(headline: Mapping[str, Any]) -> list[str]:
    text = []
    warning = headline.get("scale", {}).get("warning")
    if warning:
        text.append(f"Note: {warning}.")
    eras = headline.get("eras", {}).get("types", {})
    if eras:
        parts = [f"{name}: R² {Estimate(**e['r2']).text()}, ρ {Estimate(**e['spearman']).text()} (n = {e['n']})"
                 for name, e in eras.items()]  # fmt: skip
        text.append(f"By era: {'; '.join(parts)}.")
    return text


def _resplit_clauses(headline: Mapping[str, Any]) -> list[str]:
    spread = headline.get("resplits")
    if not spread:
        return []
    names = {"r2": "R²", "spearman": "ρ", "diff_r2_lexical": "ΔR² vs lexical",
             "diff_r2_random_init": "ΔR² vs random init"}  # fmt: skip
    parts = [
        f"{label} {fmt(spread[key]['mean'], signed=key.startswith('diff'))} (sd {fmt(spread[key]['sd'])}, "
        f"{fmt(spread[key]['min'])} to {fmt(spread[key]['max'])})"
        for key, label in names.items()
        if key in spread
    ]
    return [f"Refitted on {spread['resplits']} re-drawn train/test splits: {'; '.join(parts)}."]


def _meaning(label: str, group: str, what: str, comparisons: Mapping[str, Comparison], twin_missing: bool,
             margins: Mapping[str, float]) -> str:  # fmt: skip
    margin = fmt(margins.get("r2", 0.05))
    beyond = "the spelling" if twin_missing else "the spelling and the architecture"
    within = comparisons.get("within_group")
    bound = (f" (Δr at most {fmt(within.estimate.high, signed=True)})" if within is not None else " (not tested)")
    return {
        "no_readout": "So: no readout is shown (the probe is not shown to beat shuffled targets).",
        "unchecked": "So: unchecked. Without the lexical control the model cannot be told from the spelling.",
        "spelling_equivalent": f"So: the model's activations predict the target no better than the spelling of the "
                               f"names (equivalent within ±{margin} R²).",
        "spelling_below": "So: the spelling of the names predicts the target better than the model's activations.",
        "spelling_inconclusive": f"So: inconclusive. The probe is shown neither to beat the spelling of the names "
                                 f"nor to be equivalent to it within ±{margin} R².",
        "architecture_equivalent": f"So: beyond the spelling, but a twin with random weights reads out as much "
                                   f"(equivalent within ±{margin} R²).",
        "architecture_below": "So: a twin with random weights reads out more than the trained model.",
        "architecture_inconclusive": f"So: inconclusive against the architecture. The probe is shown neither to beat "
                                     f"a twin with random weights nor to be equivalent to it within ±{margin} R².",
        "beyond_spelling": f"So: evidence of {what} beyond {beyond}; within a {group}, information beyond the "
                           f"spelling is not shown{bound}.",
        "beyond_spelling_untested": f"So: evidence of {what} beyond {beyond}; within a {group} not tested (run the "
                                    f"within_group control).",
        "within_group": f"So: evidence of {what} beyond {beyond}, including within a {group}.",
    }[label]  # fmt: skip


def short(entry: Mapping[str, Any] | None, *, signed: bool = False) -> str:
    """An estimate dict as ``.36 [.30, .41]`` (``–`` when absent)."""
    return Estimate(**entry).text(signed=signed) if entry else "–"
