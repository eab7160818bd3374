"""The activation cache: manifest, reuse, refusal, lock, float16 widening, find_cache, and the kill -9 resume drill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from worldprobe.config import WORKSPACE_ENV
from worldprobe.errors import WorldprobeError
from worldprobe.extract import cache as cache_mod
from worldprobe.extract import find_cache, open_cache, runner
from worldprobe.extract.options import ModelRequest
from worldprobe.extract.runner import Batching, run_extraction
from worldprobe.extract.writer import CacheWriter

NAMES = ["Paris", "São Paulo", "Kraków", "Washington, D.C.", "New York City", "Москва", "Ōsaka", "Zürich", "Tokyo"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def texts(n: int) -> list[str]:
    return [f"{NAMES[i % len(NAMES)]} {i}" for i in range(n)]


def test_cache_layout_manifest_and_values(workspace, tiny_llama_dir, make_entity_table):
    table = make_entity_table(workspace, texts(40))
    path = run_extraction(
        "world_place",
        str(tiny_llama_dir),
        "coords",
        workspace=workspace,
        progress=False,
        batching=Batching(batch_size=8),
    )
    cache = open_cache(path)
    m = cache.manifest
    assert m["complete"] and m["n_entities"] == 40 and m["layers"] == [0, 1, 2, 3, 4] and m["d_model"] == 64
    assert m["n_layers"] == 4 and m["prompt"] == "coords" and m["aggregation"] == "last" and m["dtype"] == "float32"
    assert m["model_source"]["kind"] == "folder" and len(m["model_source"]["sha256"]) == 64
    assert set(m["versions"]) >= {"torch", "transformers", "worldprobe"} and m["storage_dtype"]["3"] == "float16"
    assert not (path / cache_mod.PROGRESS).exists() and not (path / cache_mod.LOCK).exists()
    assert list(cache.entities["entity_id"]) == list(table["entity_id"])
    layer = cache.layer(3)
    assert layer.shape == (40, 64) and layer.dtype == np.float16 and not layer.flags.writeable
    # rows are in dataset order although batches ran sorted by length
    loaded = runner.load_model_kept(str(tiny_llama_dir))
    from worldprobe.datasets.prompts import PROMPTS
    from worldprobe.extract.tokens import encode_entities

    encoded = encode_entities(loaded.tokenizer, [table["text"][7]], PROMPTS["coords"])
    (_, rows), = runner.forward_batches(loaded, encoded, 1, layers=[3])  # fmt: skip
    np.testing.assert_allclose(layer[7], rows[3][0], rtol=2e-3, atol=1e-3)


def test_a_last_token_cache_gets_its_pooled_embedding_companion(workspace, tiny_llama_dir, make_entity_table):
    """Asked for, beside an unsharded last-token cache with layer 0: layer 0 averaged over each entity's tokens (what
    the embedding control reads), equal to extracting aggregation "mean" at layer 0 by hand; not for a twin."""
    make_entity_table(workspace, texts(10))
    path = run_extraction("world_place", str(tiny_llama_dir), workspace=workspace, layers="0,2", limit=7,
                          pooled_embedding=True, progress=False)  # fmt: skip
    manifest = open_cache(path).manifest
    pooled = open_cache(cache_mod.find_pooled(manifest, workspace=workspace))
    assert pooled.manifest["aggregation"] == "mean" and pooled.layers == [0] and pooled.n_entities == 7
    assert list(pooled.entities["entity_id"]) == list(open_cache(path).entities["entity_id"])
    by_hand = run_extraction("world_place", str(tiny_llama_dir), workspace=workspace, layers=[0], limit=7,
                             aggregation="mean", progress=False)  # fmt: skip
    assert by_hand == pooled.path
    last = open_cache(path).layer(0)
    assert not np.allclose(np.asarray(pooled.layer(0)), np.asarray(last))  # several tokens per name, not the last
    twin = runner.extract_twin("world_place", str(tiny_llama_dir), "empty", manifest, seed=1, workspace=workspace,
                               layers=[0])  # fmt: skip
    assert not runner.wants_pooled(open_cache(twin).manifest)
    folders = [p.name for p in workspace.activations.iterdir()]
    assert sum("__mean__" in name for name in folders) == 1


def test_finished_cache_is_reused_and_covers_layer_subsets(workspace, tiny_llama_dir, make_entity_table, monkeypatch):
    make_entity_table(workspace, texts(12))
    path = run_extraction("world_place", str(tiny_llama_dir), workspace=workspace, progress=False)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model must not be loaded again")

    monkeypatch.setattr(runner, "load_model_kept", no_loading)
    assert run_extraction("world_place", str(tiny_llama_dir), workspace=workspace, progress=False) == path
    assert run_extraction("world_place", str(tiny_llama_dir), workspace=workspace, layers="1:2") == path
    assert find_cache("world_place", str(tiny_llama_dir), workspace=workspace, layers=[2]) == path
    # without a workspace, find_cache looks where the CLI would: $WORLDPROBE_WORKSPACE, else ./workspace
    monkeypatch.setenv(WORKSPACE_ENV, str(workspace.root))
    assert find_cache("world_place", str(tiny_llama_dir)) == path
    monkeypatch.delenv(WORKSPACE_ENV)
    monkeypatch.chdir(workspace.root.parent)
    assert find_cache("world_place", str(tiny_llama_dir)) == path
    elsewhere = workspace.root.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(WorldprobeError, match="does not exist yet|not built"):
        find_cache("world_place", str(tiny_llama_dir))


def test_layer_subset_gets_its_own_cache_and_limit_takes_a_seeded_sample(workspace, tiny_llama_dir, make_entity_table):
    from worldprobe.datasets.table import sample_rows

    table = make_entity_table(workspace, texts(12))
    path = run_extraction("world_place", str(tiny_llama_dir), workspace=workspace, layers="0,2", limit=5,
                          aggregation="mean", progress=False)  # fmt: skip
    cache = open_cache(path)
    assert cache.layers == [0, 2] and cache.n_entities == 5 and cache.manifest["aggregation"] == "mean"
    # --limit means what it means in `datasets build`: a seeded sample (seed 0) in table order
    assert list(cache.entities["entity_id"]) == list(sample_rows(table, 5, 0)["entity_id"])
    assert list(cache.entities["entity_id"]) != list(table["entity_id"][:5])
    assert cache.manifest["limit"] == 5 and cache.manifest["limit_seed"] == 0
    assert sorted(p.name for p in path.glob("layer_*.npy")) == ["layer_000.npy", "layer_002.npy"]
    with pytest.raises(WorldprobeError, match="layer 1 is not in this cache"):
        cache.layer(1)


def test_find_cache_explains_what_to_run(workspace, tiny_llama_dir, make_entity_table):
    make_entity_table(workspace, texts(6))
    with pytest.raises(cache_mod.MissingCacheError, match="extract --dataset world_place --model smollm2-135m --mean"):
        find_cache("world_place", "smollm2-135m", workspace=workspace, aggregation="mean")
    run_extraction("world_place", str(tiny_llama_dir), workspace=workspace, progress=False)
    make_entity_table(workspace, texts(7))  # the dataset was rebuilt: the old cache no longer counts
    with pytest.raises(WorldprobeError, match="does not exist yet"):
        find_cache("world_place", str(tiny_llama_dir), workspace=workspace)


def test_disagreeing_manifest_is_refused_with_the_difference(workspace, tiny_llama_dir, make_entity_table):
    make_entity_table(workspace, texts(6))
    path = run_extraction("world_place", str(tiny_llama_dir), workspace=workspace, progress=False)
    manifest = json.loads((path / cache_mod.MANIFEST).read_text())
    manifest.update(complete=False, d_model=65)
    (path / cache_mod.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(WorldprobeError, match="d_model: cache has 65, request has 64"):
        run_extraction("world_place", str(tiny_llama_dir), workspace=workspace, progress=False)


def test_lock_stops_a_second_writer(workspace, tiny_llama_dir, make_entity_table):
    table = make_entity_table(workspace, texts(6))
    path = workspace.activations / "locked"
    manifest = {"n_entities": 6, "d_model": 4, "layers": [0]}
    with (
        CacheWriter.open(path, dict(manifest), table),
        pytest.raises(WorldprobeError, match="another process is writing"),
    ):
        CacheWriter.open(path, dict(manifest), table)
    with CacheWriter.open(path, dict(manifest), table):  # released on exit
        pass
    with pytest.raises(WorldprobeError, match="not finished"):
        open_cache(path)


def test_values_beyond_float16_widen_the_layer_to_float32(workspace, make_entity_table):
    table = make_entity_table(workspace, texts(4))
    path = workspace.activations / "wide"
    with CacheWriter.open(path, {"n_entities": 4, "d_model": 3, "layers": [0, 1]}, table) as writer:
        writer.write(0, np.array([0, 1]), np.full((2, 3), 1.5, dtype=np.float32))
        writer.write(0, np.array([2]), np.array([[1e6, -7e4, 0.25]], dtype=np.float32))
        writer.write(1, np.array([0]), np.ones((1, 3), dtype=np.float32))
        with pytest.raises(WorldprobeError, match="inf/NaN"):
            writer.write(1, np.array([1]), np.array([[np.nan, 0, 0]], dtype=np.float32))
        writer.write(0, np.array([3]), np.zeros((1, 3), dtype=np.float32))
        writer.write(1, np.array([1, 2, 3]), np.zeros((3, 3), dtype=np.float32))
        writer.commit(1, 4, done=True)
        writer.finish()
    cache = open_cache(path)
    assert cache.manifest["storage_dtype"] == {"0": "float32", "1": "float16"}
    assert cache.layer(0).dtype == np.float32 and cache.layer(1).dtype == np.float16
    np.testing.assert_array_equal(cache.layer(0)[:3], [[1.5] * 3, [1.5] * 3, [1e6, -7e4, 0.25]])


def _cli(workspace, model_dir, *extra):
    return [sys.executable, "-m", "worldprobe.cli", "--workspace", str(workspace.root), "extract", "--dataset",
            "world_place", "--model", str(model_dir), "--batch-size", "2", "--threads", "1", *extra]  # fmt: skip


@pytest.mark.slow
def test_kill_9_and_resume_gives_byte_identical_files(tmp_path, tiny_llama_dir, make_entity_table):
    from worldprobe.workspace import Workspace

    killed, clean = Workspace(tmp_path / "killed"), Workspace(tmp_path / "clean")
    for ws in (killed, clean):
        make_entity_table(ws, texts(400))
    env = {**os.environ, "TQDM_DISABLE": "1"}
    process = subprocess.Popen(_cli(killed, tiny_llama_dir, "--flush-every", "8"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 120
    ledgers: list = []
    while time.time() < deadline and process.poll() is None:
        ledgers = list(killed.activations.glob(f"*/{cache_mod.PROGRESS}"))
        if ledgers:
            break
        time.sleep(0.02)
    assert ledgers, f"no ledger appeared: {process.stderr.read().decode()[-2000:] if process.poll() else 'timeout'}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    path = ledgers[0].parent
    rows_done = json.loads(ledgers[0].read_text())["rows_done"]
    assert 0 < rows_done < 400 and not json.loads((path / cache_mod.MANIFEST).read_text())["complete"]
    resumed = subprocess.run(_cli(killed, tiny_llama_dir), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    uninterrupted = run_extraction(
        "world_place", str(tiny_llama_dir), workspace=clean, progress=False, batching=Batching(batch_size=2)
    )
    assert uninterrupted.name == path.name
    files = sorted(p.name for p in uninterrupted.iterdir())
    assert files == sorted(p.name for p in path.iterdir()) and "layer_004.npy" in files
    for name in files:
        assert (path / name).read_bytes() == (uninterrupted / name).read_bytes(), name


def test_a_random_twin_asked_to_be_quantised_is_recorded_as_it_runs_unquantised(workspace, tiny_llama_dir,
                                                                               make_entity_table):  # fmt: skip
    make_entity_table(workspace, texts(6))
    with pytest.warns(UserWarning, match="random-init twin is not quantised"):
        path = run_extraction(
            "world_place",
            ModelRequest(f"random:{tiny_llama_dir}", quantization="8bit"),
            workspace=workspace,
            progress=False,
        )
    assert open_cache(path).manifest["quantization"] is None
