"""`ask` and `steer` on the real SmolLM2-135M-Instruct (offline preset from PyPI), packaged historical figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from worldprobe.interventions.options import Steering


@pytest.mark.slow
def test_ask_and_steer_smollm2_on_historical_figures(workspace, one_torch_thread):
    from worldprobe.datasets.builder import BuildOptions, build
    from worldprobe.extract.models import load_model_kept
    from worldprobe.extract.runner import run_extraction
    from worldprobe.interventions import run_ask, run_steer
    from worldprobe.interventions.generate import generate
    from worldprobe.interventions.setup import nested_sample, prepare, prompts_for

    build("historical_figure", "packaged", BuildOptions(limit=300, seed=0), workspace)
    run_extraction("historical_figure", "smollm2-135m", workspace=workspace, layers=[12, 16], progress=False)

    asked = run_ask("historical_figure", "smollm2-135m", workspace=workspace, limit=16, resamples=200, progress=False)
    summary = json.loads((asked / "summary.json").read_text())
    answers = pd.read_parquet(asked / "answers.parquet")
    assert summary["format"] == "chat" and summary["probe"]["selected_layer"] in (12, 16)
    assert len(answers) == 16 and summary["parse_rate"]["n"] == 16
    assert summary["parse_rate"]["value"] >= 0.75  # measured .94 on 393 test entities
    assert answers.loc[answers["answer_status"] != "unparsed", "answer_year"].between(-1000, 2100).all()
    assert summary["answer_accuracy"]["value"] > 0  # it knows some death years within 50 years
    assert answers["prompt_text"].str.contains("<|im_start|>assistant", regex=False).all()

    steered = run_steer(
        "historical_figure",
        "smollm2-135m",
        workspace=workspace,
        limit=4,
        resamples=200,
        progress=False,
        steering=Steering(
            directions=["mean_diff", "ridge"],
            layers=[12],
            doses=[-1, 1],
            select_limit=4,
            map_random=1,
            random_directions=1,
        ),
    )
    table = pd.read_parquet(steered / "steering.parquet")
    steer_summary = json.loads((steered / "summary.json").read_text())
    assert steer_summary["chosen"]["layer"] == 12 and steer_summary["chosen"]["direction"] in ("mean_diff", "ridge")
    test = table[table["split"] == "test"]
    assert set(test["kind"]) >= {"none", "method", "random", "random_init", "neutral"}
    assert "Chosen on train entities:" in steer_summary["verdict"]
    assert 0 < steer_summary["layer_stats"]["12"]["dmu_relative_norm"] < 1
    # the unsteered test answers of steer are the answers of ask (same prompts, other batches)
    baseline = test[test["kind"] == "none"].set_index("entity_id")["answer_text"]
    asked_text = answers.set_index("entity_id").loc[baseline.index, "answer_text"]
    np.testing.assert_array_equal(baseline.to_numpy(), asked_text.to_numpy())

    # batch of 1 == batch of 8 on the real model, with left padding
    setup = prepare(workspace, "historical_figure", "smollm2-135m", "empty", None, progress=False)
    loaded = load_model_kept("smollm2-135m", dtype="auto", device="auto", quantization=None, gguf_file=None, seed=0)
    rows = nested_sample(setup.entities["is_test"].to_numpy(dtype=bool), 8, seed=3)
    _, encoded, _ = prompts_for(setup, loaded.tokenizer, rows, "auto", 3, 0)
    assert len({len(e) for e in encoded}) > 1  # prompts of several lengths: padding is exercised
    one = generate(loaded, encoded, max_new_tokens=12, batch_size=1, progress=False)
    eight = generate(loaded, encoded, max_new_tokens=12, batch_size=8, progress=False)
    assert [a.token_ids for a in one] == [a.token_ids for a in eight]
