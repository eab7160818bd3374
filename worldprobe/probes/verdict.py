"""One plain sentence per dataset x model, made only from the headline's numbers (science.md sections 7 and 9).

Each control counts as beaten only when the paired 95% interval of probe minus control lies above zero; an interval
that straddles zero is "not distinguishable", one below zero "below". The label reads the controls in order of what
they rule out: shuffled targets (is there any readout?), the TF-IDF lexical control (is it more than the spelling?),
the random-init twin (more than the architecture and tokenizer?), then the within-group correlation and the
alternative-world gap beyond the lexical features (more than "which group"?). "Not shown" is a verdict.
"""

from __future__ import annotations

from typing import Any

from worldprobe.probes.bootstrap import Estimate

GROUP_NOUNS = {"country": "country", "state_id": "state", "borough": "borough", "century": "century",
               "decade": "decade", "pub_year": "year"}  # fmt: skip
CONTROL_NAMES = {
    "shuffled": "shuffled targets",
    "random_init": "the random-init twin",
    "embedding": "the embedding layer",
    "lexical": "the TF-IDF lexical control",
}
LABELS = {
    "no_readout": "no readout",
    "spelling": "not shown beyond spelling",
    "architecture": "not shown beyond random weights",
    "which_group": "which {group} only",
    "within_group": "beyond the {group}",
    "unchecked": "unchecked (no lexical control)",
}


def _est(entry: dict[str, Any] | None) -> Estimate | None:
    return Estimate(**entry) if entry else None


def _side(diff: Estimate) -> str:
    return "above" if diff.low > 0 else "below" if diff.high < 0 else "tie"


def verdict(headline: dict[str, Any], *, kind: str, group_column: str, n_layers: int) -> dict[str, Any]:
    """``{"label", "sentence", "sides"}`` for one run's headline (``headline.headline(...).summary``)."""
    group = GROUP_NOUNS.get(group_column, group_column)
    what = {"place": "where", "time": "when"}.get(kind, "what value")
    probe = {k: _est(v) for k, v in headline["probe"].items() if k != "r2_by_target"}
    sides: dict[str, str] = {}
    parts: dict[str, list[str]] = {"above": [], "tie": [], "below": []}
    for name, title in CONTROL_NAMES.items():
        entry = headline.get("controls", {}).get(name)
        if not entry:
            continue
        diff = _est(entry["own"]["diff_r2"])
        sides[name] = _side(diff)
        seeds = f" ({len(entry['seeds'])} seeds)" if len(entry.get("seeds", [])) > 1 else ""
        parts[sides[name]].append(f"{title}{seeds} ({diff.text(signed=True)})")
    within = probe["within_group_r"]
    alt = headline.get("alt_world", {})
    beyond = _est(alt.get("beyond_lexical"))
    within_shown = within is not None and within.low > 0
    label = _label(sides, within_shown)
    unchecked_twin = "random_init" not in sides and label in ("which_group", "within_group")
    n, layer = headline["n_test"], headline["selected_layer"]
    text = [f"Test R² {probe['r2'].text()} (n = {n} test entities; layer {layer}/{n_layers}, chosen on train rows)."]
    for side, words in (("above", "Above"), ("tie", "Not distinguishable from"), ("below", "Below")):
        if parts[side]:
            text.append(f"{words}: {'; '.join(parts[side])}.")
    if within is not None:
        text.append(f"Within-{group} r {within.text()}.")
    if beyond is not None:
        text.append(f"Alternative-world gap beyond the lexical features {beyond.text(signed=True)}.")
    if unchecked_twin:
        text.append("The random-init twin was not run, so the architecture alone is not ruled out.")
    meaning = _meaning(label, group, what)
    if unchecked_twin:  # the architecture was not ruled out, so the sentence must not claim it was
        meaning = meaning.replace(", the spelling and the architecture", " and the spelling")
    text.append(meaning)
    name = LABELS[label].format(group=group) + (" (no random-init control)" if unchecked_twin else "")
    return {"label": name, "sentence": " ".join(text), "sides": sides, "within_group_shown": within_shown}


def _label(sides: dict[str, str], within_shown: bool) -> str:
    if sides.get("shuffled", "above") != "above":
        return "no_readout"
    if "lexical" not in sides:
        return "unchecked"
    if sides["lexical"] != "above":
        return "spelling"
    if sides.get("random_init", "above") != "above":  # not run: said beside the label, never counted as beaten
        return "architecture"
    return "within_group" if within_shown else "which_group"


def _meaning(label: str, group: str, what: str) -> str:
    return {
        "no_readout": "So: no readout is shown (the probe does not beat shuffled targets).",
        "spelling": "So: not shown. The spelling of the names predicts the target as well as the model's activations, "
                    "so nothing here needs a model representation.",
        "architecture": "So: not shown beyond the architecture. A twin with random weights reads out as much.",
        "which_group": f"So: the model knows which {group}, not (shown) {what} inside it.",
        "within_group": f"So: evidence of {what} beyond the {group}, the spelling and the architecture.",
        "unchecked": "So: unchecked. Without the lexical control the model cannot be told from the spelling.",
    }[label]  # fmt: skip


def short(entry: dict[str, Any] | None, *, signed: bool = False) -> str:
    """An estimate dict as ``.36 [.30, .41]`` (``–`` when absent)."""
    est = _est(entry)
    return est.text(signed=signed) if est is not None else "–"


