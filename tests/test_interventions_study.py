"""[ask] and [steer] tables of study files: parsed, checked before any work, planned, and run with their settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from worldprobe.errors import WorldprobeError
from worldprobe.extract.options import ModelRequest
from worldprobe.study import Unit, load_study, plan, run_unit
from worldprobe.workspace import Workspace

STUDY = """
[study]
name = "behaviour"
seed = 4

[[datasets]]
name = "historical_figure"
limit = 300
prompts = ["when", "empty"]

[[datasets]]
name = "world_place"

[extract]
models = ["smollm2-135m", "gemma3-270m"]
random_init = ["smollm2-135m"]

[ask]
datasets = ["historical_figure", "world_place"]
models = ["smollm2-135m", "gemma3-270m"]
format = "fewshot"

[steer]
datasets = ["historical_figure"]
limit = 20
random = 6
directions = ["mean_diff", "pattern"]
layers = [4, 8]
doses = [-2, -1, 1, 2]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_ask_and_steer_tables_are_planned_after_the_probes(tmp_path):
    study = load_study(_write(tmp_path, STUDY))
    assert study.ask.format == "fewshot" and study.steer.limit == 20 and study.steer.random == 6
    work = plan(study)
    assert [u.label for u in work["ask"]] == [
        "historical_figure x smollm2-135m", "historical_figure x gemma3-270m",
        "world_place x smollm2-135m", "world_place x gemma3-270m",
    ]  # fmt: skip
    assert [u.params for u in work["steer"]] == [  # default model: the study's first; prompt: the dataset's first
        {"dataset": "historical_figure", "model": "smollm2-135m", "prompt": "when"}
    ]
    shipped = load_study()
    assert not plan(shipped)["ask"] and not plan(shipped)["steer"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("random = 6", "randon = 6"), "field 'steer.randon': unknown key 'randon'.*did you mean 'random'"),
        (("random = 6", 'random = "six"'), "field 'steer.random': must be a whole number"),
        (("doses = [-2, -1, 1, 2]", "doses = [1, 2]"), "field 'steer.doses': every dose needs its negative"),
        (('directions = ["mean_diff", "pattern"]', 'directions = ["lda"]'),
         "field 'steer.directions': unknown steering direction 'lda'"),
        (("layers = [4, 8]", "layers = [4, 30]"),
         "field 'steer.layers': steer.layers \\[30\\] are not before the last"),
        (('format = "fewshot"', 'format = "few-shot"'), "field 'ask.format'.*few-shot"),
        (('datasets = ["historical_figure"]\nlimit = 20', 'datasets = ["art"]\nlimit = 20'),
         "steer.datasets names 'art', which the study does not build"),
        (('models = ["smollm2-135m", "gemma3-270m"]\nformat', 'models = ["qwen2.5-0.5b"]\nformat'),
         "ask.models names 'qwen2.5-0.5b', which the study does not extract"),
    ],
)  # fmt: skip
def test_mistakes_in_ask_and_steer_tables_are_caught_before_any_work(tmp_path, change, message):
    with pytest.raises(WorldprobeError, match=message):
        load_study(_write(tmp_path, STUDY.replace(*change)))


def test_units_call_ask_and_steer_with_the_study_settings(tmp_path, monkeypatch):
    import worldprobe.interventions.ask as ask_module
    import worldprobe.interventions.steer as steer_module

    calls = []
    monkeypatch.setattr(ask_module, "run_ask", lambda *a, **k: calls.append(("ask", a, k)) or "ask-folder")
    monkeypatch.setattr(steer_module, "run_steer", lambda *a, **k: calls.append(("steer", a, k)) or "steer-folder")
    study = load_study(_write(tmp_path, STUDY))
    ws = Workspace(tmp_path / "ws")
    assert run_unit(Unit("ask", "x", {"dataset": "world_place", "model": "gemma3-270m", "prompt": "empty"}), study,
                    ws) == "ask-folder"  # fmt: skip
    for model in ("smollm2-135m", "gemma3-270m"):
        run_unit(Unit("steer", "x", {"dataset": "historical_figure", "model": model, "prompt": "when"}), study, ws)
    (_, args, kwargs), *steers = calls
    assert args[0] == "world_place" and args[1] == ModelRequest("gemma3-270m", seed=4)
    assert kwargs["asking"].format == "fewshot" and kwargs["seed"] == 4
    assert kwargs["limit"] is None and kwargs["workspace"] == ws
    plans = [s[2]["steering"] for s in steers]
    assert [p.random_init for p in plans] == [True, False]  # only models whose twin the study extracts
    assert plans[0].random_directions == 6 and steers[0][2]["limit"] == 20
    assert plans[0].directions == ("mean_diff", "pattern") and plans[0].layers == (4, 8)
    assert plans[0].doses == (-2.0, -1.0, 1.0, 2.0)
    assert steers[0][2]["prompt"] == "when"
