"""The options of a probe run beyond which probe, layers, target and controls (:class:`ProbeOptions`), each field
checked by its rule in :data:`PROBE_OPTION_RULES` (read by ``run_probe``, ``run_controls`` and a study's ``[probes]``
section)."""

from __future__ import annotations

from dataclasses import dataclass

from worldprobe.checks import FLAG, Rule, checked_fields
from worldprobe.config import DEFAULT_MARGINS, DEFAULT_RESAMPLES, RANDOM_INIT_SEEDS

PROBE_OPTION_RULES: dict[str, Rule] = {
    "log_target": FLAG, "holdouts": Rule(str, many=True), "standardize": Rule(bool),
    "random_init_seeds": Rule(int, minimum=1, optional=False, example="random_init_seeds = 3"),
    "resamples": Rule(int, minimum=100, optional=False, example="resamples = 1000 (per printed interval)"),
    "resplits": Rule(int, minimum=0, optional=False, example="resplits = 5"),
    "margin_r2": Rule(float, minimum=0.001, maximum=0.999, optional=False, example="margin_r2 = 0.05"),
    "margin_r": Rule(float, minimum=0.001, maximum=0.999, optional=False, example="margin_r = 0.05"),
}  # fmt: skip
"""The rules of :class:`ProbeOptions`' fields (a study's ``[probes]`` keys of the same names read them)."""


@dataclass(frozen=True)
class ProbeOptions:
    """How a probe run fits, holds out and tests, beyond which probe, layers, target and controls:

    - ``log_target``: probe log10 of the target (non-positive rows dropped); ``standardize``: z-score the
      activation dimensions on train rows (None: the measured default);
    - ``holdouts``: entity-table columns whose blocks are held out at the selected layer (e.g. ``("country",)``);
    - ``random_init_seeds``: random-weight twins the random-init control reads (seeds seed, seed + 1, ...);
    - ``resamples``: bootstrap resamples per printed interval; ``resplits``: K re-drawn train/test splits that refit
      the probe, lexical and random-init controls; ``margin_r2``, ``margin_r``: the verdicts' equivalence margins for
      differences of R² and of the within-group r (docs/verdicts.md)."""

    log_target: bool = False
    holdouts: tuple[str, ...] = ()
    standardize: bool | None = None
    random_init_seeds: int = RANDOM_INIT_SEEDS
    resamples: int = DEFAULT_RESAMPLES
    resplits: int = 0
    margin_r2: float = DEFAULT_MARGINS["r2"]
    margin_r: float = DEFAULT_MARGINS["r"]

    def __post_init__(self) -> None:
        checked_fields(self, PROBE_OPTION_RULES)
