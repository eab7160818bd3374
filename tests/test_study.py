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
    "old,new,message",
    [
        ('name = "world_place"', 'name = "moon_place"', "unknown dataset 'moon_place'"),
        ('"empty", "coords"', '"empty", "where_nyc"', "has no prompt 'where_nyc'"),
        ("random_init =", "random_inti =", "did you mean 'random_init'"),
        ('models = ["smollm2-135m"]', 'models = ["smollm9-1t"]', "smollm9-1t"),
        ("limit = 50", 'limit = 50\nsorce = "paper"', "did you mean 'source'"),
        ("[probes]", 'quantization = { "smollm2-135m" = "3bit" }\n[probes]', "unknown quantization '3bit'"),
        ("[probes]", "shards = 0\n[probes]", "extract.shards must be a positive whole number, not 0"),
        ("[probes]", 'shards = "2"\n[probes]', "extract.shards must be a positive whole number, not '2'"),
        ("[probes]", "shard = 2\n[probes]", "did you mean 'shards'"),
    ],
)
def test_bad_study_files_fail_before_any_work(tmp_path, old, new, message):
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(WorldprobeError, match=message) as info:
        load_study(path)
    assert str(path) in str(info.value)


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


def test_paper_study_estimate_uses_release_sizes(workspace):
    estimates = {e.label: e for e in estimate_disk(load_study("paper"), workspace)}
    seven_b = estimates["world_place x llama-2-7b x empty"]
    assert seven_b.bytes == 39_585 * 33 * 4096 * 2  # science.md: about 10.7 GB
