"""The learned (das) direction: on a planted Llama whose answer reads coordinate 0 of the entity's state, training
by interchange finds coordinate 0 at the layers before the read (not the ridge's tilted decoder) and learns nothing
after it; the interchange, the prefix cache and the answer-vocabulary head compute what a plain forward pass does."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_interventions_steering import N_ENTITIES, D, _loaded, _planted_workspace, _question, _tokenizer, planted_llama
from test_steering_map import NUISANCE, PLAN, RUN

from worldprobe.errors import WorldprobeError
from worldprobe.interventions import das
from worldprobe.interventions.generate import generate, rewriting
from worldprobe.interventions.options import DasSettings, Steering


@pytest.fixture(scope="module")
def planted(one_torch_thread):
    prompt_length = len(_question(_tokenizer(N_ENTITIES), ["w0"])[0])
    model, tokenizer, t = planted_llama(prompt_length, blocks=3, nuisance=NUISANCE)
    loaded = _loaded(model, tokenizer)
    names = [f"w{i}" for i in range(0, N_ENTITIES, 3)]
    prompts = _question(tokenizer, names)
    answers = generate(loaded, prompts, max_new_tokens=1, batch_size=16, progress=False)
    return loaded, prompts, [a.token_ids for a in answers], [float(a.text) for a in answers], t


def test_the_interchange_sets_the_state_along_the_direction_to_the_sources_and_nothing_else():
    hidden = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    vector = torch.nn.Parameter(torch.tensor([2.0, 0.0, 0.0, 0.0]))  # not unit: the rewrite normalises it
    sources = torch.tensor([[100.0, -1.0, -1.0, -1.0], [200.0, -1.0, -1.0, -1.0]])
    out = das.interchange(vector, torch.tensor([2, 0]), sources)(hidden)
    expected = hidden.clone()
    expected[0, 2, 0], expected[1, 0, 0] = 100.0, 200.0
    torch.testing.assert_close(out, expected)
    tilted = torch.nn.Parameter(torch.tensor([1.0, 1.0, 0.0, 0.0]))
    das.interchange(tilted, torch.tensor([2, 0]), sources)(hidden).sum().backward()
    assert tilted.grad is not None and torch.isfinite(tilted.grad).all() and tilted.grad.abs().sum() > 0


def test_prefix_cache_and_answer_head_give_the_plain_forward_passes_log_probabilities(planted):
    loaded, prompts, answers, readings, _ = planted
    group = das.base_groups(loaded, prompts[:5], 5, np.random.default_rng(0))[0]
    order = group.entities
    vocabulary = sorted({t for a in answers for t in a})
    tail = torch.tensor([[vocabulary.index(answers[int(e)][0])] for e in order])
    states = torch.randn(len(order), D) * 3
    vector = torch.tensor([1.0, 0.0, 0.5] + [0.0] * (D - 3))
    with torch.no_grad(), das._answer_head(loaded.model, vocabulary), \
            rewriting(loaded.model, 1, das.interchange(vector, group.batch.last - group.split, states)):  # fmt: skip
        cached = das.answer_logprobs(loaded, group, tail, torch.ones_like(tail))
    # the same log-probabilities from one forward pass over prompt + answer, full vocabulary, restricted afterwards
    ids = torch.cat([group.batch.input_ids, torch.tensor([[answers[int(e)][0]] for e in order])], dim=1)
    mask = torch.ones_like(ids) * torch.cat([group.batch.attention_mask, torch.ones(len(order), 1, dtype=torch.long)],
                                            dim=1)  # fmt: skip
    with torch.no_grad(), rewriting(loaded.model, 1, das.interchange(vector, group.batch.last, states)):
        logits = loaded.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    plain = torch.log_softmax(logits[:, -2, vocabulary].float(), dim=-1).gather(-1, tail)
    torch.testing.assert_close(cached, plain, atol=1e-4, rtol=1e-4)
    assert loaded.model.get_output_embeddings().weight.shape[0] == len(loaded.tokenizer)  # the head is put back


def test_das_finds_the_coordinate_the_answer_reads_before_the_read_and_nothing_after(planted):
    loaded, prompts, answers, readings, _ = planted
    fits = das.train_das(loaded, prompts, answers, readings, [1, 2], settings=DasSettings(steps=60), seed=0,
                         progress=False)  # fmt: skip
    e0 = np.eye(D)[0]
    # layer 1 holds the entity before block 1 copies coordinate 0 to the answer; the nuisance tilts the ridge's
    # decoder (test_steering_map), not the coordinate the answer reads
    assert fits[1].vector @ e0 > 0.95 and fits[1].answer_correlation > 0.9  # oriented: the answers rise along it
    assert fits[1].loss_last < fits[1].loss_first / 20
    # after block 2 (which writes nothing) the entity's state is read by no later position: nothing to learn
    assert fits[2].loss_last > fits[2].loss_first / 3
    assert all(p.requires_grad for p in loaded.model.parameters())  # frozen only while training
    unparsed = [np.nan if i % 2 else r for i, r in enumerate(readings)]  # entities whose answer did not parse sit out
    half = das.train_das(loaded, prompts, answers, unparsed, [1], settings=DasSettings(steps=5), progress=False)
    assert half[1].vector.shape == (D,)
    with pytest.raises(WorldprobeError, match="at least 2 train entities"):
        das.train_das(loaded, prompts[:3], answers[:3], [1.0, np.nan, np.nan], [1], progress=False)


def test_a_steering_run_with_das_learns_on_train_entities_outside_the_map_and_records_how(planted, tmp_path_factory):
    from worldprobe.interventions.steer import run_steer
    from worldprobe.workspace import Workspace

    loaded, _, _, _, t = planted
    root = tmp_path_factory.mktemp("das")
    workspace = Workspace(root / "ws")
    folder, table = _planted_workspace((loaded.model, loaded.tokenizer, t), workspace, root)
    out = run_steer(
        "historical_figure",
        str(folder),
        workspace=workspace,
        steering=Steering(directions=["ridge", "das"], das=DasSettings(entities=40, steps=40), layers=[1, 2], **PLAN),
        **RUN,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["das"]["n_entities"] == 40 and summary["das"]["settings"]["steps"] == 40
    assert summary["settings"]["das"]["entities"] == 40  # part of the run key
    steering = pd.read_parquet(out / "steering.parquet")
    learned = set(steering.loc[steering["split"] == "das", "entity_id"])
    select = set(steering.loc[steering["split"] == "select", "entity_id"])
    test = set(steering.loc[steering["split"] == "test", "entity_id"])
    assert len(learned) == 40 and not learned & select and not learned & test
    assert not learned & set(table.loc[table["is_test"], "entity_id"])
    shift = pd.read_parquet(out / "steering_map.parquet").query("split == 'select' and dose == 0.5").set_index(
        ["direction", "layer"])["antisymmetric_shift"]  # fmt: skip
    assert shift[("das", 1)] > 10 and abs(shift[("das", 2)]) < 1
    assert summary["random_init_control"] == "not asked (random_init=False)"
    assert summary["das"]["layers"]["1"]["cached_activations_agree"] is True
    assert summary["calibration"]["das@1"]["cos_mean_diff"] > 0.9


def test_the_twin_control_says_why_a_learned_direction_has_none():
    from worldprobe.interventions import directions as dirs
    from worldprobe.interventions.steer import _twin_note

    learned = dirs.SteeringDirection("das", "das", 4, np.ones(2) / np.sqrt(2), 1.0)
    assert _twin_note(learned, False, True).startswith("not run: a learned direction needs the model's own answers")


@pytest.mark.parametrize(("bad", "field"), [({"steps": 0}, "das_steps"), ({"entities": 1}, "das_entities"),
                                            ({"learning_rate": float("nan")}, "das_learning_rate")])  # fmt: skip
def test_bad_das_settings_are_refused_naming_the_setting(bad, field):
    with pytest.raises(WorldprobeError) as info:
        DasSettings(**bad)
    assert info.value.field == field
