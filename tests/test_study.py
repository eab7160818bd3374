"""Study files: parsing, checks before any work starts, planning and the disk estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from worldprobe.errors import WorldprobeError
from worldprobe.study import check_disk, estimate_disk, load_study, plan

GOOD = """
[study]
name = "tiny"
seed = 3

[[datasets]]
name = "world_place"
limit = 50
prompts = ["empty", "coords"]

[extract]
models = ["smollm2-135m"]
random_init = ["smollm2-135m"]

[probes]
controls = ["shuffled"]

[neurons]
datasets = ["world_place"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_shipped_studies_parse():
    quick = load_study()
    assert quick.name == "quick"
    assert {e.name for e in quick.datasets} == {
        "world_place", "us_place", "nyc_place", "historical_figure", "art", "headline",
    }  # fmt: skip
    assert "random:smollm2-135m" in quick.all_models
    paper = load_study("paper")
    assert paper.extract.models == ("llama-2-7b", "llama-2-13b", "llama-2-70b")
    assert (
        paper.extract.quantization_of("llama-2-70b") == "8bit" and paper.extract.quantization_of("llama-2-7b") is None
    )


def test_random_init_control_runs_only_for_models_with_a_twin(tmp_path):
    text = GOOD.replace('models = ["smollm2-135m"]', 'models = ["smollm2-135m", "gemma3-270m"]')
    text = text.replace('controls = ["shuffled"]', 'controls = ["random_init", "shuffled"]')
    study = load_study(write(tmp_path, text))
    assert study.controls_for("smollm2-135m") == ("random_init", "shuffled")
    assert study.controls_for("gemma3-270m") == ("shuffled",)


def test_plan_lists_every_unit(tmp_path):
    study = load_study(write(tmp_path, GOOD))
    work = plan(study)
    assert [u.label for u in work["extract"]] == [
        "world_place x smollm2-135m x empty", "world_place x smollm2-135m x coords",
        *[f"world_place x random:smollm2-135m x {prompt} seed {seed}" for seed in (3, 4, 5)
          for prompt in ("empty", "coords")],
    ]  # fmt: skip
    assert [u.params["seed"] for u in work["extract"]] == [3, 3, 3, 3, 4, 4, 5, 5]
    assert len(work["probes"]) == 2 and len(work["neurons"]) == 1 and len(work["report"]) == 1


def test_shards_split_each_extract_unit_but_not_the_disk_estimate(tmp_path, workspace):
    study = load_study(write(tmp_path, GOOD.replace("[probes]", "shards = 2\n[probes]")))
    extract = plan(study)["extract"]
    assert [u.label for u in extract[:2]] == [
        "world_place x smollm2-135m x empty [shard 1/2]", "world_place x smollm2-135m x empty [shard 2/2]",
    ]  # fmt: skip
    assert len(extract) == 16 and [u.params["shard"] for u in extract[:2]] == [(0, 2), (1, 2)]
    labels = [e.label for e in estimate_disk(study, workspace)]
    assert len(labels) == 8 and labels[0] == "world_place x smollm2-135m x empty"  # one estimate per cache


@pytest.mark.parametrize(
    "old,new,key,message",
    [
        ('name = "world_place"', 'name = "moon_place"', "datasets[0].name", "unknown dataset 'moon_place'"),
        ("limit = 50", 'limit = "ten"', "datasets[0].limit", "must be a whole number, not text 'ten'"),
        ("limit = 50", "limit = true", "datasets[0].limit", "must be a whole number, not true"),
        ("limit = 50", "limit = 0", "datasets[0].limit", "must be at least 1, not 0"),
        ("limit = 50", "limit = 2.5", "datasets[0].limit", "must be a whole number, not a number 2.5"),
        ("limit = 50", 'limit = 50\nsorce = "paper"', "datasets[0].sorce", "did you mean 'source'"),
        ("limit = 50", 'limit = 50\nsource = "pape"', "datasets[0].source", "did you mean 'paper'"),
        ("limit = 50", 'limit = 50\nfrom_path = "no/such.csv"', "datasets[0].from_path", "file not found"),
        ("limit = 50", 'limit = 50\nfrom_path = "{here}"', "datasets[0].from_path", "--from would be ignored"),
        ('"empty", "coords"', '"empty", "where_nyc"', "datasets[0].prompts", "has no prompt 'where_nyc'"),
        ('prompts = ["empty", "coords"]', "prompts = []", "datasets[0].prompts", "must not be empty"),
        ('prompts = ["empty", "coords"]', 'prompts = "empty"', "datasets[0].prompts", "must be a list"),
        ("seed = 3", 'seed = "abc"', "study.seed", "must be a whole number, not text 'abc'"),
        ("seed = 3", "seed = -1", "study.seed", "must be at least 0"),
        ("random_init =", "random_inti =", "extract.random_inti", "did you mean 'random_init'"),
        ('models = ["smollm2-135m"]', 'models = "smollm2-135m"', "extract.models", "must be a list, not text"),
        ('models = ["smollm2-135m"]', "models = []", "extract.models", "must not be empty"),
        ('models = ["smollm2-135m"]', 'models = ["smollm2-135m", "smollm2-135m"]', "extract.models", "more than once"),
        ('models = ["smollm2-135m"]', 'models = ["smollm2 135m"]', "extract.models", "did you mean 'smollm2-135m'"),
        ('models = ["smollm2-135m"]', 'models = ["./no/such/folder"]', "extract.models", "neither a preset"),
        ('random_init = ["smollm2-135m"]', 'random_init = ["gemma3-270m"]', "extract.random_init",
         "not in extract.models"),
        ("[probes]", 'layers = "40"\n[probes]', "extract.layers", "outside 0..30 for smollm2-135m"),
        ("[probes]", 'layers = "a:b"\n[probes]', "extract.layers", "cannot read layers 'a:b'"),
        ("[probes]", 'dtype = "fp32"\n[probes]', "extract.dtype", "unknown dtype 'fp32'"),
        ("[probes]", 'device = "gpu"\n[probes]', "extract.device", "unknown device 'gpu'"),
        ("[probes]", "batch_size = 0\n[probes]", "extract.batch_size", "must be at least 1, not 0"),
        ("[probes]", "flush_rows = -1\n[probes]", "extract.flush_rows", "must be at least 1, not -1"),
        ("[probes]", 'quantization = { "smollm2-135m" = "3bit" }\n[probes]', "extract.quantization",
         "unknown quantization '3bit'"),
        ("[probes]", 'quantization = { "llama-2-7b" = "8bit" }\n[probes]', "extract.quantization",
         "not in extract.models"),
        ("[probes]", "shards = 0\n[probes]", "extract.shards", "must be at least 1, not 0"),
        ("[probes]", 'shards = "2"\n[probes]', "extract.shards", "must be a whole number, not text '2'"),
        ("[probes]", "shard = 2\n[probes]", "extract.shard", "did you mean 'shards'"),
        ('controls = ["shuffled"]', 'controls = ["shuffle"]', "probes.controls", "did you mean 'shuffled'"),
        ('controls = ["shuffled"]', 'controls = ["shuffled"]\nprobes = ["lasso"]', "probes.probes",
         "unknown probe 'lasso'"),
        ('controls = ["shuffled"]', 'controls = ["shuffled"]\nholdouts = 1', "probes.holdouts",
         "must be true/false, not a whole number 1"),
        ('controls = ["shuffled"]', 'controls = ["shuffled"]\nmargin_r2 = 1.5', "probes.margin_r2",
         "must be at most 0.999"),
        ('controls = ["shuffled"]', 'controls = ["shuffled"]\nresplits = -1', "probes.resplits", "at least 0"),
        ('controls = ["shuffled"]', 'controls = ["shuffled"]\nmargin_r = 0.1\nresplits = 2', "probes.resplits",
         None),  # a valid study
        ('random_init = ["smollm2-135m"]', "random_init = []", "extract.models", None),  # a valid study
        ('datasets = ["world_place"]', 'datasets = ["art"]', "neurons.datasets", "which the study does not build"),
        ('datasets = ["world_place"]', 'datasets = ["world_place"]\ntop_k = 0', "neurons.top_k", "at least 1"),
        ("[study]", "seed = 2\n[study]", "seed", "put it under [study]"),
        ("[extract]", 'models = ["x"]\n[extract]', "datasets[0].models", "'models' belongs in [extract]"),
        ("[neurons]", "[neuron]", "neuron", "did you mean 'neurons'"),
    ],
)
def test_bad_study_files_fail_before_any_work(tmp_path, old, new, key, message):
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new.replace("{here}", __file__)))
    if message is None:
        load_study(path)
        return
    with pytest.raises(WorldprobeError) as info:
        load_study(path)
    assert info.value.file == path and info.value.field == key and message in str(info.value), str(info.value)


def test_the_random_init_control_needs_a_twin(tmp_path):
    text = GOOD.replace('random_init = ["smollm2-135m"]', "random_init = []")
    path = write(tmp_path, text.replace('controls = ["shuffled"]', 'controls = ["random_init"]'))
    with pytest.raises(WorldprobeError, match="needs a random-init twin") as info:
        load_study(path)
    assert info.value.field == "probes.controls"


def test_all_controls_are_listed_and_random_init_only_with_a_twin(tmp_path):
    from worldprobe.probes.controls import CONTROLS

    text = GOOD.replace('controls = ["shuffled"]', 'controls = ["all"]')
    assert load_study(write(tmp_path, text)).probes.controls == CONTROLS
    no_twin = load_study(write(tmp_path, text.replace('random_init = ["smollm2-135m"]', "random_init = []")))
    assert no_twin.probes.controls == tuple(c for c in CONTROLS if c != "random_init")


def test_every_key_of_every_section_has_a_rule():
    """A key the lead adds to a settings dataclass must come with its rule (and the other way round)."""
    from dataclasses import fields

    from worldprobe.study import DATASET_RULES, SECTIONS, DatasetEntry, Study

    assert set(DATASET_RULES) == {f.name for f in fields(DatasetEntry)}
    for name, (cls, rules) in SECTIONS.items():
        assert set(rules) == {f.name for f in fields(cls)}, name
        assert name in {f.name for f in fields(Study)}, name


def test_a_hub_id_is_accepted_and_checked_against_the_hub_before_any_work(tmp_path, workspace, hub_offline):
    """`gpt2` (no slash) is a hub id; offline, the hub cannot confirm it: the estimate (run before any work, also by
    --dry-run) names the study key."""
    text = GOOD.replace('models = ["smollm2-135m"]', 'models = ["smollm2-135m", "gpt2"]')
    study = load_study(write(tmp_path, text))
    assert study.extract.models == ("smollm2-135m", "gpt2")
    with pytest.raises(WorldprobeError, match="cannot load the config of model 'gpt2'") as info:
        estimate_disk(study, workspace)
    assert info.value.field == "extract.models" and info.value.file == study.path


def test_a_device_this_machine_lacks_is_refused_before_a_serial_run(tmp_path, monkeypatch):
    import torch

    from worldprobe.study import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    study = load_study(write(tmp_path, GOOD.replace("[probes]", 'device = "cuda"\n[probes]')))
    with pytest.raises(WorldprobeError, match="no CUDA device") as info:
        check_device(study)
    assert info.value.field == "extract.device"


def test_not_toml(tmp_path):
    with pytest.raises(WorldprobeError, match="not valid TOML"):
        load_study(write(tmp_path, "[study\nname="))


def test_disk_estimate_and_shortage(tmp_path, workspace):
    study = load_study(write(tmp_path, GOOD))
    estimates = estimate_disk(study, workspace)
    smol = estimates[0]
    assert (smol.n_layers, smol.d_model, smol.n_entities) == (30, 576, 50)
    assert smol.bytes == 50 * 31 * 576 * 2
    needed, free = check_disk(estimates, workspace)
    assert needed == 8 * smol.bytes and free > needed  # 2 prompts x (the model + 3 random-init twins)
    huge = load_study(write(tmp_path, GOOD.replace("limit = 50", "limit = 5_000_000_000")))
    with pytest.raises(WorldprobeError, match="GB are free"):
        check_disk(estimate_disk(huge, workspace), workspace)


def test_disk_estimate_counts_only_the_layers_extracted(tmp_path, workspace):
    """The estimate stored every layer whatever [extract] layers said."""
    assert "[extract]" in GOOD
    study = load_study(write(tmp_path, GOOD.replace("[extract]", '[extract]\nlayers = "0,10,20"')))
    assert study.extract.layers == "0,10,20"
    assert estimate_disk(study, workspace)[0].bytes == 50 * 3 * 576 * 2


def test_paper_study_estimate_uses_release_sizes(workspace):
    estimates = {e.label: e for e in estimate_disk(load_study("paper"), workspace)}
    seven_b = estimates["world_place x llama-2-7b x empty"]
    assert seven_b.bytes == 39_585 * 33 * 4096 * 2  # the paper study: about 10.7 GB
