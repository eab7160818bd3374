"""Steering: a planted linear readout whose answer follows the steering shift with slope 1, and where the hook adds
its vector (prompt positions only, never twice, KV cache on and off, generated tokens only when asked)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from worldprobe.extract.models import LoadedModel
from worldprobe.interventions.generate import Edit, generate
from worldprobe.interventions.options import Asking, Steering
from worldprobe.interventions.questions import encode_prompts

D, C = 16, 1000.0
N_ENTITIES = 240
YEAR_TOKENS = list(range(-5, 15))  # token "1750" .. "1940": the answer 1800 + 10 j
WORDS = ["Q:", "A:", "In", "what", "year", "did", "die?"]


def _tokenizer(entities: int) -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for word in [*WORDS, *[str(1800 + 10 * j) for j in YEAR_TOKENS], *[f"w{i}" for i in range(entities)]]:
        vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")  # fmt: skip


def planted_llama(prompt_length: int, seed: int = 0, *, blocks: int = 2, nuisance: float = 0.0
                  ) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, np.ndarray]:  # fmt: skip
    """A Llama (``blocks`` of them) whose first answer token is ``1800 + 10 * round(x0)``, x0 the entity's coordinate 0
    at layer 1.

    With ``nuisance`` > 0 each entity also carries a shared noise n (sd ``nuisance``) on coordinates 0 and 3:
    x0 = t + n, x3 = n. The answer reads x0, so the ridge probe of t (weights ∝ e0 - e3, cancelling n) is not the
    direction that moves the answer (e0, which the difference of means and the encoding pattern find). With 3 blocks,
    block 2 writes nothing: an edit at layer 2 comes after the copy and moves nothing.

    Token ``w<i>`` embeds as [t_i, C, small noise] (t_i in [0, 9], C large so RMS norms are constant to 1e-4), every
    other token as [0, C, noise]. Block 0 writes nothing (layer 1 = the embedding). Block 1's attention has q = 0,
    i.e. uniform over the ``prompt_length`` positions, and copies coordinate 0 into coordinate 0 of every position
    with gain ``prompt_length``, so the last prompt position holds the entity's x0 (plus any edit made at layer 1).
    The head reads year token j with logit ∝ 2 j x0 - j² + 100: the nearest j to x0 wins.
    """
    tokenizer = _tokenizer(N_ENTITIES)
    rng = np.random.default_rng(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=D, intermediate_size=32, num_hidden_layers=blocks, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=2,
        tie_word_embeddings=False, rms_norm_eps=1e-6,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    t = np.linspace(0.0, 9.0, N_ENTITIES) + rng.uniform(-0.2, 0.2, N_ENTITIES)
    t = np.clip(np.round(t) + np.clip(t - np.round(t), -0.2, 0.2), 0, 9)
    emb = np.zeros((len(tokenizer), D))
    emb[:, 1] = C
    emb[:, 2:] = rng.normal(0, 0.3, (len(tokenizer), D - 2))
    first = tokenizer.convert_tokens_to_ids("w0")
    noise = rng.normal(0, nuisance, N_ENTITIES) if nuisance else np.zeros(N_ENTITIES)
    emb[first : first + N_ENTITIES, 0] = t + noise
    if nuisance:
        emb[:, 3] = 0.0
        emb[first : first + N_ENTITIES, 3] = noise
    rms = C / np.sqrt(D)
    head_dim = D // 2
    with torch.no_grad():
        model.model.embed_tokens.weight[:] = torch.as_tensor(emb, dtype=torch.float32)
        for block in model.model.layers:
            block.mlp.down_proj.weight.zero_()
            block.self_attn.o_proj.weight.zero_()
        attn = model.model.layers[1].self_attn
        attn.q_proj.weight.zero_()
        attn.v_proj.weight.zero_()
        attn.v_proj.weight[0, 0] = 1.0  # head 0, dim 0 reads the normalised coordinate 0
        attn.o_proj.weight[0, 0] = rms * prompt_length  # ... written back, undoing the norm and the 1/N average
        assert head_dim > 0
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        for j in YEAR_TOKENS:
            row = tokenizer.convert_tokens_to_ids(str(1800 + 10 * j))
            model.lm_head.weight[row, 0] = 2.0 * j * C
            model.lm_head.weight[row, 1] = 100.0 - j * j
    return model, tokenizer, t


def _question(tokenizer, names: list[str]):
    texts = [f"Q: In what year did {n} die?\nA:" for n in names]
    spans = [(len("Q: In what year did "), len("Q: In what year did ") + len(n)) for n in names]
    return encode_prompts(tokenizer, texts, spans)


def _loaded(model, tokenizer) -> LoadedModel:
    return LoadedModel(model, tokenizer, "planted", {}, n_layers=2, d_model=D, decoder_layers=list(model.model.layers))


@pytest.fixture(scope="module")
def planted(one_torch_thread):
    prompt_length = len(_question(_tokenizer(N_ENTITIES), ["w0"])[0])
    return planted_llama(prompt_length)


def test_planted_readout_answers_the_nearest_year_and_follows_a_shift_along_its_coordinate(planted):
    model, tokenizer, t = planted
    loaded = _loaded(model, tokenizer)
    names = [f"w{i}" for i in range(0, N_ENTITIES, 12)]
    encoded = _question(tokenizer, names)
    plain = generate(loaded, encoded, max_new_tokens=1, batch_size=7, progress=False)
    expected = [str(1800 + 10 * int(np.round(t[int(n[1:])]))) for n in names]
    assert [a.text for a in plain] == expected
    for shift in (-2, -1, 1, 3):
        vectors = np.zeros((len(names), D), dtype=np.float32)
        vectors[:, 0] = shift
        steered = generate(loaded, encoded, max_new_tokens=1, batch_size=5, progress=False, edit=Edit({1: vectors}))
        assert [int(a.text) - int(e) for a, e in zip(steered, expected, strict=True)] == [10 * shift] * len(names)


def _capture_block_input(model, block: int, sink: list):
    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        sink.append(hidden.detach().clone())

    return model.model.layers[block].register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("on_generated", [False, True])
def test_the_vector_is_added_once_at_the_entity_of_the_prompt_pass_and_at_generated_tokens_only_if_asked(
    tiny_random_llama, use_cache, on_generated
):
    """Record the input of block index 1 (= the steered output of block index 0, cache layer 1) during a steered
    generation and
    compare it, position by position, with an unsteered pass over the same final token sequence: the difference
    must be exactly the vector at the entity's last token of every pass that computes the prompt (once), at
    generated positions only with ``generated=True``, and zero elsewhere."""
    model, tokenizer = tiny_random_llama
    loaded = LoadedModel(model, tokenizer, "tiny", {}, n_layers=3, d_model=32, decoder_layers=list(model.model.layers))
    names = ["w5 w6", "w7", "w8 w9 w10"]
    texts = [f"w1 w2 {n} w3" for n in names]
    encoded = encode_prompts(tokenizer, texts, [(6, 6 + len(n)) for n in names])
    vectors = np.random.default_rng(1).normal(0, 3, (3, 32)).astype(np.float32)
    steps = 4
    for row, item in enumerate(encoded):
        sink: list[torch.Tensor] = []
        handle = _capture_block_input(model, 1, sink)
        try:
            (answer,) = generate(loaded, [item], max_new_tokens=steps, batch_size=1, use_cache=use_cache,
                                 stop_at_newline=False, progress=False,
                                 edit=Edit({1: vectors[row : row + 1]}, generated=on_generated))  # fmt: skip
        finally:
            handle.remove()
        assert answer.stop == "budget" and len(answer.token_ids) == steps
        full = torch.tensor([list(item.input_ids) + answer.token_ids[:-1]])
        with torch.inference_mode():
            plain: list[torch.Tensor] = []
            handle = _capture_block_input(model, 1, plain)
            model(input_ids=full, use_cache=False)
            handle.remove()
        reference = plain[0][0]
        n_prompt = len(item)
        expected = torch.zeros_like(reference)
        expected[item.last] = torch.as_tensor(vectors[row])
        if on_generated:
            expected[n_prompt:] = torch.as_tensor(vectors[row])
        assert len(sink) == steps  # one forward pass per generated token (the last token is not fed back)
        if use_cache:
            seen = torch.cat([s[0] for s in sink], dim=0)  # the prompt pass, then one new position per step
            torch.testing.assert_close(seen - reference, expected, atol=2e-4, rtol=0)
        else:
            for step, s in enumerate(sink):  # every pass recomputes the prompt: steered once per pass, not twice
                width = n_prompt + step
                torch.testing.assert_close(s[0] - reference[:width], expected[:width], atol=2e-4, rtol=0)
        assert torch.linalg.norm(sink[0][0][item.last] - reference[item.last]) > 1.0  # the first token is steered


def test_every_entity_token_is_steered_with_positions_entity(tiny_random_llama):
    model, tokenizer = tiny_random_llama
    loaded = LoadedModel(model, tokenizer, "tiny", {}, n_layers=3, d_model=32, decoder_layers=list(model.model.layers))
    (item,) = encode_prompts(tokenizer, ["w1 w5 w6 w7 w3"], [(3, 11)])
    assert item.entity_positions == (2, 3, 4)
    vector = np.full((1, 32), 2.0, dtype=np.float32)
    sink: list[torch.Tensor] = []
    handle = _capture_block_input(model, 1, sink)
    try:
        generate(loaded, [item], max_new_tokens=1, edit=Edit({1: vector}, positions="entity"), progress=False)
        generate(loaded, [item], max_new_tokens=1, progress=False)
    finally:
        handle.remove()
    diff = (sink[0] - sink[1])[0]
    assert torch.allclose(diff[[2, 3, 4]], torch.full((3, 32), 2.0), atol=1e-5)
    assert torch.count_nonzero(diff[[0, 1, 5]]) == 0


def test_layer_zero_steers_the_embedding_output(tiny_random_llama):
    model, tokenizer = tiny_random_llama
    loaded = LoadedModel(model, tokenizer, "tiny", {}, n_layers=3, d_model=32, decoder_layers=list(model.model.layers))
    (item,) = encode_prompts(tokenizer, ["w1 w5 w3"], [(3, 5)])
    sink: list[torch.Tensor] = []
    def after_pre_hooks(module, args, kwargs, output):  # a forward hook sees the input as the pre-hooks left it
        sink.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    handle = model.model.layers[0].register_forward_hook(after_pre_hooks, with_kwargs=True)
    try:
        generate(loaded, [item], max_new_tokens=1, edit=Edit({0: np.ones((1, 32), dtype=np.float32)}), progress=False)
    finally:
        handle.remove()
    plain = model.model.embed_tokens(torch.tensor([item.input_ids]))
    diff = (sink[0] - plain)[0]
    assert torch.allclose(diff[item.last], torch.ones(32)) and torch.count_nonzero(diff[: item.last]) == 0


def test_answers_do_not_depend_on_batch_size_padding_or_the_kv_cache(tiny_random_llama):
    model, tokenizer = tiny_random_llama
    loaded = LoadedModel(model, tokenizer, "tiny", {}, n_layers=3, d_model=32, decoder_layers=list(model.model.layers))
    texts = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10 w11", "w12 w13", "w14 w15 w16 w17"]
    encoded = encode_prompts(tokenizer, texts, [(0, 2)] * len(texts))
    vectors = np.random.default_rng(0).normal(0, 2, (len(texts), 32)).astype(np.float32)
    for edit in (None, Edit({2: vectors})):
        runs = [generate(loaded, encoded, max_new_tokens=6, batch_size=b, use_cache=c, edit=edit, progress=False,
                         stop_at_newline=False)  # fmt: skip
                for b, c in ((1, True), (5, True), (2, True), (5, False))]
        tokens = [[a.token_ids for a in run] for run in runs]
        assert all(t == tokens[0] for t in tokens[1:])
        assert len({tuple(t) for t in tokens[0]}) > 1  # the prompts get different answers


@pytest.fixture(scope="module")
def tiny_random_llama(one_torch_thread):
    """A random 3-block Llama over a word vocabulary whose greedy answers are not degenerate."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(40)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="</s>")  # fmt: skip
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1,
                         eos_token_id=2, pad_token_id=2)  # fmt: skip
    torch.manual_seed(3)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)  # sharp logits: greedy choices are far from ties
        model.lm_head.weight[:3] = 0.0  # special tokens score 0, far below the best word: answers never end early
    return model, tokenizer


def _planted_workspace(planted, workspace, tmp_path):
    """The planted model saved as a folder, a historical_figure table of its entities, and its activation cache."""
    from worldprobe.datasets.table import BuildReport, write_table
    from worldprobe.extract.runner import run_extraction

    model, tokenizer, t = planted
    folder = tmp_path / "planted"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    rng = np.random.default_rng(0)
    year = 1800.0 + 10.0 * t
    table = pd.DataFrame({
        "entity_id": [f"p{i}" for i in range(N_ENTITIES)], "name": [f"w{i}" for i in range(N_ENTITIES)],
        "text": [f"w{i}" for i in range(N_ENTITIES)], "year": year, "entity_type": "person",
        "is_test": rng.random(N_ENTITIES) < 0.25, "source": "test", "occupation": "poet",
        "century": (year // 100 * 100).astype(int),
    })  # fmt: skip
    write_table(table, BuildReport("historical_figure", "test", [], N_ENTITIES, 0, {}, "random", 0), workspace)
    run_extraction("historical_figure", str(folder), workspace=workspace, progress=False)
    return folder, table


def test_ask_command_compares_answers_with_the_probe_entity_by_entity(planted, workspace, tmp_path):
    import json

    from typer.testing import CliRunner

    from worldprobe.cli import app

    folder, table = _planted_workspace(planted, workspace, tmp_path)
    args = ["ask", "-d", "historical_figure", "-m", str(folder), "--format", "fewshot", "--shots", "0",
            "--max-new-tokens", "1", "--tolerance", "5"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "death_year (fewshot), probe layer" in result.output and "parse rate 1.00 [1.00, 1.00]" in result.output
    out = next(workspace.results.glob("historical_figure__*__ask-death_year__*"))
    answers = pd.read_parquet(out / "answers.parquet")
    test = table[table["is_test"]]
    assert len(answers) == len(test) and set(answers["entity_id"]) == set(test["entity_id"])
    expected = 1800 + 10 * np.round((answers["true_year"] - 1800) / 10)  # the planted readout
    np.testing.assert_array_equal(answers["answer_year"], expected)
    assert (answers["answer_text"] == expected.astype(int).astype(str)).all()
    assert answers["answer_correct"].all()  # within 5 years of the truth (jitter <= 2 years)
    np.testing.assert_allclose(answers["answer_error"], answers["answer_year"] - answers["true_year"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["answer_accuracy"]["value"] == 1.0 and summary["answer_accuracy"]["n"] == len(test)
    assert summary["probe"]["selection_criterion"].startswith("highest leave-one-out R² on train rows")
    assert summary["probe"]["selected_layer"] in (0, 1, 2)
    assert sum(summary["two_by_two"].values()) == len(test)
    assert summary["answer_vs_truth"]["pearson"]["value"] > 0.99
    stamp = (out / "answers.parquet").stat().st_mtime_ns
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (out / "answers.parquet").stat().st_mtime_ns == stamp  # a finished run is reused


@pytest.mark.parametrize("command", ["ask", "steer"])
def test_ask_and_steer_without_a_cache_name_the_extract_command(workspace, command):
    from worldprobe.errors import WorldprobeError
    from worldprobe.interventions import run_ask, run_steer

    run = run_ask if command == "ask" else run_steer
    with pytest.raises(WorldprobeError, match="run `worldprobe extract --dataset historical_figure --model tiny-x"):
        run("historical_figure", "tiny-x", workspace=workspace)


def test_steering_after_the_last_block_is_refused_and_the_default_layer_can_reach_the_answer(
    planted, workspace, tmp_path
):
    from worldprobe.errors import WorldprobeError
    from worldprobe.interventions.setup import prepare
    from worldprobe.interventions.steer import run_steer

    folder, _ = _planted_workspace(planted, workspace, tmp_path)
    with pytest.raises(WorldprobeError, match="cannot reach the answer"):
        run_steer("historical_figure", str(folder), workspace=workspace, progress=False, steering=Steering(layers=[2]))
    chosen = prepare(workspace, "historical_figure", str(folder), "empty", None, steerable=True, progress=False)
    assert chosen.layer < 2 and chosen.choice.criterion.endswith("among layers before the last block")
    assert set(chosen.choice.scores) == {0, 1}


def test_the_report_draws_ask_and_steer_runs_beside_the_probe_results(planted, workspace, tmp_path):
    from worldprobe.interventions import run_ask, run_steer
    from worldprobe.probes import run_probe
    from worldprobe.reports import build_report

    folder, _ = _planted_workspace(planted, workspace, tmp_path)
    run_probe("historical_figure", str(folder), workspace=workspace, progress=False)
    common = dict(workspace=workspace, asking=Asking(format="fewshot", shots=0, max_new_tokens=1), resamples=100,
                  progress=False)  # fmt: skip
    run_ask("historical_figure", str(folder), **common)
    run_steer(
        "historical_figure",
        str(folder),
        limit=6,
        steering=Steering(
            layers=[1], doses=[-0.5, 0.5], select_limit=6, map_random=1, random_directions=1, random_init=False
        ),
        **common,
    )
    report = build_report(workspace)
    (section,) = report.sections
    block = next(b for b in section.blocks if b.heading == "Asking and steering the models")
    assert [f.key.split("__")[2] for f in block.figures] == ["ask", "steer-map", "steer"]
    assert block.text[0].startswith(f"{folder}: Chosen on train entities:")
    assert not report.stale and all((workspace.reports / f.png).exists() for f in block.figures)
    assert "Asking and steering the models" in report.index.read_text()


@pytest.mark.parametrize(("options", "atol"), [({"dtype": "bfloat16"}, 0.1), ({"quantization": "8bit"}, 1e-3),
                                                ({"quantization": "4bit"}, 1e-3)])  # fmt: skip
def test_generation_and_steering_work_on_bfloat16_and_bitsandbytes_models(tiny_llama_dir, options, atol):
    """Models loaded as extraction loads them (here bfloat16, 8-bit and 4-bit weights): answers come out and the
    vector lands at the entity's last token in the hidden states' own dtype."""
    if "quantization" in options:
        pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'worldprobe[quant]')")
    from worldprobe.extract.models import load_model

    loaded = load_model(str(tiny_llama_dir), **options)
    encoded = encode_prompts(loaded.tokenizer, ["Where is Paris?", "Where is New York City?"], [(9, 14), (9, 22)])
    vectors = np.full((2, 64), 4.0, dtype=np.float32)
    passes: dict[str, list[torch.Tensor]] = {"steered": [], "plain": []}
    answers = {}
    for name, edit in (("steered", Edit({2: vectors})), ("plain", None)):
        handle = _capture_block_input(loaded.model, 2, passes[name])
        try:
            answers[name] = generate(loaded, encoded, max_new_tokens=3, batch_size=2, edit=edit, progress=False)
        finally:
            handle.remove()
    assert all(a.token_ids for a in answers["steered"] + answers["plain"])
    diff = (passes["steered"][0] - passes["plain"][0]).float()  # the prompt passes, rows left-padded
    width = diff.shape[1]
    for row, item in enumerate(sorted(encoded, key=len, reverse=True)):
        at = width - len(item) + item.last
        torch.testing.assert_close(diff[row, at], torch.full((64,), 4.0), atol=atol, rtol=0)
        assert float(diff[row, :at].abs().max()) == 0.0


def test_a_damaged_or_unfinished_ask_run_is_redone(planted, workspace, tmp_path):
    from worldprobe.interventions import run_ask

    folder, _ = _planted_workspace(planted, workspace, tmp_path)
    options = dict(workspace=workspace, asking=Asking(format="fewshot", shots=0, max_new_tokens=1), limit=5,
                   resamples=50, progress=False)  # fmt: skip
    out = run_ask("historical_figure", str(folder), **options)
    stamp = (out / "summary.json").stat().st_mtime_ns
    assert run_ask("historical_figure", str(folder), **options) == out
    assert (out / "summary.json").stat().st_mtime_ns == stamp  # finished: reused
    (out / "answers.parquet").write_text("not parquet")
    assert run_ask("historical_figure", str(folder), **options) == out
    assert len(pd.read_parquet(out / "answers.parquet")) == 5  # damaged: redone


def test_ask_reuses_the_layer_a_finished_probe_run_chose(planted, workspace, tmp_path, monkeypatch):
    """With a ridge probe run of the same cache on disk, the layer is read from its train-only scores (no refit of
    every layer), and it is the layer the run chose."""
    from worldprobe.interventions import direction
    from worldprobe.interventions.setup import prepare
    from worldprobe.probes import run_probe

    folder, _ = _planted_workspace(planted, workspace, tmp_path)
    fresh = prepare(workspace, "historical_figure", str(folder), "empty", None, progress=False)
    run = run_probe("historical_figure", str(folder), workspace=workspace, progress=False)
    monkeypatch.setattr(direction, "select_layer", lambda *a, **k: pytest.fail("refitted every layer"))
    reused = prepare(workspace, "historical_figure", str(folder), "empty", None, progress=False)
    assert reused.layer == fresh.layer == run.summary["selected_layer"]
    assert f"scores of the probe run {run.name}" in reused.choice.criterion
    assert reused.choice.scores == pytest.approx(fresh.choice.scores, rel=1e-9)
