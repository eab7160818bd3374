"""A cache is finished only when complete and intact: ledger coverage, sizes, shapes and checksums on every open,
damaged caches refused with the rebuild command, one damaged folder never stopping the others, preallocation
against a full disk, and an identity that follows the model's files and settings."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from worldprobe.errors import WorldprobeError
from worldprobe.extract import cache as cache_mod
from worldprobe.extract import find_cache, open_cache
from worldprobe.extract import writer as writer_mod
from worldprobe.extract.options import ModelRequest
from worldprobe.extract.runner import Batching, run_extraction
from worldprobe.extract.writer import CacheWriter
from worldprobe.probes import run_probe
from worldprobe.probes.options import ProbeOptions
from worldprobe.probes.results import is_complete, read_summary

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAMES = ["Paris", "São Paulo", "Kraków", "Washington, D.C.", "New York City", "Москва", "Ōsaka", "Zürich", "Tokyo"]


def texts(n: int) -> list[str]:
    return [f"{NAMES[i % len(NAMES)]} {i}" for i in range(n)]


def extract(workspace, model, **kwargs):
    """Extract ``model`` (its loading options among ``kwargs``: dtype, device, revision) in batches of 8."""
    loading = {k: kwargs.pop(k) for k in ("dtype", "device", "revision") if k in kwargs}
    return run_extraction("world_place", ModelRequest(str(model), **loading), workspace=workspace, progress=False,
                          batching=Batching(batch_size=8), **kwargs)  # fmt: skip


@pytest.fixture
def built(workspace, tiny_llama_dir, make_entity_table):
    """A workspace with a 30-entity table and its finished cache of the tiny model."""
    make_entity_table(workspace, texts(30))
    return workspace, extract(workspace, tiny_llama_dir)


def test_finished_cache_records_rows_and_file_checksums(built):
    _, path = built
    manifest = json.loads((path / cache_mod.MANIFEST).read_text())
    assert manifest["rows_written"] == 30 and manifest["format_version"] == cache_mod.FORMAT_VERSION
    assert sorted(manifest["files"]) == ["entities.parquet", *(f"layer_{i:03d}.npy" for i in range(5))]
    layer = manifest["files"]["layer_002.npy"]
    assert layer["bytes"] == (path / "layer_002.npy").stat().st_size and len(layer["sha256"]) == 64
    assert cache_mod.cache_problems(path, manifest, full=True) == []


def test_rebuild_refuses_to_delete_a_cache_that_is_being_read(built, tiny_llama_dir):
    """extract --rebuild deleted a cache under a running probe (readers took no lock): FileNotFoundError traceback
    in the probe. Now an open cache holds a shared lock, and the rebuild waits for nobody: it says who is in the way."""
    import gc

    workspace, path = built
    reading = open_cache(path)
    with pytest.raises(WorldprobeError, match="another process is reading this activation cache"):
        extract(workspace, tiny_llama_dir, rebuild=True)
    assert reading.layer(2).shape == (30, reading.d_model)  # untouched
    del reading
    gc.collect()
    assert extract(workspace, tiny_llama_dir, rebuild=True) == path and open_cache(path).n_entities == 30


def test_truncated_layer_is_refused_with_the_file_and_the_rebuild_command(built, tiny_llama_dir):
    workspace, path = built
    good = (path / "layer_003.npy").read_bytes()
    with open(path / "layer_003.npy", "r+b") as handle:
        handle.truncate(len(good) - 640)
    with pytest.raises(WorldprobeError, match="damaged activation cache: layer_003.npy is") as info:
        open_cache(path)
    assert info.value.file == path / "layer_003.npy" and "--rebuild" in info.value.hint
    assert f"--model {tiny_llama_dir}" in info.value.hint
    with pytest.raises(WorldprobeError, match="layer_003.npy"):  # extract does not pass it off as done either
        extract(workspace, tiny_llama_dir)
    with pytest.raises(WorldprobeError, match="damaged"):
        run_probe("world_place", str(tiny_llama_dir), workspace=workspace, progress=False)
    assert extract(workspace, tiny_llama_dir, rebuild=True) == path  # what the hint says to run
    assert (path / "layer_003.npy").read_bytes() == good and open_cache(path).n_entities == 30


@pytest.mark.parametrize("reset_mtime", [False, True])
def test_overwritten_values_are_caught_on_open(built, reset_mtime):
    _, path = built
    file = path / "layer_001.npy"
    before = file.stat()
    with open(file, "r+b") as handle:  # same size, a few values changed
        handle.seek(before.st_size - 64)
        handle.write(b"\x00" * 32)
    if reset_mtime:  # hiding the write by resetting the mtime still changes the ctime
        os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(WorldprobeError, match=r"layer_001.npy has sha256 .*\(its contents changed\)"):
        open_cache(path)


def test_entity_table_and_manifest_damage_are_named(built):
    _, path = built
    manifest = json.loads((path / cache_mod.MANIFEST).read_text())
    (path / cache_mod.ENTITIES).write_bytes(b"PAR1 garbage")
    problems = cache_mod.cache_problems(path, manifest)
    assert problems[0][0] == path / cache_mod.ENTITIES and "bytes, expected" in problems[0][1]
    manifest.update(n_entities=31, rows_written=31)
    assert "holds float16 (30, 64), the manifest says float16 (31, 64)" in dict(
        (f.name, p) for f, p in cache_mod.cache_problems(path, manifest))["layer_000.npy"]  # fmt: skip


def test_cache_from_an_older_version_is_not_used(built, tiny_llama_dir):
    workspace, path = built
    manifest = json.loads((path / cache_mod.MANIFEST).read_text())
    manifest["format_version"] = 1
    del manifest["files"]
    (path / cache_mod.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(WorldprobeError, match="older worldprobe without file checksums"):
        open_cache(path)
    with pytest.warns(UserWarning, match="older worldprobe"), pytest.raises(WorldprobeError, match="does not exist"):
        find_cache("world_place", str(tiny_llama_dir), workspace=workspace)


@pytest.mark.parametrize("batch_size", [0, -5])
def test_bad_batch_size_never_makes_a_cache(workspace, tiny_llama_dir, make_entity_table, batch_size):
    make_entity_table(workspace, texts(6))
    with pytest.raises(WorldprobeError, match="batch_size must be at least 1"):  # checked at the door
        run_extraction(
            "world_place",
            str(tiny_llama_dir),
            workspace=workspace,
            progress=False,
            batching=Batching(batch_size=batch_size),
        )
    assert not list(workspace.activations.glob("*/manifest.json"))


def test_finish_refuses_a_ledger_that_does_not_cover_every_row(workspace, make_entity_table):
    table = make_entity_table(workspace, texts(5))
    path = workspace.activations / "short"
    with CacheWriter.open(path, {"n_entities": 5, "d_model": 2, "layers": [0]}, table, batch_size=2) as w:
        w.write(0, np.arange(4), np.ones((4, 2), dtype=np.float32))
        w.commit(2, 4, done=True)
        with pytest.raises(WorldprobeError, match="the ledger covers 4 of 5 rows"):
            w.finish()
    with pytest.raises(WorldprobeError, match="not finished"):
        open_cache(path)


def test_one_corrupt_manifest_never_stops_the_others(built, tiny_llama_dir):
    workspace, path = built
    other = workspace.activations / "unrelated__cache"
    other.mkdir()
    (other / cache_mod.MANIFEST).write_text('{"dataset": "art", "layers": [0, 1')
    broken_list = workspace.activations / "list__cache"
    broken_list.mkdir()
    (broken_list / cache_mod.MANIFEST).write_text("[1, 2]")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert find_cache("world_place", str(tiny_llama_dir), workspace=workspace) == path
        assert extract(workspace, tiny_llama_dir) == path
        assert extract(workspace, tiny_llama_dir, layers="1:2") == path
        folder = run_probe("world_place", str(tiny_llama_dir), workspace=workspace, progress=False)
    messages = [str(w.message) for w in caught]
    assert any("unrelated__cache/manifest.json" in m and "unreadable manifest" in m for m in messages)
    assert any("list__cache/manifest.json" in m and "not an object" in m for m in messages)
    assert read_summary(folder)["complete"]


def test_cli_skips_a_corrupt_manifest_with_one_line_warning(built, tiny_llama_dir):
    workspace, path = built
    (workspace.activations / "junk").mkdir()
    (workspace.activations / "junk" / cache_mod.MANIFEST).write_bytes(b"\x00\x01")
    result = subprocess.run(
        [sys.executable, "-m", "worldprobe.cli", "--workspace", str(workspace.root), "extract", "--dataset",
         "world_place", "--model", str(tiny_llama_dir), "--batch-size", "8"],
        capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"},
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip() == str(path)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("warning: skipping activation cache:")
    assert "junk/manifest.json" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------------ full disk


def test_full_disk_at_preallocation_is_one_clear_error(workspace, tiny_llama_dir, make_entity_table, monkeypatch):
    make_entity_table(workspace, texts(20))

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(WorldprobeError, match="the disk is full") as info:
        extract(workspace, tiny_llama_dir)
    folder = next(workspace.activations.iterdir())
    assert not list(folder.glob("layer_*.npy")) and not (folder / cache_mod.MANIFEST).exists()
    assert "run the same command again" in info.value.hint
    monkeypatch.undo()
    assert open_cache(extract(workspace, tiny_llama_dir)).n_entities == 20  # with room, the same command works


def test_too_little_free_disk_is_refused_before_anything_is_written(workspace, tiny_llama_dir, make_entity_table,
                                                                    monkeypatch):  # fmt: skip
    make_entity_table(workspace, texts(20))
    monkeypatch.setattr(writer_mod.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(WorldprobeError, match=r"needs 13\.4 KB of disk, 1\.0 KB is free"):
        extract(workspace, tiny_llama_dir)
    assert not list(workspace.activations.glob("*/*.npy"))


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MB tmpfs (needs root and mount(8)); skipped with the reason when it cannot be mounted."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_tmpfs_gives_one_error_line_not_sigbus(tiny_tmpfs, tiny_llama_dir, make_entity_table, monkeypatch):
    from worldprobe.workspace import Workspace

    workspace = Workspace(tiny_tmpfs / "ws")
    make_entity_table(workspace, texts(1200))  # 5 layers x 1200 x 64 float16 = 768 KB of a 1 MB disk
    (tiny_tmpfs / "filler").write_bytes(b"\x01" * 400_000)
    command = [sys.executable, "-m", "worldprobe.cli", "--workspace", str(workspace.root), "extract", "--dataset",
               "world_place", "--model", str(tiny_llama_dir), "--batch-size", "64", "--threads", "1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "of disk" in result.stderr and "is free" in result.stderr
    # the same on a disk that fills between the free-space check and the allocation: fallocate refuses
    monkeypatch.setattr(writer_mod.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 0, 10**9))
    with pytest.raises(WorldprobeError, match="the disk is full"):
        run_extraction(
            "world_place", str(tiny_llama_dir), workspace=workspace, progress=False, batching=Batching(batch_size=64)
        )
    assert not list(workspace.activations.glob("*/*.npy"))


def test_a_read_only_workspace_is_refused_before_any_work(built, tiny_llama_dir, tmp_path):
    """A read-only workspace (a shared cluster folder) gave tracebacks at the first write, `probe` after its whole
    layer sweep. Now every command that writes there says so first; reading commands still work."""
    workspace, _ = built
    mount = tmp_path / "ro"
    mount.mkdir()
    shutil.copytree(workspace.root, mount / "ws")
    done = subprocess.run(["mount", "--bind", str(mount), str(mount)], capture_output=True)
    if done.returncode != 0 or subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)]).returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {done.stderr.decode().strip()}")
    try:
        cli = [sys.executable, "-m", "worldprobe.cli", "--workspace", str(mount / "ws")]
        for args in (["probe", "-d", "world_place", "-m", str(tiny_llama_dir)], ["report"],
                     ["datasets", "build", "art", "--limit", "20"]):  # fmt: skip
            result = subprocess.run(cli + args, capture_output=True, text=True)
            assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
            assert "the workspace cannot be written here (read-only)" in result.stderr
        shown = subprocess.run(cli + ["datasets", "show", "world_place"], capture_output=True, text=True)
        assert shown.returncode == 0, shown.stderr[-2000:]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# ------------------------------------------------------------------------------------------------ identity


def test_changed_local_weights_get_a_new_cache_and_new_results(workspace, tiny_llama_dir, make_entity_table, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / "my-model"
    shutil.copytree(tiny_llama_dir, model)
    make_entity_table(workspace, texts(40))
    old_cache = extract(workspace, model)
    old_results = run_probe("world_place", str(model), workspace=workspace, progress=False)
    weights = load_file(model / "model.safetensors")
    name = next(k for k in weights if "layers.0.mlp" in k)
    weights[name] = weights[name] + 0.5 * torch.randn_like(weights[name])
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WorldprobeError, match="does not exist yet"):  # the old cache is of other weights
        find_cache("world_place", str(model), workspace=workspace)
    new_cache = extract(workspace, model)
    assert new_cache != old_cache and find_cache("world_place", str(model), workspace=workspace) == new_cache
    new_results = run_probe("world_place", str(model), workspace=workspace, progress=False)
    assert new_results != old_results and read_summary(new_results)["cache"]["path"] == f"activations/{new_cache.name}"
    assert not np.array_equal(open_cache(new_cache).layer(1), open_cache(old_cache).layer(1))


def test_changed_tokenizer_or_config_changes_the_identity(tiny_llama_dir, tmp_path):
    from worldprobe.extract.models import local_source

    model = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, model)
    before = local_source(str(model))
    (model / "README.md").write_text("notes do not change the model")
    assert local_source(str(model)) == before
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-3}))
    assert local_source(str(model))["sha256"] != before["sha256"]


def test_revision_is_for_hub_models(workspace, tiny_llama_dir, make_entity_table):
    make_entity_table(workspace, texts(4))
    with pytest.raises(WorldprobeError, match="--revision applies to hub models"):
        extract(workspace, tiny_llama_dir, revision="main")


def test_hub_revision_and_its_commit_are_recorded(tiny_llama_dir, tmp_path, monkeypatch):
    """An offline hub cache with two commits of one model: the revision asked for and its commit are recorded."""
    from worldprobe.extract.models import describe_model

    repo = tmp_path / "hf" / "hub" / "models--org--tiny"
    commits = {"main": "a" * 40, "v1": "b" * 40}
    for ref, commit in commits.items():
        snapshot = repo / "snapshots" / commit
        shutil.copytree(tiny_llama_dir, snapshot)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    info = describe_model("org/tiny", revision="v1")
    assert info.source == {"kind": "hub", "hub_id": "org/tiny", "revision": "v1", "commit": "b" * 40}
    assert info.revision == "b" * 40
    assert describe_model("org/tiny").source["commit"] == "a" * 40


def test_caches_that_differ_in_dtype_are_ambiguous_for_probes(built, tiny_llama_dir):
    workspace, path = built
    extract(workspace, tiny_llama_dir, dtype="bfloat16")
    with pytest.raises(WorldprobeError, match="2 finished activation caches answer this request and differ in dtype"):
        find_cache("world_place", str(tiny_llama_dir), workspace=workspace)
    assert find_cache("world_place", str(tiny_llama_dir), workspace=workspace, dtype="float32") == path


def test_probe_and_ask_take_the_cache_of_their_dtype_when_there_are_several(built, tiny_llama_dir, monkeypatch):
    from worldprobe import devices
    from worldprobe.interventions import setup

    workspace, path = built
    # one cache: a preference never refuses it (a study's probe task on a machine that resolves "fast" otherwise)
    assert find_cache("world_place", str(tiny_llama_dir), workspace=workspace, prefer={"dtype": "bfloat16"}) == path
    assert setup.prepare(workspace, "world_place", str(tiny_llama_dir), "empty", None, dtype="bfloat16",
                         progress=False).cache.path == path  # fmt: skip
    half = extract(workspace, tiny_llama_dir, dtype="bfloat16")
    with pytest.raises(WorldprobeError, match="differ in dtype"):  # the hint names --dtype, which probe now takes
        run_probe("world_place", str(tiny_llama_dir), workspace=workspace, progress=False)
    monkeypatch.setattr(devices, "cpu_bfloat16_flag", lambda: "amx_bf16")  # a study's dtype = "fast" on an AMX CPU
    folder = run_probe("world_place", str(tiny_llama_dir), workspace=workspace, prefer_dtype="fast", progress=False)
    assert read_summary(folder)["cache"]["path"] == f"activations/{half.name}"  # relative to the workspace
    with pytest.raises(WorldprobeError, match=r"dtype float16\) does not exist yet \(there is one with") as info:
        run_probe(
            "world_place", ModelRequest(str(tiny_llama_dir), dtype="float16"), workspace=workspace, progress=False
        )
    assert "dtype float32" in str(info.value) and "dtype bfloat16" in str(info.value)  # never another dtype
    assert setup.prepare(workspace, "world_place", str(tiny_llama_dir), "empty", None, dtype="float32",
                         progress=False).cache.path == path  # fmt: skip
    assert setup.prepare(workspace, "world_place", str(tiny_llama_dir), "empty", None, dtype="bfloat16",
                         progress=False).cache.path == half  # fmt: skip


def test_the_manifest_records_why_fast_chose_its_dtype(built, tiny_llama_dir, monkeypatch):
    from worldprobe import devices

    workspace, path = built
    assert cache_mod.read_manifest(path)["dtype_choice"] == "auto: float32 off cuda"
    monkeypatch.setattr(devices, "cpu_bfloat16_flag", lambda: "avx512_bf16")
    half = cache_mod.read_manifest(extract(workspace, tiny_llama_dir, dtype="fast", device="cpu"))
    assert (half["dtype"], half["dtype_choice"]) == ("bfloat16", "fast: bfloat16, this CPU has avx512_bf16")


def test_prompt_template_is_part_of_the_identity(built):
    _, path = built
    manifest = json.loads((path / cache_mod.MANIFEST).read_text())
    assert manifest["prompt_template"] == {"name": "empty", "prefix": "", "upper": False, "random_tokens": 0,
                                           "strip_final_period": False}  # fmt: skip
    assert "prompt_template" in cache_mod.IDENTITY_FIELDS


def test_the_random_init_control_reads_twins_the_probe_command_extracts_first(workspace, tiny_llama_dir,
                                                                             make_entity_table):
    from typer.testing import CliRunner

    from worldprobe import cli
    from worldprobe.extract import extract_twin

    make_entity_table(workspace, texts(30))
    model = extract(workspace, tiny_llama_dir, dtype="bfloat16", limit=24, seed=5, layers="1,3")
    manifest = cache_mod.read_manifest(model)
    with pytest.raises(WorldprobeError, match="reads its twins' caches") as info:  # the probe stage never extracts
        run_probe(
            "world_place",
            str(tiny_llama_dir),
            workspace=workspace,
            controls=("random_init",),
            progress=False,
            options=ProbeOptions(random_init_seeds=1),
        )
    assert "--control random_init" in info.value.hint and "--seed 0" in info.value.hint
    assert not list(workspace.activations.glob("*random*"))
    twin = extract_twin("world_place", str(tiny_llama_dir), "empty", manifest, seed=0, workspace=workspace,
                        layers=[1, 3])  # fmt: skip
    found = cache_mod.read_manifest(twin)  # the model cache's rows, dtype and aggregation; only the weights differ
    assert [found[k] for k in ("dtype", "limit", "limit_seed", "aggregation", "layers", "seed")] == [
        "bfloat16", 24, 5, "last", [1, 3], 0]
    assert cache_mod.find_twin(manifest, seed=0, layers=[3], workspace=workspace) == twin
    result = CliRunner().invoke(cli.app, ["probe", "-d", "world_place", "-m", str(tiny_llama_dir), "--control",
                                          "random_init", "--random-init-seeds", "2", "--resamples", "100"])
    assert result.exit_code == 0, result.output
    assert cache_mod.find_twin(manifest, seed=1, workspace=workspace) != twin  # the command extracted seed 1
    assert len(list(workspace.activations.glob("*random*"))) == 2  # and reused seed 0


def test_unreadable_results_are_recomputed(built, tiny_llama_dir):
    workspace, _ = built
    folder = run_probe("world_place", str(tiny_llama_dir), workspace=workspace, progress=False)
    key = read_summary(folder)["run_key"]
    metrics = folder / "metrics.parquet"
    good = metrics.read_bytes()
    metrics.write_bytes(good[: len(good) // 2])
    assert not is_complete(folder, key)
    assert run_probe("world_place", str(tiny_llama_dir), workspace=workspace, progress=False) == folder
    assert is_complete(folder, key) and len(metrics.read_bytes()) == len(good)


def test_run_key_follows_the_cache_files(built, tiny_llama_dir):
    from worldprobe.probes.results import run_key

    _, path = built
    manifest = json.loads((path / cache_mod.MANIFEST).read_text())
    other = json.loads(json.dumps(manifest))
    other["files"]["layer_002.npy"]["sha256"] = "0" * 64
    assert run_key([manifest], {"probe": "ridge"}) != run_key([other], {"probe": "ridge"})
    other = {**manifest, "model_source": {**manifest["model_source"], "sha256": "1" * 64}}
    assert run_key([manifest], {"probe": "ridge"}) != run_key([other], {"probe": "ridge"})


def test_a_read_only_download_cache_skips_the_checksum_memo_with_one_warning(tmp_path, monkeypatch):
    """A read-only download cache (shared on a cluster) ended an extraction with a traceback at its last step, when
    the memo of the new files' checksums could not be written; the memo only saves re-reading."""
    from worldprobe import checksums

    file = tmp_path / "data.bin"
    file.write_bytes(b"x" * 100)
    digest = checksums.sha256_of(file)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(checksums.os, "replace", read_only)
    monkeypatch.setattr(checksums, "_UNWRITABLE", [])
    with pytest.warns(UserWarning, match="cannot be written") as said:
        checksums.remember(file, digest)
        checksums.remember(file, digest)
    assert len(said) == 1  # once per process
    assert checksums.file_problem(file, digest, 100) is None  # checks still work, by reading the file


def test_several_caches_of_one_build_are_told_apart_only_when_the_largest_holds_the_others(built, tiny_llama_dir):
    """A --limit subset or a subset of layers is passed over for the full cache; another sample of the same size, or a
    smaller cache with layers the larger lacks, is refused naming both (never the folder name that sorts first)."""
    workspace, full = built
    extract(workspace, tiny_llama_dir, limit=10)  # a seeded subset: the full cache holds more of the same build
    assert extract(workspace, tiny_llama_dir, layers="1") == full  # a subset of layers: the full cache covers it
    assert find_cache("world_place", str(tiny_llama_dir), workspace=workspace) == full
    other_sample = extract(workspace, tiny_llama_dir, limit=10, seed=1)
    assert find_cache("world_place", str(tiny_llama_dir), workspace=workspace) == full  # still the full one
    shutil.rmtree(full)
    with pytest.raises(WorldprobeError, match="neither holds the other: both hold 10 entities of different samples") \
            as info:  # fmt: skip
        find_cache("world_place", str(tiny_llama_dir), workspace=workspace)
    assert str(other_sample) in str(info.value)
    shutil.rmtree(other_sample)
    one_layer = extract(workspace, tiny_llama_dir, layers="1")  # all 30 entities, one layer; 10 entities, all layers
    assert find_cache("world_place", str(tiny_llama_dir), workspace=workspace, layers=[1]) == one_layer
    with pytest.raises(WorldprobeError, match=r"the one with more entities lacks layers \[0, 2"):
        find_cache("world_place", str(tiny_llama_dir), workspace=workspace)
