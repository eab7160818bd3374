"""Each user-facing rule is declared once (a rule table beside the function or settings object that reads it) and a
bad value gives the same one-line error through the Python API, the command line and a study file.

The walk: every rule of every declared table and of every public function's argument rules is tried with a value it
refuses (out of range, an unknown name, the wrong type) through the API; each rule the CLI or a study exposes is tried
there too, with the value the CLI can parse (out of range or unknown), and the message must be the API's, word for
word. Nothing may be written (the check is at the door)."""

from __future__ import annotations

import inspect
import sys

import pytest

from worldprobe import cli
from worldprobe.checks import OneOf, PathRule, Rule, check_table
from worldprobe.datasets.builder import build
from worldprobe.errors import WorldprobeError
from worldprobe.extract.cache import find_cache, open_cache
from worldprobe.extract.options import BATCHING_RULES, MODEL_RULES, Batching, ModelRequest
from worldprobe.extract.runner import run_extraction
from worldprobe.interventions.ask import run_ask
from worldprobe.interventions.context import run_context
from worldprobe.interventions.options import ASKING_RULES, DAS_RULES, STEERING_RULES, Asking, DasSettings, Steering
from worldprobe.interventions.steer import run_steer
from worldprobe.neurons.search import find_neurons
from worldprobe.probes.experiments import run_probe
from worldprobe.probes.options import PROBE_OPTION_RULES, ProbeOptions
from worldprobe.reports.build import build_report
from worldprobe.study import settings as study

FUNCTIONS = [run_extraction, find_neurons, run_probe, run_ask, run_steer, run_context, find_cache, open_cache, build,
             build_report]  # fmt: skip
SETTINGS = [(ModelRequest, MODEL_RULES, ""), (Batching, BATCHING_RULES, ""), (Asking, ASKING_RULES, ""),
            (Steering, STEERING_RULES, ""), (ProbeOptions, PROBE_OPTION_RULES, ""),
            (DasSettings, DAS_RULES, "das_")]  # fmt: skip


def refused(rule) -> list[object]:
    """Values ``rule`` refuses: the wrong type, and (where it has them) a number outside its range or an unknown
    name."""
    if isinstance(rule, PathRule):
        return [3.5]
    if isinstance(rule, OneOf):
        return [{"a": 1}]
    kinds = rule.kind if isinstance(rule.kind, tuple) else (rule.kind,)
    values: list[object] = ["4,8"] if rule.many else [5 if str in kinds else "ten"]
    one = (lambda v: [v]) if rule.many else (lambda v: v)
    if rule.minimum is not None:
        values.append(one(type(rule.minimum)(rule.minimum) - 1 if int in kinds else rule.minimum - 0.5))
    if rule.maximum is not None:
        values.append(one(rule.maximum + 1 if int in kinds else rule.maximum + 0.5))
    if rule.choices is not None:
        values.append(one("no-such-name"))
    return values


def api_error(call, value) -> WorldprobeError:
    with pytest.raises(WorldprobeError) as info:
        call(value)
    return info.value


def _function_cases():
    for function in FUNCTIONS:
        required = [p for p, spec in inspect.signature(function).parameters.items()
                    if spec.default is inspect.Parameter.empty and spec.kind is not spec.VAR_KEYWORD]  # fmt: skip
        for name, rule in function.rules.items():
            for value in refused(rule):
                yield pytest.param(function, required, name, value, id=f"{function.__name__}-{name}-{value!r}")


@pytest.mark.parametrize(("function", "required", "name", "value"), list(_function_cases()))
def test_every_argument_rule_refuses_each_kind_of_bad_value_at_the_door(function, required, name, value, tmp_path,
                                                                        monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)  # the default workspace would land here: nothing may be written
    arguments = {p: "world_place" if p == "dataset" else tmp_path / "ws" if p == "workspace" else "x" for p in required}
    error = api_error(lambda v: function(**{**arguments, name: v}), value)
    assert error.message.startswith(f"{name} ") and error.field == name
    assert "\n" not in str(error)
    assert not any(tmp_path.iterdir())


def _settings_cases():
    for cls, rules, prefix in SETTINGS:
        for name, rule in rules.items():
            for value in refused(rule):
                yield pytest.param(cls, prefix, name, value, id=f"{cls.__name__}-{name}-{value!r}")


@pytest.mark.parametrize(("cls", "prefix", "name", "value"), list(_settings_cases()))
def test_every_settings_field_is_checked_when_the_object_is_made(cls, prefix, name, value):
    error = api_error(lambda v: cls(**{name: v}), value)
    assert error.message.startswith(f"{prefix}{name} ") and error.field == f"{prefix}{name}"


# Where a rule meets the command line and a study file: (the API call, its argument name, the CLI command and flag,
# the study section and key, a value all three can carry). The value is one the CLI parses (a number out of range,
# an unknown name), so the rule, not the option parser, refuses it.
TINY = ["-d", "world_place"]
SURFACES = [
    (lambda v: Batching(batch_size=v), "batch_size", ["extract", *TINY, "--batch-size"], ("extract", "batch_size"), 0),
    (lambda v: Batching(flush_rows=v), "flush_rows", ["extract", *TINY, "--flush-every"], ("extract", "flush_rows"), 0),
    (lambda v: ModelRequest(dtype=v), "dtype", ["extract", *TINY, "--dtype"], ("extract", "dtype"), "float8"),
    (lambda v: run_extraction("world_place", limit=v), "limit", ["extract", *TINY, "--limit"], None, 0),
    (lambda v: run_extraction("world_place", seed=v), "seed", ["extract", *TINY, "--seed"], ("study", "seed"), -1),
    (lambda v: find_neurons("world_place", top_k=v), "top_k", ["neurons", *TINY, "--top-k"], ("neurons", "top_k"), 0),
    (lambda v: ProbeOptions(margin_r2=v), "margin_r2", ["probe", *TINY, "--margin-r2"], ("probes", "margin_r2"), 1.5),
    (lambda v: ProbeOptions(margin_r=v), "margin_r", ["probe", *TINY, "--margin-r"], ("probes", "margin_r"), 0.0),
    (lambda v: ProbeOptions(resplits=v), "resplits", ["probe", *TINY, "--resplits"], ("probes", "resplits"), -1),
    (lambda v: ProbeOptions(random_init_seeds=v), "random_init_seeds", ["probe", *TINY, "--random-init-seeds"],
     ("extract", "random_init_seeds"), 0),
    (lambda v: ProbeOptions(resamples=v), "resamples", ["probe", *TINY, "--resamples"], None, 50),
    (lambda v: run_probe("world_place", "m", seed=v), "seed", ["probe", *TINY, "--seed"], None, -2),
    (lambda v: Asking(format=v), "format", ["ask", *TINY, "--format"], ("ask", "format"), "json"),
    (lambda v: Asking(shots=v), "shots", ["ask", *TINY, "--shots"], None, -1),
    (lambda v: Asking(max_new_tokens=v), "max_new_tokens", ["ask", *TINY, "--max-new-tokens"], None, 0),
    (lambda v: run_ask("world_place", limit=v), "limit", ["ask", *TINY, "--limit"], ("ask", "limit"), 0),
    (lambda v: run_ask("world_place", layer=v), "layer", ["ask", *TINY, "--layer"], None, -1),
    (lambda v: run_ask("world_place", tolerance=v), "tolerance", ["ask", *TINY, "--tolerance"], None, -5.0),
    (lambda v: run_steer("world_place", limit=v), "limit", ["steer", *TINY, "--limit"], ("steer", "limit"), 0),
    (lambda v: Steering(select_limit=v), "select_limit", ["steer", *TINY, "--select-limit"],
     ("steer", "select_limit"), 1),
    (lambda v: Steering(map_random=v), "map_random", ["steer", *TINY, "--map-random"], ("steer", "map_random"), -1),
    (lambda v: Steering(random_directions=v), "random_directions", ["steer", *TINY, "--random"], ("steer", "random"),
     0),
    (lambda v: Steering(positions=[v]), "positions", ["steer", *TINY, "--positions"], ("steer", "positions"), "middle"),
    (lambda v: DasSettings(entities=v), "das_entities", ["steer", *TINY, "--das-entities"], ("steer", "das_entities"),
     1),
    (lambda v: DasSettings(steps=v), "das_steps", ["steer", *TINY, "--das-steps"], ("steer", "das_steps"), 0),
    (lambda v: run_context("world_place", limit=v), "limit", ["context", *TINY, "--limit"], ("context", "limit"), 1),
    (lambda v: build_report("ws", seed=v), "seed", ["report", "--seed"], None, -4),
    (lambda v: build_report("ws", workers=v), "workers", ["report", "--workers"], ("study", "workers"), 0),
    (lambda v: build_report("ws", workers=v), "workers", ["run", "--executor", "processes", "--workers"],
     ("study", "workers"), 0),
]  # fmt: skip


def _cli_line(args: list[str], monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", ["worldprobe", *args])
    with pytest.raises(SystemExit) as done:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def _study_tables() -> dict[str, dict[str, Rule]]:
    return {"study": study.HEAD_RULES, **{name: rules for name, (_, rules) in study.SECTIONS.items()}}


@pytest.mark.parametrize(("call", "name", "args", "key", "value"), SURFACES,
                         ids=[f"{a[0]}{a[-1]}" for _, _, a, _, _ in SURFACES])  # fmt: skip
def test_a_bad_value_gives_the_same_line_from_the_api_the_cli_and_a_study(call, name, args, key, value, tmp_path,
                                                                          monkeypatch, capsys):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLDPROBE_WORKSPACE", str(tmp_path / "ws"))
    api = api_error(call, value)
    assert api.message.startswith(f"{name} ") and "\n" not in api.message
    line = _cli_line([*args, str(value)], monkeypatch, capsys)
    assert line == f"error: {api}", "the command line words the rule its own way"
    if key is not None:
        section, field = key
        value_in_toml = [value] if name == "positions" else value
        with pytest.raises(WorldprobeError) as toml:
            check_table({field: value_in_toml}, _study_tables()[section], file="study.toml", section=section)
        assert api.message == f"{name} {toml.value.message}"
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").rglob("*.parquet"))


def test_the_study_reads_the_rules_the_api_declares_not_copies_of_them():
    """A study key and the API argument it becomes share one rule object: changing the rule changes both."""
    tables = _study_tables()
    shared = {("extract", "batch_size"): BATCHING_RULES["batch_size"],
              ("extract", "flush_rows"): BATCHING_RULES["flush_rows"],
              ("extract", "random_init_seeds"): PROBE_OPTION_RULES["random_init_seeds"],
              ("probes", "margin_r2"): PROBE_OPTION_RULES["margin_r2"],
              ("probes", "margin_r"): PROBE_OPTION_RULES["margin_r"],
              ("probes", "resplits"): PROBE_OPTION_RULES["resplits"],
              ("probes", "standardize"): PROBE_OPTION_RULES["standardize"],
              ("ask", "format"): ASKING_RULES["format"], ("steer", "format"): ASKING_RULES["format"],
              ("context", "format"): ASKING_RULES["format"],
              ("steer", "random"): STEERING_RULES["random_directions"],
              ("steer", "das_entities"): DAS_RULES["entities"], ("steer", "das_steps"): DAS_RULES["steps"],
              **{("steer", k): STEERING_RULES[k] for k in ("select_limit", "directions", "layers", "positions",
                                                           "doses", "map_random")}}  # fmt: skip
    assert {key: tables[key[0]][key[1]] for key in shared} == shared
    assert all(tables[section][field] is rule for (section, field), rule in shared.items())


@pytest.mark.parametrize(("function", "keyword"), [
    (run_extraction, "dtype"), (run_extraction, "batch_size"), (run_extraction, "limit_seed"),
    (run_extraction, "tokenizer"), (find_neurons, "quantization"), (run_probe, "holdouts"), (run_probe, "margin_r2"),
    (run_ask, "fmt"), (run_ask, "max_new_tokens"), (run_steer, "doses"), (run_steer, "das_settings"),
    (run_context, "shots"),
])  # fmt: skip
def test_a_keyword_that_moved_into_a_settings_object_says_where_it_went(function, keyword, tmp_path, monkeypatch):
    """Code written for the loose keywords gets one line naming the settings object the keyword went to, not
    Python's "unexpected keyword argument", and nothing is written."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorldprobeError) as info:
        function("world_place", "m", **{keyword: 1})
    assert info.value.field == keyword and "settings object" in info.value.message
    assert info.value.hint.startswith("pass ") and "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())


def test_every_moved_keyword_points_at_a_field_that_exists():
    import dataclasses
    import re

    from worldprobe.checks import MOVED_KEYWORDS

    fields = {cls.__name__: {f.name for f in dataclasses.fields(cls)}
              for cls in (ModelRequest, Batching, Asking, Steering, ProbeOptions)}  # fmt: skip
    for keyword, where in MOVED_KEYWORDS.items():
        for cls, field in re.findall(r"(\w+)\((?:name, )?(\w+)=", where):
            assert field in fields[cls], (keyword, where)
