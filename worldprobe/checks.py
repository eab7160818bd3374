"""Checks of the values a user gives (study keys, API arguments): one rule per key, one clear error per mistake.

A :class:`Rule` checks one value and returns it in the shape the code keeps (a TOML list becomes a tuple); a
section of a study file is a table of key -> rule, checked by :func:`check_table`, which names the file and the key
(``datasets[2].limit``) in the error. A public function declares its arguments' rules with :func:`checked_arguments`
(scikit-learn's ``validate_params``), checked at the door before any work; :func:`whole_number` is the same check
for a single value, :func:`checked_fields` for the fields of a settings object.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from worldprobe.errors import WorldprobeError

SEED_MAX = 2**63 - 1
"""The largest seed: TOML's largest integer (numpy and torch take any seed in 0..SEED_MAX)."""

Choices = Collection[str] | Callable[[], Collection[str]]


class Invalid(Exception):
    """A value broke a rule; :func:`check_table` turns it into a :class:`WorldprobeError` naming file and key."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


TYPE_NAMES = {bool: "true/false", int: "a whole number", float: "a number", str: "text", list: "a list",
              dict: "a table"}  # fmt: skip


def _type_name(value: Any) -> str:
    return TYPE_NAMES.get(type(value), type(value).__name__)


def _given(value: Any) -> str:
    """What the user wrote: ``text 'ten'``, ``true``, ``a number 5.5``."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{_type_name(value)} {value!r}"


def _choices(choices: Choices) -> list[str]:
    return list(choices() if callable(choices) else choices)


def closest(value: str, known: Collection[str]) -> str:
    """A hint: ``did you mean 'x'?`` when a known name is close, else the known names."""
    close = difflib.get_close_matches(value, sorted(known), n=1)
    return f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"


@dataclass(frozen=True)
class Rule:
    """How one key is checked.

    - ``kind``: ``int``, ``str``, ``bool``, ``float``, ``dict`` or a tuple of them (a bool is never taken for a
      number, nor a number for a bool); ``many``: a list of such values (kept as a tuple, no value twice);
      ``nonempty`` refuses ``[]``.
    - ``minimum``/``maximum`` bound numbers; ``choices`` (or a function returning them) lists the allowed names,
      each a ``noun`` in the message.
    - ``optional``: the value may be None (TOML has no None: this is for Python callers).
    - ``extra``: a further check of each value, returning an error message or None (or raising :class:`Invalid`
      with its own hint); ``example`` shows the right form in the hint.
    """

    kind: type | tuple[type, ...]
    many: bool = False
    nonempty: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: Choices | None = None
    noun: str = "name"
    optional: bool = True
    extra: Callable[[Any], str | None] | None = None
    example: str | None = None

    def check(self, value: Any) -> Any:
        """The value in the shape the code keeps, or :class:`Invalid`."""
        if value is None and self.optional:
            return None
        if not self.many:
            return self._one(value)
        if not isinstance(value, list):
            raise Invalid(f"must be a list, not {_given(value)}", hint=self._example())
        if self.nonempty and not value:
            raise Invalid("must not be empty", hint=self._example())
        items = tuple(self._one(item) for item in value)
        repeated = sorted({item for item in items if items.count(item) > 1}, key=str)
        if repeated:
            raise Invalid(f"lists {repeated[0]!r} more than once")
        return items

    def _one(self, value: Any) -> Any:
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value) not in kinds:
            number = next((k for k in kinds if k in (int, float)), None)  # numpy integers; a whole number for a number
            value = number(value) if number else value
        elif isinstance(value, numbers.Real) and not isinstance(value, bool) and float in kinds:
            value = float(value)  # numpy floats
        if type(value) not in kinds:
            wanted = " or ".join(TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise Invalid(f"must be {wanted}, not {_given(value)}", hint=self._example())
        if isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"must be a finite number, not {value!r}", hint=self._example())
        if self.minimum is not None and value < self.minimum:
            raise Invalid(f"must be at least {self.minimum}, not {value!r}", hint=self._example())
        if self.maximum is not None and value > self.maximum:
            raise Invalid(f"must be at most {self.maximum}, not {value!r}", hint=self._example())
        if self.choices is not None:
            known = _choices(self.choices)
            if value not in known:
                raise Invalid(f"unknown {self.noun} {value!r}", hint=closest(value, known))
        if self.extra is not None:
            problem = self.extra(value)
            if problem:
                raise Invalid(problem, hint=self._example())
        return value

    def _example(self) -> str | None:
        if self.example:
            return f"e.g. {self.example}"
        if self.choices is not None:
            return f"known: {', '.join(_choices(self.choices))}"
        return None


def check_table(
    table: Any,
    rules: Mapping[str, Rule],
    *,
    file: str | Path | None,
    section: str,
    required: Collection[str] = (),
    elsewhere: Mapping[str, Collection[str]] | None = None,
) -> dict[str, Any]:
    """Check every key of one table against its rule; return the checked values (absent keys stay absent).

    Unknown keys (with a "did you mean", or the section in ``elsewhere`` (section -> keys) that has such a key),
    missing required keys and bad values raise a :class:`WorldprobeError` naming ``file`` and ``section.key``.
    """
    where = section if section.endswith("]") else f"[{section}]"
    if not isinstance(table, dict):
        raise WorldprobeError(f"{where} must be a table, not {_type_name(table)}", file=file, field=section)
    for key in table:
        if key not in rules:
            home = [name for name, keys in (elsewhere or {}).items() if key in keys]
            hint = f"{key!r} belongs in [{home[0]}] (a TOML key belongs to the [header] above it)" if home else \
                closest(key, list(rules))
            raise WorldprobeError(f"unknown key {key!r}", file=file, field=f"{section}.{key}", hint=hint)
    for key in required:
        if key not in table:
            raise WorldprobeError(f"{key!r} is missing", file=file, field=f"{section}.{key}")
    checked = {}
    for key, value in table.items():
        try:
            checked[key] = rules[key].check(value)
        except Invalid as problem:
            raise WorldprobeError(problem.message, file=file, field=f"{section}.{key}", hint=problem.hint) from None
    return checked


def whole_number(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int | None:
    """``value`` when it is None or a whole number in ``minimum..maximum``; else an error naming ``name``."""
    return check_argument(name, Rule(int, minimum=minimum, maximum=maximum), value)


def check_argument(name: str, rule: Any, value: Any) -> Any:
    """``value`` in the shape ``rule`` keeps, or one WorldprobeError naming the argument ``name`` (the error every
    API check gives: :func:`checked_arguments`, :func:`whole_number`)."""
    try:
        return rule.check(value)
    except Invalid as problem:
        raise WorldprobeError(f"{name} {problem.message}", field=name, hint=problem.hint) from None


@dataclass(frozen=True)
class PathRule:
    """A file or folder given as text or a path object (``also``: further accepted types, e.g. a Workspace)."""

    also: tuple[type, ...] = ()
    optional: bool = True
    noun: str = "path"

    def check(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        if isinstance(value, (str, os.PathLike, *self.also)):
            return value
        raise Invalid(f"must be a {self.noun} (text or pathlib.Path), not {type(value).__name__}")


@dataclass(frozen=True)
class OneOf:
    """A value that one of ``rules`` takes (the first that does), described as ``wanted`` when none does."""

    rules: tuple[Any, ...]
    wanted: str
    optional: bool = True

    def check(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        for rule in self.rules:
            try:
                return rule.check(value)
            except Invalid:
                continue
        raise Invalid(f"must be {self.wanted}, not {_given(value)}")


SEED = Rule(int, minimum=0, maximum=SEED_MAX, optional=False)
COUNT = Rule(int, minimum=1)
NAME = Rule(str, optional=False)
FLAG = Rule(bool, optional=False)
WORKERS = Rule(int, minimum=1, example="workers = 2")
LAYER_LIST = Rule(int, many=True, minimum=0)
LAYERS = OneOf((Rule(str), LAYER_LIST), "text such as 'all' or '1:4', or a list of layer numbers")

F = TypeVar("F", bound=Callable[..., Any])

_MODEL = "the model as ModelRequest(name, {0}=...) (worldprobe.extract.ModelRequest)"
_ASKING = "asking=Asking({0}=...) (worldprobe.interventions.Asking)"
_STEERING = "steering=Steering({0}=...) (worldprobe.interventions.Steering)"
_PROBE = "options=ProbeOptions({0}=...) (worldprobe.probes.ProbeOptions)"
MOVED_KEYWORDS: dict[str, str] = {
    **{k: _MODEL.format(k) for k in ("dtype", "device", "quantization", "gguf_file", "revision", "max_memory")},
    "tokenizer": "the name register_model(model, tokenizer) returns (worldprobe.extract.register_model)",
    "limit_seed": "seed= (the rows' seed); a random-init twin's weights take ModelRequest(name, seed=...)",
    **{k: f"batching=Batching({k}=...) (worldprobe.extract.Batching)" for k in ("padding_side", "flush_rows", "shard")},
    "batch_size": "batching=Batching(batch_size=...) to run_extraction, asking=Asking(batch_size=...) to ask, steer "
                  "and context",
    "fmt": _ASKING.format("format"), **{k: _ASKING.format(k) for k in ("shots", "max_new_tokens")},
    **{k: _STEERING.format(k) for k in ("target", "directions", "positions", "doses", "generated", "use_cache",
                                        "select_limit", "map_random", "random_directions", "random_init")},
    "das_settings": _STEERING.format("das"),
    **{k: _PROBE.format(k) for k in ("log_target", "holdouts", "standardize", "random_init_seeds", "resplits",
                                     "margin_r2", "margin_r")},
}  # fmt: skip
"""Keywords the stage functions took before their options were grouped into settings objects -> where each goes now:
a call with an old keyword gets one line saying so instead of Python's "unexpected keyword argument"."""


def checked_arguments(**rules: Any) -> Callable[[F], F]:
    """Declare the rules of a public function's arguments (each a :class:`Rule`, :class:`PathRule` or
    :class:`OneOf`); the function then checks them at the door, before any work, and a bad value raises one
    WorldprobeError naming the argument. Values arrive in the shape the rule keeps: a numpy integer as an int, a
    list-like for a ``many`` rule (list, tuple, range, array) as a tuple. The rules are the wrapper's ``rules``."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        unknown = set(rules) - set(signature.parameters)
        if unknown:
            raise TypeError(f"{function.__qualname__} has no arguments {sorted(unknown)}")

        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())  # find_cache's **identity

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            moved = [] if takes_any else [k for k in kwargs if k not in signature.parameters and k in MOVED_KEYWORDS]
            if moved:
                raise WorldprobeError(f"{function.__name__} takes no {moved[0]}= any more: it travels in a settings "
                                      "object", field=moved[0], hint=f"pass {MOVED_KEYWORDS[moved[0]]}")  # fmt: skip
            bound = signature.bind(*args, **kwargs)
            for name, rule in rules.items():
                if name not in bound.arguments:
                    continue
                value = bound.arguments[name]
                if getattr(rule, "many", False) or isinstance(rule, OneOf):
                    value = _as_list(value)
                bound.arguments[name] = check_argument(name, rule, value)
            return function(*bound.args, **bound.kwargs)

        wrapper.rules = rules  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def checked_fields(settings: Any, rules: Mapping[str, Any], prefix: str = "") -> None:
    """Check the fields of a frozen settings object against ``rules`` (field -> rule) in its ``__post_init__``: a
    bad value raises the one WorldprobeError :func:`checked_arguments` gives, naming ``prefix + field``; values are
    kept in the shape the rule keeps (a list as a tuple)."""
    for name, rule in rules.items():
        value = getattr(settings, name)
        if getattr(rule, "many", False) or isinstance(rule, OneOf):
            value = _as_list(value)
        object.__setattr__(settings, name, check_argument(prefix + name, rule, value))


def check_call(function: Callable[..., Any], **arguments: Any) -> None:
    """Check ``arguments`` against the rules ``function`` declares (:func:`checked_arguments`) without calling it: a
    command that does work before the call (extracting a control's twins, making a folder) checks them first."""
    for name, value in arguments.items():
        rule = function.rules[name]  # type: ignore[attr-defined]
        if getattr(rule, "many", False) or isinstance(rule, OneOf):
            value = _as_list(value)
        check_argument(name, rule, value)


def _as_list(value: Any) -> Any:
    """A tuple, range or 1-D array as a list (what a ``many`` rule reads); anything else as it is."""
    if isinstance(value, tuple | range) or (hasattr(value, "ndim") and getattr(value, "ndim", 0) == 1):
        return list(value)
    return value
