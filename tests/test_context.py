"""``worldprobe context``: a planted context-copying model (its answer copies any year stated before the question; its
representation of the entity moves half way toward a statement about that entity) gives the fractions it should
under each condition, and the real planted Llama runs the whole pipeline."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from test_interventions_steering import N_ENTITIES, _planted_workspace, _question, _tokenizer, planted_llama

from worldprobe.interventions import context
from worldprobe.interventions.generate import Answer
from worldprobe.interventions.options import Asking


def test_fraction_of_the_way_projects_on_the_counterfactual_displacement():
    plan = pd.DataFrame({"truth_latitude": [0.0, 10.0], "truth_longitude": [0.0, 0.0],
                         "displacement_latitude": [10.0, 0.0], "displacement_longitude": [0.0, -20.0]})  # fmt: skip
    values = np.array([[5.0, 3.0], [10.0, -30.0]])
    np.testing.assert_allclose(context.fraction(values, plan, "truth", ["latitude", "longitude"]), [0.5, 1.5])


def test_a_counterfactual_group_is_far_from_the_true_one():
    points = pd.DataFrame({"latitude": [0.0, 0.5, 40.0, -40.0], "longitude": [0.0, 0.5, 0.0, 10.0]},
                          index=["A", "B", "C", "D"])  # fmt: skip
    rng = np.random.default_rng(0)
    picked = {context._far_group(points, "A", 1000.0, rng) for _ in range(40)}
    assert picked == {"C", "D"}  # B is 78 km away: never
    assert context._far_group(points, "A", 1e6, rng) in {"C", "D"}  # none far enough: the farthest


@pytest.fixture
def planted_run(workspace, tmp_path, one_torch_thread):
    planted = planted_llama(len(_question(_tokenizer(N_ENTITIES), ["w0"])[0]))
    folder, table = _planted_workspace(planted, workspace, tmp_path)
    return workspace, folder, table.set_index("text")["year"]


def test_a_context_copying_model_gives_the_fractions_it_should(planted_run, monkeypatch):
    workspace, folder, truth = planted_run
    monkeypatch.setitem(context.YEAR_SHIFT, "historical_figure", 50.0)

    texts: dict[int, tuple[str, str]] = {}  # id of an encoded prompt -> (its text, the asked entity)
    real_prompts_for = context.setup_mod.prompts_for

    def remembering_prompts_for(s, tokenizer, rows, *args, **kwargs):
        rendered, encoded, used = real_prompts_for(s, tokenizer, rows, *args, **kwargs)
        asked = s.entities.loc[rows, "text"].astype(str).tolist()
        texts.update({id(e): (t, a) for e, t, a in zip(encoded, rendered, asked, strict=True)})
        return rendered, encoded, used

    def asked_and_stated(loaded, item):
        text, entity = texts[id(item)]
        return entity, re.search(r"(w\d+) died in (\d+)\.", text)

    def copying_generate(loaded, encoded, **kwargs):
        out = []
        for item in encoded:
            entity, stated = asked_and_stated(loaded, item)
            year = stated.group(2) if stated else str(int(round(truth[entity])))
            out.append(Answer(year, [1], "eos"))
        return out

    def half_way_readings(s, loaded, encoded, batch_size):
        values = []
        for item in encoded:
            entity, stated = asked_and_stated(loaded, item)
            about_it = stated is not None and stated.group(1) == entity
            values.append(truth[entity] + (0.5 * (float(stated.group(2)) - truth[entity]) if about_it else 0.0))
        return np.array(values)[:, None]

    monkeypatch.setattr(context.setup_mod, "prompts_for", remembering_prompts_for)
    monkeypatch.setattr(context, "generate", copying_generate)
    monkeypatch.setattr(context, "probe_readings", half_way_readings)
    out = context.run_context(
        "historical_figure",
        str(folder),
        workspace=workspace,
        limit=20,
        resamples=200,
        progress=False,
        asking=Asking(format="fewshot", shots=0),
    )
    summary = json.loads((out / "summary.json").read_text())
    rows = pd.read_parquet(out / "context.parquet").set_index("condition")
    assert list(rows.index) == ["none", "counterfactual", "unrelated", "true"]
    assert rows.loc["counterfactual", "answer_shift"] == pytest.approx(1.0, abs=0.02)  # rounding the truth
    assert rows.loc["unrelated", "answer_shift"] == pytest.approx(1.0, abs=0.02)  # a naive copier copies any year
    assert abs(rows.loc["none", "answer_shift"]) < 0.02 and abs(rows.loc["true", "answer_shift"]) < 0.02
    assert rows.loc["counterfactual", "probe_shift"] == pytest.approx(0.5, abs=0.02)
    assert abs(rows.loc["unrelated", "probe_shift"]) < 0.02 and abs(rows.loc["none", "probe_shift"]) < 1e-9
    outcomes = summary["outcomes"]
    assert outcomes["probe_vs_none"] == "above" and outcomes["probe_vs_unrelated"] == "above"
    assert outcomes["answer_vs_none"] == "above" and outcomes["answer_vs_unrelated"] == "inconclusive"
    assert summary["n_entities"] == 20 and "of the way to the counterfactual" in summary["verdict"]
    answers = pd.read_parquet(out / "context_answers.parquet")
    assert len(answers) == 4 * 20 and set(answers["condition"]) == set(context.CONDITIONS)
    cf = answers[answers["condition"] == "counterfactual"]
    assert all(t in s and "died in" in s for t, s in zip(cf["text"], cf["statement"], strict=True))
    unrelated = answers[answers["condition"] == "unrelated"]
    assert not any(t in s.split(" died")[0].split() for t, s in zip(unrelated["text"], unrelated["statement"],
                                                                   strict=True))  # about another entity
    assert (answers.loc[answers["condition"] == "none", "statement"] == "").all()


def test_the_real_planted_model_runs_the_whole_context_pipeline(planted_run):
    """The planted Llama's representation of the entity ignores what comes before it: no condition moves the probe's
    reading (its answer, an average over the prompt, does move with the prompt's length)."""
    workspace, folder, _ = planted_run
    request = dict(workspace=workspace, limit=12, resamples=100, progress=False,
                   asking=Asking(format="fewshot", shots=0, max_new_tokens=1))  # fmt: skip
    out = context.run_context("historical_figure", str(folder), **request)
    rows = pd.read_parquet(out / "context.parquet").set_index("condition")
    assert rows["parse_rate"].eq(1.0).all()
    assert (rows["probe_shift"].abs() < 0.02).all() and abs(rows.loc["none", "answer_shift"]) < 0.06
    assert context.run_context("historical_figure", str(folder), **request) == out  # reused
