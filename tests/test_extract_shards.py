"""Sharded extraction: K writers of one cache give the unsharded run's bytes, resume after a crash, refuse mixing,
and keep float16 overflows of a shard for the merge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worldprobe.errors import WorldprobeError
from worldprobe.extract import cache as cache_mod
from worldprobe.extract import open_cache, runner
from worldprobe.extract import writer as writer_mod
from worldprobe.extract.options import Batching, check_shard
from worldprobe.extract.runner import run_extraction
from worldprobe.extract.writer import CacheWriter, shard_done

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = ["Paris", "São Paulo", "Kraków", "Washington, D.C.", "New York City", "Москва", "Ōsaka", "Zürich", "Tokyo"]
N = 37  # 10 batches of 4, the last one short


def texts(n: int = N) -> list[str]:
    return [f"{NAMES[i % len(NAMES)]} {i}" for i in range(n)]


def extract(workspace, model_dir, shard=None, batch_size=4, flush_rows=2048, **kwargs):
    return run_extraction(
        "world_place",
        str(model_dir),
        workspace=workspace,
        progress=False,
        batching=Batching(batch_size=batch_size, shard=shard, flush_rows=flush_rows),
        **kwargs,
    )


def layer_bytes(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.glob("layer_*.npy"))}


def leftovers(path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith(("progress", ".lock", ".setup", "overflow")))


@pytest.fixture
def unsharded(tmp_path, tiny_llama_dir, make_entity_table):
    """The layer files of the same cache written by one unsharded run."""
    from worldprobe.workspace import Workspace

    workspace = Workspace(tmp_path / "unsharded")
    make_entity_table(workspace, texts())
    return layer_bytes(extract(workspace, tiny_llama_dir))


def test_shard_batch_ranges_tile_the_batches():
    ranges = [cache_mod.shard_batches(N, 4, (i, 3)) for i in range(3)]
    assert ranges == [(0, 3), (3, 6), (6, 10)]
    assert cache_mod.shard_batches(3, 4, (0, 2)) == (0, 0) and cache_mod.shard_batches(3, 4, (1, 2)) == (0, 1)
    for bad in [(2, 2), (-1, 2), (0, 0)]:
        with pytest.raises(WorldprobeError, match="0 <= index < count"):
            check_shard(bad)


@pytest.mark.parametrize("order", [(0, 1), (1, 0), (2, 0, 1)])
def test_shards_in_any_order_equal_the_unsharded_run(workspace, tiny_llama_dir, make_entity_table, unsharded, order,
                                                     monkeypatch):  # fmt: skip
    make_entity_table(workspace, texts())
    count = len(order)
    for step, index in enumerate(order):
        path = extract(workspace, tiny_llama_dir, shard=(index, count))
        manifest = cache_mod.read_manifest(path)
        assert manifest["complete"] == (step == count - 1)
        if not manifest["complete"]:
            with pytest.raises(WorldprobeError, match="not finished"):
                open_cache(path)
            assert shard_done(path, (index, count))
    assert layer_bytes(path) == unsharded
    assert manifest["shards"] == count and manifest["batch_size"] == 4 and leftovers(path) == []
    monkeypatch.setattr(runner, "load_model_kept", lambda *a, **k: pytest.fail("a finished cache loads no model"))
    assert extract(workspace, tiny_llama_dir, shard=(order[0], count)) == path
    assert extract(workspace, tiny_llama_dir) == path  # finished: an unsharded request reuses it


def test_a_shard_that_crashed_resumes_from_its_own_ledger(workspace, tiny_llama_dir, make_entity_table, unsharded,
                                                          monkeypatch):  # fmt: skip
    make_entity_table(workspace, texts())
    real = runner.forward_batches

    def crash_after_three_batches(*args, **kwargs):
        for done, item in enumerate(real(*args, **kwargs)):
            if done == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(runner, "forward_batches", crash_after_three_batches)
    with pytest.raises(KeyboardInterrupt):
        extract(workspace, tiny_llama_dir, shard=(1, 2), flush_rows=4)
    path = next(workspace.activations.iterdir())
    ledger = json.loads((path / "progress.shard-2-of-2.json").read_text())
    assert ledger["batches"] == [5, 10] and ledger["batches_done"] == 3 and not ledger["done"]
    assert ledger["rows_done"] == 12 and not (path / ".lock.shard-2-of-2").exists()
    monkeypatch.setattr(runner, "forward_batches", real)
    extract(workspace, tiny_llama_dir, shard=(0, 2))
    assert not cache_mod.read_manifest(path)["complete"]
    extract(workspace, tiny_llama_dir, shard=(1, 2), batch_size=8)  # the cache's batch size wins
    assert cache_mod.read_manifest(path)["complete"] and leftovers(path) == []
    assert layer_bytes(path) == unsharded


def test_mixing_sharded_and_unsharded_writers_is_refused(workspace, tiny_llama_dir, make_entity_table, monkeypatch):
    make_entity_table(workspace, texts())
    real = runner.forward_batches

    def crash_at_once(*args, **kwargs):
        raise KeyboardInterrupt
        yield from real(*args, **kwargs)

    monkeypatch.setattr(runner, "forward_batches", crash_at_once)
    with pytest.raises(KeyboardInterrupt):
        extract(workspace, tiny_llama_dir, shard=(0, 2))
    monkeypatch.setattr(runner, "forward_batches", real)
    with pytest.raises(WorldprobeError, match="being written in 2 shards; it cannot be continued without shards"):
        extract(workspace, tiny_llama_dir)
    with pytest.raises(WorldprobeError, match="being written in 2 shards; it cannot be continued in 3 shards"):
        extract(workspace, tiny_llama_dir, shard=(0, 3))
    other = extract(workspace, tiny_llama_dir, layers="0,1")  # another cache: unsharded, left unfinished below
    manifest = cache_mod.read_manifest(other)
    writer_mod._write_json(other / cache_mod.MANIFEST, {**manifest, "complete": False})
    with pytest.raises(WorldprobeError, match="by one unsharded writer; it cannot be continued in 2 shards") as info:
        extract(workspace, tiny_llama_dir, layers="0,1", shard=(1, 2))
    assert "shards = 1" in str(info.value)


def _open_shard(path, table, index):
    manifest = {"n_entities": 8, "d_model": 3, "layers": [0, 1]}
    return CacheWriter.open(path, manifest, table, shard=(index, 2), batch_size=2)


def test_float16_overflow_in_a_shard_is_merged_as_float32(workspace, make_entity_table):
    table = make_entity_table(workspace, texts(8))
    path = workspace.activations / "wide"
    values = np.full((8, 3), 1.25, dtype=np.float32)
    values[1] = [1e6, -7e4, 0.1]
    values[6] = [0.3, 3e5, 2.0]
    with _open_shard(path, table, 0) as first, _open_shard(path, table, 1) as second:
        assert (first.batches, second.batches) == ((0, 2), (2, 4))
        first.write(0, np.arange(2), values[:2])
        first.write(1, np.arange(2), values[:2] / 1e6)
        first.commit(1, 2)
        first.write(0, np.arange(2, 4), np.array([[9e9, 0, 0], [0, 0, 0]], dtype=np.float32))  # then a crash
    assert (path / "overflow.shard-1-of-2.layer_000.bin").stat().st_size == 2 * (8 + 12)
    with _open_shard(path, table, 0) as first, _open_shard(path, table, 1) as second:
        assert (path / "overflow.shard-1-of-2.layer_000.bin").stat().st_size == 8 + 12  # cut back to the ledger
        first.write(0, np.arange(2, 4), values[2:4])  # the resumed batch
        first.write(1, np.arange(2, 4), values[2:4] / 1e6)
        assert np.load(path / "layer_000.npy", mmap_mode="r").dtype == np.float16  # no rewrite while shards write
        first.commit(2, 4, done=True)
        assert not first.finish()  # the other shard is not done
        second.write(0, np.arange(4, 8), values[4:])
        second.write(1, np.arange(4, 8), values[4:] / 1e6)
        second.commit(2, 4, done=True)
        assert second.finish()
    cache = open_cache(path)
    assert cache.manifest["storage_dtype"] == {"0": "float32", "1": "float16"} and leftovers(path) == []
    layer = cache.layer(0)
    assert layer.dtype == np.float32
    np.testing.assert_array_equal(layer[[1, 6]], values[[1, 6]])  # exact, not float16-rounded
    others = [0, 2, 3, 4, 5, 7]
    np.testing.assert_array_equal(layer[others], values[others].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(cache.layer(1), (values / 1e6).astype(np.float16))


def test_merge_refuses_ledgers_that_miss_batches(workspace, make_entity_table):
    table = make_entity_table(workspace, texts(8))
    path = workspace.activations / "gap"
    with _open_shard(path, table, 0) as first, _open_shard(path, table, 1) as second:
        first.commit(2, 4, done=True)
        assert not first.finish()
        second.commit(1, 2, done=True)  # claims done after one of its two batches
        with pytest.raises(WorldprobeError, match=r"do not cover the cache's 4 batches of 2 \(6 of 8 rows\)"):
            second.finish()
    assert not cache_mod.read_manifest(path)["complete"]
