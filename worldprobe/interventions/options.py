"""The options of the behaviour stages that can be checked without a model, declared once: the settings objects
:class:`Asking` (how a question is put), :class:`Steering` (what a steering run maps and tests) and
:class:`DasSettings`, each checking its fields by its rule table; the argument rules of ``run_ask``, ``run_steer`` and
``run_context`` (:data:`ASK_ARGUMENTS`, :data:`STEER_ARGUMENTS`, :data:`CONTEXT_ARGUMENTS`, read at their door by
:func:`worldprobe.checks.checked_arguments`). A study's ``[ask]``, ``[steer]`` and ``[context]`` sections check
their keys with the same rules; the doses, positions and direction names of a steering run are checked here too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldprobe.checks import COUNT, FLAG, NAME, SEED, Rule, checked_fields
from worldprobe.config import DEFAULT_SHOTS, STEER_DOSES, STEER_MAP_RANDOM, STEER_METHODS, STEER_SELECT
from worldprobe.errors import WorldprobeError
from worldprobe.workspace import WORKSPACE

POSITIONS = ("last", "entity")
"""Where steering acts in the prompt: the entity's last token (the probed one) or every entity token."""
METHODS = ("ridge", "pattern", "mean_diff", "pls1", "pls2", "pls3", "das")
"""Built-in direction methods (``pls<k>`` for any k; ``das`` is learned with the model,
:mod:`~worldprobe.interventions.das`; a path to a ``.npy`` file is the user's own)."""


FORMAT = Rule(str, choices=("auto", "chat", "fewshot"), optional=False, noun="prompt format")
ASKING_RULES: dict[str, Rule] = {
    "format": FORMAT, "shots": Rule(int, minimum=0, optional=False), "batch_size": COUNT, "max_new_tokens": COUNT,
}  # fmt: skip
"""The rules of :class:`Asking`'s fields."""


@dataclass(frozen=True)
class Asking:
    """How a question is put to the model and answered, the same for ``run_ask``, ``run_steer`` and
    ``run_context``: the prompt ``format`` (``auto``: the chat template when the tokenizer has one, else few-shot;
    ``chat``; ``fewshot``), the seeded train examples of a few-shot prompt, prompts per batch (None: chosen from the
    model's size) and the token budget per answer (None: the question's)."""

    format: str = "auto"
    shots: int = DEFAULT_SHOTS
    batch_size: int | None = None
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        checked_fields(self, ASKING_RULES)


ASK_ARGUMENTS: dict[str, Rule | Any] = {
    "dataset": NAME, "question": Rule(str), "prompt": NAME, "workspace": WORKSPACE,
    "limit": Rule(int, minimum=1, example="limit = 200 (test entities; leave out for all)"), "seed": SEED,
    "resamples": COUNT, "progress": FLAG,
}  # fmt: skip
"""The argument rules every behaviour stage shares (``run_ask`` adds ``layer`` and ``tolerance``)."""
STEER_ARGUMENTS: dict[str, Rule | Any] = {
    **ASK_ARGUMENTS, "limit": Rule(int, minimum=1, example="limit = 50 (test entities)"),
}
"""The argument rules of ``run_steer`` (its steering plan's are :data:`STEERING_RULES`)."""
CONTEXT_ARGUMENTS: dict[str, Rule | Any] = {
    **ASK_ARGUMENTS, "limit": Rule(int, minimum=2, example="limit = 100 (test entities)"),
}
"""The argument rules of ``run_context`` (two entities at least: its statistics are paired over entities)."""
STEERING_RULES: dict[str, Rule] = {
    "target": Rule(str),
    "directions": Rule(str, many=True, nonempty=True, example='directions = ["mean_diff", "pattern", "ridge"]'),
    "layers": Rule(int, many=True, minimum=0, example="layers = [4, 8, 12]"),
    "positions": Rule(str, many=True, nonempty=True, choices=POSITIONS, noun="position"),
    "doses": Rule(float, many=True, nonempty=True, example="doses = [-2, -1, 1, 2] (multiples of |Δμ|)"),
    "generated": FLAG, "use_cache": FLAG, "random_init": FLAG,
    "select_limit": Rule(int, minimum=2, optional=False, example="select_limit = 24 (train entities of the map)"),
    "map_random": Rule(int, minimum=0, optional=False,
                       example="map_random = 2 (random directions per layer in the map)"),
    "random_directions": Rule(int, minimum=1, optional=False,
                              example="random = 5 (random directions of the chosen edit's norm)"),
}  # fmt: skip
"""The rules of :class:`Steering`'s fields."""


@dataclass(frozen=True)
class Steering:
    """What ``run_steer`` maps, chooses among and tests (module :mod:`~worldprobe.interventions.steer`):

    - ``target``: the target the directions raise (None: the dataset's first, year or latitude);
    - ``directions``: methods (``ridge``, ``pattern``, ``mean_diff``, ``pls<k>``, ``das``) or ``.npy`` files;
      ``layers``: where to steer (None: every cached layer before the last block; 0 = the embedding output);
      ``positions``: ``last`` (the entity's last token) and/or ``entity`` (all its tokens); ``doses``: multiples of
      |Δμ| at the layer, each with its negative; ``generated``: also add the edit at generated tokens
      (``use_cache``: with the KV cache);
    - ``select_limit`` train entities of the map, ``map_random`` random directions per layer in it;
    - the test's controls: ``random_directions`` random directions of the chosen edit's norm, and the random-init
      twin's direction of the chosen method (``random_init``; its cache is extracted when missing);
    - ``das``: how a ``das`` direction is trained (:class:`DasSettings`)."""

    target: str | None = None
    directions: tuple[str, ...] = STEER_METHODS
    layers: tuple[int, ...] | None = None
    positions: tuple[str, ...] = ("last",)
    doses: tuple[float, ...] = STEER_DOSES
    generated: bool = False
    use_cache: bool = True
    select_limit: int = STEER_SELECT
    map_random: int = STEER_MAP_RANDOM
    random_directions: int = 5
    random_init: bool = True
    das: DasSettings = field(default_factory=lambda: DasSettings())

    def __post_init__(self) -> None:
        checked_fields(self, STEERING_RULES)
        if not isinstance(self.das, DasSettings):
            raise WorldprobeError(f"das must be a DasSettings, not {type(self.das).__name__}", field="das")


def checked_doses(doses: Sequence[float]) -> list[float]:
    """Doses (multiples of |Δμ|): finite, non-zero, each with its negative (the antisymmetric shift needs both)."""
    values = sorted({float(d) for d in doses})
    bad = [d for d in values if not np.isfinite(d) or d == 0]
    if not values or bad:
        raise WorldprobeError(f"doses must be finite and non-zero, not {bad or 'none'}", field="doses",
                              hint="e.g. -2,-1,1,2 (multiples of |Δμ|; 0 is the unsteered answer)")  # fmt: skip
    unpaired = [d for d in values if -d not in values]
    if unpaired:
        raise WorldprobeError(f"every dose needs its negative for the antisymmetric shift: {unpaired} alone",
                              field="doses", hint="e.g. -2,-1,1,2")  # fmt: skip
    return values


def checked_positions(positions: Sequence[str]) -> list[str]:
    values = list(dict.fromkeys(positions))
    unknown = [p for p in values if p not in POSITIONS]
    if not values or unknown:
        raise WorldprobeError(f"unknown position {unknown[0]!r}" if unknown else "no position asked for",
                              field="positions", hint=f"one or more of {', '.join(POSITIONS)}")  # fmt: skip
    return values


def checked_methods(methods: Sequence[str]) -> list[str]:
    values = list(dict.fromkeys(str(m) for m in methods))
    if not values:
        raise WorldprobeError("no steering direction asked for", field="direction", hint="e.g. mean_diff,pattern")
    for method in values:
        if method.endswith(".npy"):
            if not Path(method).is_file():
                raise WorldprobeError("no such direction file", file=method, field="direction",
                                      hint="a .npy file of a vector (d,) or (layers + 1, d)")  # fmt: skip
        elif not is_method(method):
            raise WorldprobeError(f"unknown steering direction {method!r}", field="direction",
                                  hint=f"{', '.join(METHODS)} (pls<k> for any k), or a .npy file")  # fmt: skip
    return values


def is_method(name: str) -> bool:
    """A built-in direction method (``pls<k>`` for any k >= 1)."""
    return name in METHODS or (name.startswith("pls") and name[3:].isdigit() and int(name[3:]) >= 1)


@dataclass(frozen=True)
class DasSettings:
    """How a ``das`` direction is trained: train entities answered (at most), optimisation steps per layer, pairs per
    step and Adam's learning rate (on a unit-norm parameter, renormalised in the forward pass)."""

    entities: int = 96
    steps: int = 120
    batch: int = 8
    learning_rate: float = 0.05

    def __post_init__(self) -> None:
        checked_fields(self, DAS_RULES, "das_")

    def to_dict(self) -> dict[str, Any]:
        """The settings and the training algorithm's version (part of a run's key: a changed algorithm is rerun)."""
        return {**asdict(self), "algorithm": DAS_ALGORITHM}


DAS_RULES: dict[str, Rule] = {
    "entities": Rule(int, minimum=2, optional=False,
                     example="das_entities = 96 (train entities a das direction learns from)"),
    "steps": Rule(int, minimum=1, optional=False,
                  example="das_steps = 120 (training steps per layer of a das direction)"),
    "batch": Rule(int, minimum=1, optional=False),
    "learning_rate": Rule(float, optional=False, extra=lambda rate: None if rate > 0 else "must be positive"),
}  # fmt: skip
"""The rules of :class:`DasSettings`' fields, read by it and by a study's ``das_entities`` and ``das_steps``."""
DAS_ALGORITHM = 2
"""Version of the das training (2: oriented by the model's answers in the question's prompt)."""
