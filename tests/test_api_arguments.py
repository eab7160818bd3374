"""The Python API checks its arguments at the door: every public function that declares rules
(:func:`worldprobe.checks.checked_arguments`) refuses a bad value of each declared argument with one WorldprobeError
naming it, before any work (no workspace, model or cache is touched here); numpy integers and list-likes are taken."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from worldprobe.checks import FLAG, SEED, OneOf, PathRule, Rule, checked_arguments
from worldprobe.datasets.builder import build
from worldprobe.errors import WorldprobeError
from worldprobe.extract.cache import find_cache, open_cache
from worldprobe.extract.runner import run_extraction
from worldprobe.interventions.ask import run_ask
from worldprobe.interventions.context import run_context
from worldprobe.interventions.steer import run_steer
from worldprobe.probes.experiments import run_probe

PUBLIC = [run_extraction, run_probe, run_ask, run_steer, run_context, find_cache, open_cache, build]


def bad_value(rule) -> object:
    """A value the rule refuses: the wrong type for its kind (a DataFrame for a path, text for a list)."""
    if isinstance(rule, PathRule):
        return pd.DataFrame({"a": [1]})
    if isinstance(rule, OneOf):
        return {"a": 1}
    if rule.many:
        return "4,8"
    kinds = rule.kind if isinstance(rule.kind, tuple) else (rule.kind,)
    return 5 if str in kinds else "ten"


CASES = [(f, name, rule) for f in PUBLIC for name, rule in f.rules.items()]


@pytest.mark.parametrize(("function", "name", "rule"), CASES,
                         ids=[f"{f.__name__}-{n}" for f, n, _ in CASES])  # fmt: skip
def test_every_declared_rule_refuses_a_bad_value_naming_the_argument(function, name, rule, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written; the default workspace would land here
    import inspect

    required = [p for p, spec in inspect.signature(function).parameters.items()
                if spec.default is inspect.Parameter.empty and spec.kind is not spec.VAR_KEYWORD]  # fmt: skip
    arguments = {p: "world_place" if p == "dataset" else "x" for p in required}
    arguments[name] = bad_value(rule)
    with pytest.raises(WorldprobeError) as info:
        function(**arguments)
    assert info.value.message.startswith(f"{name} "), info.value.message
    assert "\n" not in str(info.value).strip()
    assert not any(tmp_path.iterdir())


def test_numpy_integers_and_list_likes_arrive_in_the_kept_shape_and_non_finite_numbers_are_refused():
    @checked_arguments(seed=SEED, layers=Rule(int, many=True, minimum=0), dose=Rule(float), quick=FLAG)
    def echo(seed: int = 0, layers=(), dose: float = 1.0, quick: bool = False):
        return seed, layers, dose, quick

    seed, layers, dose, _ = echo(np.int64(3), np.array([1, 2]), np.float64(0.5))
    assert (seed, layers) == (3, (1, 2)) and type(seed) is int and all(type(v) is int for v in layers)
    assert echo(layers=range(3))[1] == (0, 1, 2)
    with pytest.raises(WorldprobeError, match="dose must be a finite number, not nan"):
        echo(dose=float("nan"))
    with pytest.raises(WorldprobeError, match="seed must be at least 0"):
        echo(seed=-1)
    with pytest.raises(WorldprobeError, match="quick must be true/false, not text 'yes'"):
        echo(quick="yes")
    with pytest.raises(TypeError, match="has no arguments"):
        checked_arguments(nope=SEED)(echo)


def test_a_workspace_must_be_a_folder_path():
    from worldprobe.workspace import Workspace, as_workspace

    with pytest.raises(WorldprobeError, match="workspace must be a folder path"):
        as_workspace(pd.DataFrame())
    with pytest.raises(TypeError, match="takes a folder path, not int"):
        Workspace(5)
    assert Workspace("some/where").root.name == "where"  # text is a path


def test_a_study_section_and_the_api_read_the_same_rules_and_say_the_same_thing():
    """[ask], [steer] and [context] keys are checked by the behaviour stages' own argument rules (declared once in
    interventions.options): the same objects, the same message."""
    from worldprobe.checks import check_table
    from worldprobe.interventions.options import ASK_ARGUMENTS, CONTEXT_ARGUMENTS, DAS_RULES, STEER_ARGUMENTS
    from worldprobe.study import settings as study

    same_name = ("limit", "select_limit", "directions", "layers", "positions", "doses", "map_random")
    shared = [(study.ASK_RULES, "format", ASK_ARGUMENTS, "fmt"), (study.ASK_RULES, "limit", ASK_ARGUMENTS, "limit"),
              (study.STEER_RULES, "random", STEER_ARGUMENTS, "random_directions"),
              (study.CONTEXT_RULES, "limit", CONTEXT_ARGUMENTS, "limit"),
              (study.STEER_RULES, "das_entities", DAS_RULES, "entities"),
              (study.STEER_RULES, "das_steps", DAS_RULES, "steps"),
              *[(study.STEER_RULES, key, STEER_ARGUMENTS, key) for key in same_name]]  # fmt: skip
    assert all(table[key] is arguments[name] for table, key, arguments, name in shared)
    for function, name, value, section, key in ((run_steer, "select_limit", 1, study.STEER_RULES, "select_limit"),
                                                (run_context, "limit", 1, study.CONTEXT_RULES, "limit"),
                                                (run_ask, "fmt", "json", study.ASK_RULES, "format")):  # fmt: skip
        with pytest.raises(WorldprobeError) as api:
            function("historical_figure", **{name: value})
        with pytest.raises(WorldprobeError) as toml:
            check_table({key: value}, section, file="study.toml", section="steer")
        assert api.value.message == f"{name} {toml.value.message}"
