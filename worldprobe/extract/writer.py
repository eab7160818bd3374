"""Writing an activation cache (the format ``worldprobe.extract.cache`` reads): ``CacheWriter`` preallocates the
layer files, writes rows at their cache index, commits a ledger so a killed run resumes, and seals the manifest with
every file's size and sha256 last; shards of one cache write disjoint batches of the same files and the last one
merges them (``merge_shards``); ``remove_cache`` deletes a cache no reader holds.
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from worldprobe.checksums import files_record
from worldprobe.errors import WorldprobeError
from worldprobe.extract.cache import (
    ENTITIES,
    FORMAT_VERSION,
    LOCK,
    MANIFEST,
    PROGRESS,
    READ_LOCK,
    SETUP_LOCK,
    CacheIdentity,
    layer_file,
    n_batches,
    read_manifest,
    shard_batches,
    shard_name,
)
from worldprobe.extract.options import Shard, check_shard

FLOAT16_MAX = float(np.finfo(np.float16).max)


def ledger_file(shard: Shard) -> str:
    return PROGRESS if shard[1] == 1 else f"progress.{shard_name(shard)}.json"


def lock_file(shard: Shard) -> str:
    return LOCK if shard[1] == 1 else f"{LOCK}.{shard_name(shard)}"


def overflow_file(shard: Shard, layer: int) -> str:
    """Rows of ``layer`` beyond the float16 range written by a shard, as float32 records (row, values)."""
    return f"overflow.{shard_name(shard)}.{layer_file(layer).removesuffix('.npy')}.bin"


def _overflow_dtype(d_model: int) -> np.dtype:
    return np.dtype([("row", "<i8"), ("values", "<f4", (d_model,))])


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise _disk_error(error, path) from None
    os.replace(tmp, path)


def _disk_error(error: OSError, file: Path) -> Exception:
    """A full disk or quota as one WorldprobeError naming the file; other OS errors unchanged."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(file.parent).free
        return WorldprobeError(f"the disk is full ({_size(free)} free)", file=file,
                               hint="free some space (or use another --workspace) and run the same command again")
    return error


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def allocate(file: Path) -> None:
    """Reserve the disk blocks of ``file`` (already at its full length) so that writing through a memory map can
    never hit a full disk (which kills the process with SIGBUS); a full disk is a WorldprobeError here instead."""
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: the free-space check before creating must do
        return
    with open(file, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as error:
            if error.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system without fallocate
                return
            raise _disk_error(error, file) from None


@contextmanager
def _setup_locked(path: Path) -> Iterator[None]:
    """Hold the cache-wide setup lock (blocking; released by the OS even on ``kill -9``)."""
    with open(path / SETUP_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _release_pages(array: np.memmap) -> None:
    """Unmap written pages from this process (the data stays in the page cache and the file; msync still writes it):
    RSS does not grow with the cache."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


@dataclass
class CacheWriter:
    """Writes one cache, or one shard of it: preallocated memmaps, rows at their cache index, a ledger after each
    flushed chunk.

    Use as a context manager: it takes its lock file (``fcntl.flock``, released by the OS even on ``kill -9``), so a
    second writer of the same cache (or shard) is refused. A shard writer never rewrites a layer file: rows beyond
    the float16 range go to its overflow side file and the merge widens the layer once.
    """

    path: Path
    manifest: dict[str, Any]
    shard: Shard = (0, 1)
    batch_size: int | None = None
    arrays: dict[int, np.memmap] = field(default_factory=dict)
    _lock: Any = None
    _overflow: dict[int, int] = field(default_factory=dict)  # layer -> records in its side file

    @classmethod
    def open(
        cls,
        path: Path,
        manifest: dict[str, Any],
        entities: pd.DataFrame,
        *,
        shard: Shard | None = None,
        batch_size: int | None = None,
    ) -> CacheWriter:
        """Start a new cache in ``path`` or reopen an unfinished one with the same identity (refused otherwise).

        The first writer creates the files and records the number of shards and ``batch_size`` in the manifest;
        later writers (other shards, a resumed run) reuse them. A finished cache opens with :attr:`complete` set
        and nothing to write.
        """
        writer = cls(path, manifest, check_shard(shard))
        if writer.sharded and not batch_size:
            raise ValueError("a shard writer needs the batch size (every shard must use the same)")
        path.mkdir(parents=True, exist_ok=True)
        with _setup_locked(path):
            if (path / MANIFEST).exists():
                writer.manifest = writer._check_found(read_manifest(path))
            else:
                writer._create(entities, batch_size)
            if writer.complete:
                return writer
            writer._acquire()
        ledger = writer.progress
        writer.batch_size = writer.manifest.get("batch_size") or ledger.get("batch_size") or batch_size
        writer._open_arrays()
        writer._open_overflow(ledger)
        return writer

    def _check_found(self, found: dict[str, Any]) -> dict[str, Any]:
        """The existing manifest, if it has this writer's identity and (unless finished) its number of shards."""
        differences = CacheIdentity.of(found).differences(CacheIdentity.of(self.manifest))
        if differences:
            raise WorldprobeError(
                "an activation cache with different settings is in the way: " + "; ".join(differences),
                file=self.path, hint="delete that folder or change the request",
            )  # fmt: skip
        shards = int(found.get("shards", 1))
        if not found.get("complete") and shards != self.shard[1]:
            how = "by one unsharded writer" if shards == 1 else f"in {shards} shards"
            asked = "without shards" if self.shard[1] == 1 else f"in {self.shard[1]} shards"
            raise WorldprobeError(
                f"this unfinished activation cache is being written {how}; it cannot be continued {asked}",
                file=self.path, hint=f"run it with shards = {shards}, or delete the folder to start again",
            )  # fmt: skip
        return found

    def _create(self, entities: pd.DataFrame, batch_size: int | None) -> None:
        """Entity table and preallocated layer files first, the manifest last: a manifest means a usable cache.
        Too little free disk for the layer files is refused before anything is written."""
        self.manifest["storage_dtype"] = {str(layer): "float16" for layer in self.manifest["layers"]}
        shape = (int(self.manifest["n_entities"]), int(self.manifest["d_model"]))
        needed = len(self.manifest["layers"]) * (shape[0] * shape[1] * 2 + 128)
        free = shutil.disk_usage(self.path).free
        if needed > free:
            raise WorldprobeError(
                f"the activation cache needs {_size(needed)} of disk, {_size(free)} is free", file=self.path,
                hint="free some space, use another --workspace, or cache fewer --layers or entities (--limit)",
            )  # fmt: skip
        try:
            entities.to_parquet(self.path / ENTITIES, index=False)
            for layer in self.manifest["layers"]:
                file = self.path / layer_file(layer)
                np.lib.format.open_memmap(file, mode="w+", dtype=np.float16, shape=shape).flush()
                allocate(file)
        except BaseException as error:
            for layer in self.manifest["layers"]:  # no half-made layer files left behind (no manifest was written)
                (self.path / layer_file(layer)).unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise _disk_error(error, self.path) from None
            raise
        self.manifest.update(complete=False, shards=self.shard[1])
        if batch_size:
            self.manifest["batch_size"] = int(batch_size)
        _write_json(self.path / MANIFEST, self.manifest)

    @property
    def sharded(self) -> bool:
        return self.shard[1] > 1

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def batches(self) -> tuple[int, int]:
        """[start, stop) of the global batch numbers this writer computes."""
        return shard_batches(int(self.manifest["n_entities"]), int(self.batch_size or 1), self.shard)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.arrays.clear()
        self._release()

    def _acquire(self) -> None:
        lock = self.path / lock_file(self.shard)
        handle = open(lock, "a+")  # noqa: SIM115 (held open for the whole write)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            what = f"{shard_name(self.shard)} of this activation cache" if self.sharded else "this activation cache"
            raise WorldprobeError(
                f"another process is writing {what}", file=lock,
                hint="wait for it to finish (the lock is released when it exits)",
            ) from None  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def _release(self) -> None:
        if self._lock is not None:
            (self.path / lock_file(self.shard)).unlink(missing_ok=True)
            self._lock.close()
            self._lock = None

    def _open_arrays(self) -> None:
        for layer in self.manifest["layers"]:
            allocate(self.path / layer_file(layer))  # also caches begun by a version that did not preallocate
            self.arrays[layer] = np.load(self.path / layer_file(layer), mmap_mode="r+")

    def _open_overflow(self, ledger: dict[str, Any]) -> None:
        """Cut each overflow side file back to the records the ledger committed (later rows are recomputed)."""
        if not self.sharded:
            return
        committed = ledger.get("overflow", {})
        itemsize = _overflow_dtype(int(self.manifest["d_model"])).itemsize
        for layer in self.manifest["layers"]:
            file = self.path / overflow_file(self.shard, layer)
            count = int(committed.get(str(layer), 0))
            if file.exists():
                os.truncate(file, count * itemsize)
            self._overflow[layer] = count

    @property
    def progress(self) -> dict[str, Any]:
        """This writer's ledger: ``batches_done`` (from its first batch), ``rows_done``, ``batch_size``, ``done``,
        and for a shard its batch range and overflow record counts (empty for a new cache or shard)."""
        file = self.path / ledger_file(self.shard)
        return json.loads(file.read_text()) if file.exists() else {}

    def write(self, layer: int, rows: np.ndarray, values: np.ndarray) -> None:
        """Put ``values`` (len(rows), d_model) at cache rows ``rows``; values beyond float16 switch the layer to
        float32 (a shard keeps those rows in its side file until the merge)."""
        if not np.isfinite(values).all():
            raise WorldprobeError(
                f"the model produced inf/NaN activations at layer {layer}",
                hint="run with --dtype float32 or bfloat16 (float16 overflows on some models)",
            )
        array = self.arrays[layer]
        if array.dtype == np.float16 and np.abs(values).max(initial=0.0) > FLOAT16_MAX:
            if self.sharded:
                self._keep_overflow(layer, rows, values)
                values = np.clip(values, -FLOAT16_MAX, FLOAT16_MAX)
            else:
                array = self._widen(layer)
        array[rows] = values
        _release_pages(array)  # rows land on scattered pages: keep at most one batch of them resident

    def _keep_overflow(self, layer: int, rows: np.ndarray, values: np.ndarray) -> None:
        """Append the rows with values beyond float16 to this shard's side file, in float32."""
        over = np.abs(values).max(axis=1) > FLOAT16_MAX
        records = np.zeros(int(over.sum()), dtype=_overflow_dtype(values.shape[1]))
        records["row"], records["values"] = np.asarray(rows)[over], values[over]
        file = self.path / overflow_file(self.shard, layer)
        try:
            with open(file, "ab") as handle:
                records.tofile(handle)
        except OSError as error:
            raise _disk_error(error, file) from None
        self._overflow[layer] += len(records)

    def _widen(self, layer: int) -> np.memmap:
        """Rewrite a float16 layer file as float32 (values beyond the float16 range must not become inf)."""
        del self.arrays[layer]
        self.arrays[layer] = _widen_file(self.path, layer)
        self.manifest["storage_dtype"][str(layer)] = "float32"
        _write_json(self.path / MANIFEST, self.manifest)
        return self.arrays[layer]

    def commit(self, batches_done: int, rows_done: int, *, done: bool = False) -> None:
        """Flush the memmaps, then record progress atomically (a crash after this loses nothing before it)."""
        for array in self.arrays.values():
            array.flush()
            _release_pages(array)
        ledger: dict[str, Any] = {"batches_done": batches_done, "rows_done": rows_done,
                                  "batch_size": self.batch_size, "done": done}  # fmt: skip
        if self.sharded:
            ledger.update(shard=list(self.shard), batches=list(self.batches),
                          overflow={str(k): v for k, v in self._overflow.items() if v})  # fmt: skip
        _write_json(self.path / ledger_file(self.shard), ledger)

    def finish(self, **extra: Any) -> bool:
        """Mark the cache complete (sizes and checksums of its files in the manifest) and drop the ledger; return
        True. Refused unless the ledger covers every row. A shard (after ``commit(..., done=True)``) merges instead
        when every shard is done, and returns whether the cache is now complete."""
        if self.sharded:
            if not self.progress.get("done"):
                raise ValueError("commit(..., done=True) before finishing a shard")
            return merge_shards(self.path)
        _check_ledger(self.path, self.manifest, self.progress, self.batch_size)
        for array in self.arrays.values():
            array.flush()
        with _setup_locked(self.path):
            self.manifest.update(extra)
            _seal(self.path, self.manifest)
            (self.path / PROGRESS).unlink(missing_ok=True)
            (self.path / SETUP_LOCK).unlink(missing_ok=True)
        return True


def _check_ledger(path: Path, manifest: dict[str, Any], ledger: dict[str, Any], batch_size: int | None) -> None:
    """A cache is finished only when its ledger says every row (and every batch) was written."""
    n = int(manifest["n_entities"])
    rows, batches = ledger.get("rows_done"), ledger.get("batches_done")
    short = rows != n or (batch_size is not None and batch_size > 0 and batches != n_batches(n, batch_size))
    if short or (batch_size is not None and batch_size < 1):
        raise WorldprobeError(
            f"the ledger covers {rows} of {n} rows ({batches} batches of {batch_size}); the cache is not finished",
            file=path / PROGRESS, hint="run the same extract command again to resume it",
        )  # fmt: skip


def _seal(path: Path, manifest: dict[str, Any]) -> None:
    """Record every row as written and each file's size and sha256, then mark the manifest complete (last)."""
    names = [ENTITIES, *(layer_file(layer) for layer in manifest["layers"])]
    manifest.update(rows_written=int(manifest["n_entities"]), files=files_record(path, names),
                    format_version=FORMAT_VERSION, complete=True)  # fmt: skip
    _write_json(path / MANIFEST, manifest)


def remove_cache(path: Path) -> None:
    """Delete the cache folder ``path`` (to rebuild it), unless a writer holds one of its locks or a reader (a probe,
    a notebook) has it open."""
    path = Path(path)
    if not path.exists():
        return
    with _setup_locked(path):
        with open(path / READ_LOCK, "a+") as readers:
            try:
                fcntl.flock(readers, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorldprobeError("another process is reading this activation cache (a probe, a notebook)",
                                      file=path, hint="let it finish (or close the notebook's cache) before "
                                      "rebuilding") from None  # fmt: skip
        for lock in path.glob(f"{LOCK}*"):
            with open(lock, "a+") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise WorldprobeError("another process is writing this activation cache", file=lock,
                                          hint="wait for it to finish before rebuilding") from None  # fmt: skip
        shutil.rmtree(path)


def _widen_file(path: Path, layer: int) -> np.memmap:
    """Rewrite a float16 layer file as float32 through a temporary file; return it opened for writing."""
    file = path / layer_file(layer)
    old = np.load(file, mmap_mode="r")
    tmp = file.with_name(file.name + ".tmp")
    new = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=old.shape)
    try:
        allocate(tmp)
    except WorldprobeError:
        del new
        tmp.unlink(missing_ok=True)
        raise
    for start in range(0, old.shape[0], 8192):
        new[start : start + 8192] = old[start : start + 8192]
    new.flush()
    del old, new
    os.replace(tmp, file)
    return np.load(file, mmap_mode="r+")


def shard_done(path: Path, shard: Shard) -> bool:
    """Whether the ledger of ``shard`` in the cache folder ``path`` says it has written all its rows."""
    file = Path(path) / ledger_file(shard)
    return file.exists() and bool(json.loads(file.read_text()).get("done"))


def merge_shards(path: Path) -> bool:
    """Complete a sharded cache once every shard's ledger says done: check that the shards cover every batch, write
    the overflow rows (float32 layers), mark the manifest complete, remove the shard files. Returns whether the cache
    is complete; safe to call again after a crash at any point."""
    path = Path(path)
    with _setup_locked(path):
        manifest = read_manifest(path)
        if manifest.get("complete"):
            return True
        count = int(manifest.get("shards", 1))
        shards = [(index, count) for index in range(count)]
        if count == 1 or not all(shard_done(path, shard) for shard in shards):
            return False
        ledgers = {shard: json.loads((path / ledger_file(shard)).read_text()) for shard in shards}
        _check_coverage(path, manifest, ledgers)
        for layer in manifest["layers"]:
            if _apply_overflow(path, manifest, layer, ledgers):
                manifest["storage_dtype"][str(layer)] = "float32"
        _seal(path, manifest)
        for shard in shards:
            (path / ledger_file(shard)).unlink()
            for layer in manifest["layers"]:
                (path / overflow_file(shard, layer)).unlink(missing_ok=True)
        (path / SETUP_LOCK).unlink(missing_ok=True)
    return True


def _check_coverage(path: Path, manifest: dict[str, Any], ledgers: dict[Shard, dict[str, Any]]) -> None:
    """The shards' batch ranges tile all batches, each shard did all of its batches, and the rows add up."""
    n, batch_size = int(manifest["n_entities"]), int(manifest["batch_size"])
    problems = [
        f"{shard_name(shard)} covers {ledger.get('batches')} with {ledger.get('batches_done')} batches done"
        for shard, ledger in ledgers.items()
        if ledger.get("batches") != list(shard_batches(n, batch_size, shard))
        or ledger.get("batches_done") != ledger["batches"][1] - ledger["batches"][0]
        or ledger.get("batch_size") != batch_size
    ]
    rows = sum(int(ledger.get("rows_done", 0)) for ledger in ledgers.values())
    if problems or rows != n:
        raise WorldprobeError(
            f"the shard ledgers do not cover the cache's {n_batches(n, batch_size)} batches of {batch_size} "
            f"({rows} of {n} rows): " + "; ".join(problems), file=path, hint="delete the folder and extract it again",
        )  # fmt: skip


def _apply_overflow(path: Path, manifest: dict[str, Any], layer: int, ledgers: dict[Shard, dict[str, Any]]) -> bool:
    """Widen ``layer`` to float32 (once) and write the shards' overflow rows into it; False when there are none."""
    dtype = _overflow_dtype(int(manifest["d_model"]))
    parts = []
    for shard, ledger in ledgers.items():
        expected = int(ledger.get("overflow", {}).get(str(layer), 0))
        file = path / overflow_file(shard, layer)
        records = np.fromfile(file, dtype, count=expected) if expected and file.exists() else np.zeros(0, dtype)
        if len(records) != expected:
            raise WorldprobeError(f"{file.name} holds {len(records)} of {expected} rows", file=file,
                                  hint="delete the folder and extract it again")  # fmt: skip
        parts.append(records)
    records = np.concatenate(parts)
    if not len(records):
        return False
    array = np.load(path / layer_file(layer), mmap_mode="r+")
    if array.dtype == np.float16:
        del array
        array = _widen_file(path, layer)
    array[records["row"]] = records["values"]
    array.flush()
    return True
