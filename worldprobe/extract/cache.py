"""The activation cache on disk: manifest, entity table, one preallocated ``layer_XXX.npy`` memmap per layer, an
atomic progress ledger and a lock file. Read it with :func:`open_cache` / :func:`find_cache`."""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from worldprobe.errors import WorldprobeError
from worldprobe.workspace import Workspace, as_workspace

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
ENTITIES = "entities.parquet"
LOCK = ".lock"
FLOAT16_MAX = float(np.finfo(np.float16).max)
IDENTITY_FIELDS = (
    "dataset", "dataset_fingerprint", "model", "model_source", "quantization", "dtype", "prompt", "aggregation",
    "seed", "n_entities", "entity_order_sha256", "layers", "n_layers", "d_model",
)  # fmt: skip
"""Manifest fields that define what a cache holds; a request that differs in any of them is refused."""


def layer_file(layer: int) -> str:
    return f"layer_{layer:03d}.npy"


def entity_order_sha256(entity_ids: pd.Series) -> str:
    """Hash of the entity ids in cache order (detects any change of rows or of their order)."""
    return hashlib.sha256("\n".join(map(str, entity_ids)).encode()).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


def cache_key(identity: dict[str, Any], *, all_layers: bool = True) -> str:
    """Folder name of a cache: readable parts plus a hash of the identity (layers count only when a subset)."""
    hashed = {k: identity.get(k) for k in IDENTITY_FIELDS if all_layers is False or k != "layers"}
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:12]
    quant = f"-{identity['quantization']}" if identity.get("quantization") else ""
    parts = [identity["dataset"], _slug(str(identity["model"])), identity["prompt"], identity["aggregation"]]
    return "__".join([*parts, f"{identity['dtype']}{quant}", digest])


def diff_identity(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Human-readable differences between a cache's manifest and a request, one per field."""
    return [
        f"{k}: cache has {found.get(k)!r}, request has {wanted.get(k)!r}"
        for k in IDENTITY_FIELDS
        if k in wanted and _normal(found.get(k)) != _normal(wanted.get(k))
    ]


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_manifest(path: Path) -> dict[str, Any]:
    file = Path(path) / MANIFEST
    if not file.exists():
        raise WorldprobeError("not an activation cache (no manifest.json)", file=path)
    return json.loads(file.read_text())


@dataclass
class ActivationCache:
    """A finished activation cache: manifest, entity table in cache order, lazy read-only per-layer arrays."""

    path: Path
    manifest: dict[str, Any]

    @property
    def layers(self) -> list[int]:
        return list(self.manifest["layers"])

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks of the model (layer ids run 0..n_layers)."""
        return int(self.manifest["n_layers"])

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def n_entities(self) -> int:
        return int(self.manifest["n_entities"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @cached_property
    def entities(self) -> pd.DataFrame:
        """The entity table rows in cache order (row i of every layer array is entity i)."""
        return pd.read_parquet(self.path / ENTITIES)

    def layer(self, layer: int) -> np.memmap:
        """Activations of ``layer`` (n_entities, d_model) as a read-only memmap (float16 or float32)."""
        if layer not in self.manifest["layers"]:
            raise WorldprobeError(
                f"layer {layer} is not in this cache", file=self.path, hint=f"cached layers: {self.layers}"
            )
        return np.load(self.path / layer_file(layer), mmap_mode="r")

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"ActivationCache({m['dataset']}, {m['model']}, prompt={m['prompt']}, {m['n_entities']} entities, "
            f"layers {self.layers[0]}..{self.layers[-1]}, d={m['d_model']}, path={self.path})"
        )


def open_cache(path: str | Path, *, allow_incomplete: bool = False) -> ActivationCache:
    """Open the cache folder ``path``; refuses an unfinished cache unless ``allow_incomplete``."""
    path = Path(path)
    manifest = read_manifest(path)
    if not manifest.get("complete") and not allow_incomplete:
        raise WorldprobeError(
            "this activation cache is not finished", file=path, hint="re-run the same extract command to resume it"
        )
    return ActivationCache(path, manifest)


def extract_command(dataset: str, model: str, prompt: str = "empty", aggregation: str = "last", **key: Any) -> str:
    """The ``worldprobe extract`` command line that builds a cache with these settings."""
    parts = ["worldprobe extract", f"--dataset {dataset}", f"--model {model}"]
    if prompt != "empty":
        parts.append(f"--prompt {prompt}")
    if aggregation == "mean":
        parts.append("--mean")
    if key.get("dtype") not in (None, "auto"):
        parts.append(f"--dtype {key['dtype']}")
    if key.get("quantization"):
        parts.append(f"--load-in-{key['quantization']}")
    return " ".join(parts)


def find_cache(
    workspace: Workspace | str | Path | None,
    dataset: str,
    model: str,
    prompt: str = "empty",
    aggregation: str = "last",
    **key: Any,
) -> Path:
    """The finished cache of ``dataset`` x ``model`` x ``prompt`` x ``aggregation`` in the workspace.

    ``key`` narrows the search by other manifest fields (``dtype``, ``quantization``, ``seed``, ``n_entities``) or
    ``layers`` (the cache must hold all of them). When the dataset is built in the workspace, only caches of that
    exact table (same fingerprint) count. Among several matches the one with the most entities, then the most layers,
    wins. Raises a WorldprobeError with the extract command to run when there is none.
    """
    ws = as_workspace(workspace)
    fingerprint = _dataset_fingerprint(ws, dataset)
    wanted_layers = set(key.pop("layers", []) or [])
    matches, unfinished = [], []
    for manifest_file in sorted(ws.activations.glob(f"*/{MANIFEST}")):
        manifest = json.loads(manifest_file.read_text())
        fixed = {"dataset": dataset, "model": model, "prompt": prompt, "aggregation": aggregation, **key}
        if any(_normal(manifest.get(k)) != _normal(v) for k, v in fixed.items()):
            continue
        if fingerprint is not None and manifest.get("dataset_fingerprint") != fingerprint:
            continue
        if not wanted_layers <= set(manifest["layers"]):
            continue
        (matches if manifest.get("complete") else unfinished).append((manifest_file.parent, manifest))
    if matches:
        matches.sort(key=lambda pm: (-pm[1]["n_entities"], -len(pm[1]["layers"]), pm[0].name))
        return matches[0][0]
    command = extract_command(dataset, model, prompt, aggregation, **key)
    state = "is not finished" if unfinished else "does not exist yet"
    raise WorldprobeError(
        f"the activation cache of {dataset} x {model} (prompt {prompt}, {aggregation} token) {state}",
        file=ws.activations, hint=f"run `{command}`" + (" to resume it" if unfinished else ""),
    )  # fmt: skip


def _dataset_fingerprint(ws: Workspace, dataset: str) -> str | None:
    report = ws.dataset_report(dataset)
    if not report.exists():
        return None
    return json.loads(report.read_text()).get("fingerprint") or None


def _release_pages(array: np.memmap) -> None:
    """Unmap written pages from this process (the data stays in the page cache and the file; msync still writes it):
    RSS does not grow with the cache."""
    mapping = getattr(array, "_mmap", None)
    if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


@dataclass
class CacheWriter:
    """Writes one cache: preallocated memmaps, rows at their cache index, ledger after each flushed chunk.

    Use as a context manager: it takes the lock file (``fcntl.flock``, released by the OS even on ``kill -9``).
    """

    path: Path
    manifest: dict[str, Any]
    arrays: dict[int, np.memmap] = field(default_factory=dict)
    _lock: Any = None

    @classmethod
    def open(cls, path: Path, manifest: dict[str, Any], entities: pd.DataFrame) -> CacheWriter:
        """Start a new cache in ``path`` or reopen an unfinished one with the same identity (refused otherwise)."""
        path.mkdir(parents=True, exist_ok=True)
        writer = cls(path, manifest)
        writer._acquire()
        if (path / MANIFEST).exists():
            found = read_manifest(path)
            differences = diff_identity(found, manifest)
            if differences:
                writer._release()
                raise WorldprobeError(
                    "an activation cache with different settings is in the way: " + "; ".join(differences),
                    file=path, hint="delete that folder or change the request",
                )  # fmt: skip
            writer.manifest = found
        else:
            entities.to_parquet(path / ENTITIES, index=False)
            manifest["storage_dtype"] = {str(layer): "float16" for layer in manifest["layers"]}
            manifest["complete"] = False
            _write_json(path / MANIFEST, manifest)
        writer._open_arrays()
        return writer

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.arrays.clear()
        self._release()

    def _acquire(self) -> None:
        handle = open(self.path / LOCK, "a+")  # noqa: SIM115 (held open for the whole write)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise WorldprobeError(
                "another process is writing this activation cache", file=self.path / LOCK,
                hint="wait for it to finish (the lock is released when it exits)",
            ) from None  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock = handle

    def _release(self) -> None:
        if self._lock is not None:
            (self.path / LOCK).unlink(missing_ok=True)
            self._lock.close()
            self._lock = None

    def _open_arrays(self) -> None:
        shape = (int(self.manifest["n_entities"]), int(self.manifest["d_model"]))
        for layer in self.manifest["layers"]:
            file = self.path / layer_file(layer)
            dtype = np.dtype(self.manifest["storage_dtype"][str(layer)])
            if file.exists():
                self.arrays[layer] = np.load(file, mmap_mode="r+")
            else:
                self.arrays[layer] = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)

    @property
    def progress(self) -> dict[str, Any]:
        """The ledger: ``batches_done``, ``rows_done`` and the batch size used (empty for a new cache)."""
        file = self.path / PROGRESS
        return json.loads(file.read_text()) if file.exists() else {}

    def write(self, layer: int, rows: np.ndarray, values: np.ndarray) -> None:
        """Put ``values`` (len(rows), d_model) at cache rows ``rows``; switch the layer to float32 if needed."""
        if not np.isfinite(values).all():
            raise WorldprobeError(
                f"the model produced inf/NaN activations at layer {layer}",
                hint="run with --dtype float32 or bfloat16 (float16 overflows on some models)",
            )
        array = self.arrays[layer]
        if array.dtype == np.float16 and np.abs(values).max(initial=0.0) > FLOAT16_MAX:
            array = self._widen(layer)
        array[rows] = values
        _release_pages(array)  # rows land on scattered pages: keep at most one batch of them resident

    def _widen(self, layer: int) -> np.memmap:
        """Rewrite a float16 layer file as float32 (values beyond the float16 range must not become inf)."""
        old = self.arrays.pop(layer)
        file = self.path / layer_file(layer)
        tmp = file.with_name(file.name + ".tmp")
        new = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=old.shape)
        for start in range(0, old.shape[0], 8192):
            new[start : start + 8192] = old[start : start + 8192]
        new.flush()
        del old, new
        os.replace(tmp, file)
        self.manifest["storage_dtype"][str(layer)] = "float32"
        _write_json(self.path / MANIFEST, self.manifest)
        self.arrays[layer] = np.load(file, mmap_mode="r+")
        return self.arrays[layer]

    def commit(self, batches_done: int, rows_done: int, batch_size: int) -> None:
        """Flush the memmaps, then record progress atomically (a crash after this loses nothing before it)."""
        for array in self.arrays.values():
            array.flush()
            _release_pages(array)
        _write_json(
            self.path / PROGRESS, {"batches_done": batches_done, "rows_done": rows_done, "batch_size": batch_size}
        )

    def finish(self, **extra: Any) -> None:
        """Mark the cache complete and drop the ledger."""
        for array in self.arrays.values():
            array.flush()
        self.manifest.update(extra, complete=True)
        _write_json(self.path / MANIFEST, self.manifest)
        (self.path / PROGRESS).unlink(missing_ok=True)
