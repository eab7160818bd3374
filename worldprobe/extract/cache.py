"""The activation cache on disk: manifest, entity table, one preallocated ``layer_XXX.npy`` memmap per layer, an
atomic progress ledger and a lock file. Read it with :func:`open_cache` / :func:`find_cache`.

A cache can be written by one writer or by K shard writers in separate processes at the same time: shard i takes a
contiguous range of the length-sorted batches (:func:`shard_batches`), so its rows are disjoint from the others', and
keeps its own lock, ledger and float16-overflow side file. The shard that finishes last merges (:func:`merge_shards`).

A cache is finished only when the ledgers cover every row; finishing records each file's size and sha256 in the
manifest. Every open checks completeness, sizes, shapes and (through remembered checksums, re-read only for files
whose stat stamp changed) the contents (:func:`cache_problems`); ``worldprobe verify`` re-reads every file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import mmap
import os
import re
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from worldprobe.checks import FLAG, NAME, PathRule, Rule, checked_arguments
from worldprobe.checksums import file_problem, files_record
from worldprobe.config import RANDOM_PREFIX
from worldprobe.errors import WorldprobeError
from worldprobe.workspace import WORKSPACE, Workspace, as_workspace

FORMAT_VERSION = 2  # 2: rows_written and per-file sizes and sha256 in the manifest
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
ENTITIES = "entities.parquet"
LOCK = ".lock"
SETUP_LOCK = ".setup.lock"  # held briefly by every writer to create, reopen or merge the cache
READ_LOCK = ".read.lock"  # held shared by every open ActivationCache, so --rebuild cannot delete a cache being read
FLOAT16_MAX = float(np.finfo(np.float16).max)
AGGREGATIONS = ("last", "mean")
"""Which token of an entity a cache holds: its last token, or the mean over its tokens."""
AGGREGATION = Rule(str, choices=AGGREGATIONS, optional=False)
OLD_FORMAT = "written by an older worldprobe without file checksums"


@dataclass(frozen=True)
class CacheIdentity:
    """What an activation cache holds: a request that differs in any field is refused, a cache whose identity changes
    gets another folder (:meth:`key`) and its probe results another run key. ``model_source`` carries the weights'
    checksum (local folders, GGUF files) or the hub revision and its commit; ``seed`` is set only where it changes
    the activations (random prompt tokens, random weights). The manifest holds these fields among others."""

    dataset: str
    dataset_fingerprint: str | None
    model: str
    model_source: Mapping[str, Any] | None
    quantization: str | None
    dtype: str
    prompt: str
    prompt_template: Mapping[str, Any] | None
    aggregation: str
    seed: int | None
    n_entities: int
    entity_order_sha256: str
    layers: tuple[int, ...]
    n_layers: int
    d_model: int

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> CacheIdentity:
        """The identity recorded in a manifest (fields it lacks, as in an older one, are None)."""
        values = {name: manifest.get(name) for name in IDENTITY_FIELDS}
        values["layers"] = tuple(int(v) for v in values["layers"] or ())
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The fields as the manifest stores them (layers as a list)."""
        return {name: list(value) if name == "layers" else value for name, value in self.__dict__.items()}

    def key(self, *, all_layers: bool = True) -> str:
        """Folder name of the cache: readable parts plus a hash of the identity (the layers count only when the cache
        holds a subset of them)."""
        hashed = {k: v for k, v in self.as_dict().items() if all_layers is False or k != "layers"}
        digest = hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:12]
        quant = f"-{self.quantization}" if self.quantization else ""
        parts = [self.dataset, _slug(str(self.model)), self.prompt, self.aggregation]
        return "__".join([*parts, f"{self.dtype}{quant}", digest])

    def differences(self, other: CacheIdentity, *, ignore: tuple[str, ...] = ()) -> list[str]:
        """Human-readable differences from ``other`` (this is the cache, ``other`` the request), one per field."""
        mine, theirs = self.as_dict(), other.as_dict()
        return [f"{k}: cache has {mine[k]!r}, request has {theirs[k]!r}" for k in IDENTITY_FIELDS
                if k not in ignore and _normal(mine[k]) != _normal(theirs[k])]  # fmt: skip

    def strict(self) -> str:
        """The identity without the fields in which several caches of one request may differ
        (:data:`LOOSE_FIELDS`), as one comparable string."""
        return json.dumps({k: _normal(v) for k, v in self.as_dict().items() if k not in LOOSE_FIELDS}, sort_keys=True)


IDENTITY_FIELDS = tuple(CacheIdentity.__dataclass_fields__)
"""The fields of :class:`CacheIdentity`, in order."""
LOOSE_FIELDS = ("layers", "n_entities", "entity_order_sha256")
"""Identity fields in which several finished caches of one request may differ (find_cache takes the largest)."""


def layer_file(layer: int) -> str:
    return f"layer_{layer:03d}.npy"


Shard = tuple[int, int]
"""(index, count): shard ``index`` (0-based) of ``count``; (0, 1) is the whole cache written by one writer."""


def check_shard(shard: Shard | None) -> Shard:
    """``shard`` as (index, count), (0, 1) for None; refuses a count below 1 or an index outside 0..count-1."""
    index, count = shard or (0, 1)
    if int(count) != count or count < 1 or int(index) != index or not 0 <= index < count:
        raise WorldprobeError(f"shard {shard} is not (index, count) with 0 <= index < count", field="shard")
    return int(index), int(count)


def shard_name(shard: Shard) -> str:
    """``shard-2-of-4`` for (1, 4): 1-based like the study's task labels."""
    return f"shard-{shard[0] + 1}-of-{shard[1]}"


def ledger_file(shard: Shard) -> str:
    return PROGRESS if shard[1] == 1 else f"progress.{shard_name(shard)}.json"


def lock_file(shard: Shard) -> str:
    return LOCK if shard[1] == 1 else f"{LOCK}.{shard_name(shard)}"


def overflow_file(shard: Shard, layer: int) -> str:
    """Rows of ``layer`` beyond the float16 range written by a shard, as float32 records (row, values)."""
    return f"overflow.{shard_name(shard)}.{layer_file(layer).removesuffix('.npy')}.bin"


def n_batches(n_entities: int, batch_size: int) -> int:
    return -(-n_entities // batch_size)


def shard_batches(n_entities: int, batch_size: int, shard: Shard) -> tuple[int, int]:
    """[start, stop) batch numbers of ``shard`` in the global length-sorted batch order: every batch is the one an
    unsharded run makes, so the rows are bit-identical to it."""
    total = n_batches(n_entities, batch_size)
    index, count = shard
    return index * total // count, (index + 1) * total // count


def _overflow_dtype(d_model: int) -> np.dtype:
    return np.dtype([("row", "<i8"), ("values", "<f4", (d_model,))])


def entity_order_sha256(entity_ids: pd.Series) -> str:
    """Hash of the entity ids in cache order (detects any change of rows or of their order)."""
    return hashlib.sha256("\n".join(map(str, entity_ids)).encode()).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


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


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the cache folder ``path``; an unreadable one is a WorldprobeError naming it."""
    file = Path(path) / MANIFEST
    if not file.exists():
        raise WorldprobeError("not an activation cache (no manifest.json)", file=path)
    try:
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WorldprobeError(f"unreadable manifest ({type(error).__name__}: {error})", file=file,
                              hint="delete that cache folder; extract it again if you need it") from None  # fmt: skip
    problem = _manifest_problem(manifest)
    if problem:
        raise WorldprobeError(f"broken manifest: {problem}", file=file,
                              hint="delete that cache folder; extract it again if you need it")  # fmt: skip
    return manifest


def _manifest_problem(manifest: Any) -> str | None:
    if not isinstance(manifest, dict):
        return f"a JSON {type(manifest).__name__}, not an object"
    for key, kind in (("layers", list), ("n_entities", int), ("d_model", int)):
        if not isinstance(manifest.get(key), kind):
            return f"'{key}' is {manifest.get(key)!r}"
    return None


def iter_manifests(ws: Workspace) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(folder, manifest) of every cache folder in the workspace; an unreadable manifest is skipped with a warning
    naming it, so one damaged folder never stops work on the others."""
    for manifest_file in sorted(ws.activations.glob(f"*/{MANIFEST}")):
        try:
            yield manifest_file.parent, read_manifest(manifest_file.parent)
        except WorldprobeError as error:
            warnings.warn(f"skipping activation cache: {error}", stacklevel=2)


@dataclass
class ActivationCache:
    """A finished activation cache: manifest, entity table in cache order, lazy read-only per-layer arrays."""

    path: Path
    manifest: dict[str, Any]
    _reading: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._reading = _read_lock(self.path)

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


@checked_arguments(path=PathRule(optional=False), allow_incomplete=FLAG)
def open_cache(path: str | Path, *, allow_incomplete: bool = False) -> ActivationCache:
    """Open the cache folder ``path``; refuses an unfinished cache unless ``allow_incomplete``, and a finished one
    that fails the cheap integrity check (:func:`cache_problems`), naming the file and the command that rebuilds it."""
    path = Path(path)
    manifest = read_manifest(path)
    if not manifest.get("complete"):
        if allow_incomplete:
            return ActivationCache(path, manifest)
        raise WorldprobeError(
            "this activation cache is not finished", file=path, hint="re-run the same extract command to resume it"
        )
    refuse_damaged(path, manifest)
    return ActivationCache(path, manifest)


def refuse_damaged(path: Path, manifest: dict[str, Any], *, full: bool = False) -> None:
    """Raise a WorldprobeError naming the first damaged file of a finished cache and the command that rebuilds it."""
    problems = cache_problems(path, manifest, full=full)
    if problems:
        file, problem = problems[0]
        raise WorldprobeError(f"damaged activation cache: {problem}", file=file,
                              hint=f"rebuild it: `{rebuild_command(manifest, path)}`")  # fmt: skip


def cache_problems(path: Path, manifest: dict[str, Any], *, full: bool = False) -> list[tuple[Path, str]]:
    """(file, problem) for everything wrong with a finished cache; empty when it is intact.

    Checked: the ledgers covered every row, every recorded file is there with its size, each layer file's header
    has the manifest's shape and storage dtype, the entity table has n_entities rows, and each file has its
    recorded sha256 (remembered while its stat stamp is unchanged; ``full`` re-reads every file).
    """
    path = Path(path)
    files = manifest.get("files")
    if int(manifest.get("format_version", 1)) < FORMAT_VERSION or not isinstance(files, dict):
        return [(path / MANIFEST, OLD_FORMAT)]
    n, d = int(manifest["n_entities"]), int(manifest["d_model"])
    if manifest.get("rows_written") != n:
        return [(path / MANIFEST, f"{manifest.get('rows_written')} of {n} rows were written")]
    expected = {ENTITIES, *(layer_file(layer) for layer in manifest["layers"])}
    if set(files) != expected:
        return [(path / MANIFEST, f"records files {sorted(files)}, expected {sorted(expected)}")]
    problems = []
    for name in sorted(files):
        file, entry = path / name, files[name]
        problem = file_problem(file, None, int(entry["bytes"]))
        if problem is None and name != ENTITIES:
            layer = int(name.removeprefix("layer_").removesuffix(".npy"))
            problem = _header_problem(file, (n, d), manifest.get("storage_dtype", {}).get(str(layer), "float16"))
        if problem is None and name == ENTITIES:
            problem = _entities_problem(file, n)
        if problem is None:
            problem = file_problem(file, str(entry["sha256"]), full=full)
        if problem is not None:
            problems.append((file, problem))
    return problems


def _header_problem(file: Path, shape: tuple[int, int], dtype: str) -> str | None:
    try:
        with open(file, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            found_shape, fortran, found_dtype = read(handle)
    except (OSError, ValueError) as error:
        return f"{file.name} is not a readable .npy file ({error})"
    if tuple(found_shape) != shape or np.dtype(found_dtype) != np.dtype(dtype) or fortran:
        return f"{file.name} holds {found_dtype} {tuple(found_shape)}, the manifest says {dtype} {shape}"
    return None


def _entities_problem(file: Path, n: int) -> str | None:
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(file).metadata.num_rows
    except (OSError, ValueError) as error:
        return f"{file.name} is not a readable parquet file ({error})"
    return None if rows == n else f"{file.name} has {rows} rows, the manifest says {n}"


def extract_command(dataset: str, model: str, prompt: str = "empty", aggregation: str = "last", **key: Any) -> str:
    """The ``worldprobe extract`` command line that builds a cache with these settings (``key``: dtype,
    quantization, layers, limit, seed, revision, gguf_file, rebuild)."""
    parts = ["worldprobe extract", f"--dataset {dataset}", f"--model {model}"]
    if prompt != "empty":
        parts.append(f"--prompt {prompt}")
    if aggregation == "mean":
        parts.append("--mean")
    if key.get("dtype") not in (None, "auto"):
        parts.append(f"--dtype {key['dtype']}")
    if key.get("quantization"):
        parts.append(f"--load-in-{key['quantization']}")
    for option in ("layers", "limit", "seed", "revision", "gguf_file"):
        if key.get(option) is not None:
            parts.append(f"--{option.replace('_', '-')} {key[option]}")
    if key.get("rebuild"):
        parts.append("--rebuild")
    return " ".join(parts)


def _seed_option(manifest: dict[str, Any]) -> int | None:
    """The --seed that rebuilds a cache: its seed (random prompts or weights), else the seed of its --limit sample."""
    if manifest.get("seed") is not None:
        return int(manifest["seed"])
    return manifest.get("limit_seed") if manifest.get("limit") else None


def rebuild_command(manifest: dict[str, Any], path: Path | None = None) -> str:
    """The extract command that rebuilds the cache of ``manifest`` from scratch (``--rebuild``)."""
    layers = [int(v) for v in manifest.get("layers", [])]
    all_layers = layers == list(range(int(manifest.get("n_layers", -1)) + 1))
    source = manifest.get("model_source") or {}
    command = extract_command(
        str(manifest.get("dataset")), str(manifest.get("model")), str(manifest.get("prompt", "empty")),
        str(manifest.get("aggregation", "last")), dtype=manifest.get("dtype"),
        quantization=manifest.get("quantization"), layers=None if all_layers else ",".join(map(str, layers)),
        limit=manifest.get("limit"), seed=_seed_option(manifest), revision=source.get("revision"),
        gguf_file=manifest.get("gguf_file"), rebuild=True,
    )  # fmt: skip
    workspace = Path(path).parent.parent if path is not None else None
    if workspace is not None and workspace != Workspace.resolve().root:
        command = command.replace("worldprobe extract", f"worldprobe --workspace {workspace} extract", 1)
    return command


def parse_layers(spec: str | Sequence[int] | None, n_layers: int) -> list[int]:
    """``all`` | ``0,5,10`` | ``12:20`` (inclusive) | a list -> sorted layer ids in 0..n_layers."""
    if spec is None or spec == "all":
        return list(range(n_layers + 1))
    if isinstance(spec, str):
        chosen: list[int] = []
        try:
            for part in spec.split(","):
                if ":" in part:
                    lo, hi = (int(x) if x.strip() else d for x, d in zip(part.split(":"), (0, n_layers), strict=True))
                    chosen.extend(range(lo, hi + 1))
                else:
                    chosen.append(int(part))
        except ValueError:
            raise WorldprobeError(f"cannot read layers {spec!r}", field="layers", hint="all, 0,5,10 or 12:20") from None
    else:
        chosen = [int(x) for x in spec]
    bad = [x for x in chosen if not 0 <= x <= n_layers]
    if bad or not chosen:
        raise WorldprobeError(f"layers {bad or spec} outside 0..{n_layers}", field="layers")
    return sorted(set(chosen))


class MissingCacheError(WorldprobeError):
    """No finished cache answers the request (none yet, or one not finished); the hint names the command to run."""


@checked_arguments(dataset=NAME, model=NAME, prompt=NAME, workspace=WORKSPACE, aggregation=AGGREGATION)
def find_cache(
    dataset: str,
    model: str,
    prompt: str = "empty",
    aggregation: str = "last",
    *,
    workspace: Workspace | str | Path | None = None,
    prefer: Mapping[str, Any] | None = None,
    **key: Any,
) -> Path:
    """The finished cache of ``dataset`` x ``model`` x ``prompt`` x ``aggregation`` in the workspace (by default
    the one the CLI uses: ``$WORLDPROBE_WORKSPACE``, else ``./workspace``).

    ``key`` narrows the search by other manifest fields (``dtype``, ``quantization``, ``seed``, ``n_entities``),
    ``revision`` (a hub model's requested revision) or ``layers`` (the cache must hold all of them). ``prefer``
    (e.g. ``{"dtype": "bfloat16"}``) only settles a choice between several matches; alone, any match is taken. When the
    dataset is built in the workspace, only caches of that exact table (same fingerprint) count; for a model on disk
    (a folder or .gguf file) only caches of its current files (same checksum). Among several matches the one with
    the most entities, then the most layers, is taken when it holds every (asked) layer of the others and either more
    entities or the same sample; matches that differ in anything else (dtype, quantization, hub commit, seed, another
    sample of the same size, layers the largest lacks) are ambiguous and refused, naming them. Caches written by an
    older worldprobe (no checksums) are skipped with a warning. Raises a WorldprobeError with the extract command to
    run when there is none.
    """
    ws = as_workspace(workspace)
    fingerprint = _dataset_fingerprint(ws, dataset)
    wanted_layers = set(key.pop("layers", []) or [])
    revision = key.pop("revision", None)
    local = _local_source(model, key.get("gguf_file"))
    key.pop("gguf_file", None)
    fixed = {"dataset": dataset, "model": model, "prompt": prompt, "aggregation": aggregation}
    matches, unfinished, old, other = [], [], [], []
    for folder, manifest in iter_manifests(ws):
        if any(_normal(manifest.get(k)) != _normal(v) for k, v in fixed.items()):
            continue
        if any(_normal(manifest.get(k)) != _normal(v) for k, v in key.items()):
            if manifest.get("complete"):
                other.append(", ".join(f"{k} {manifest.get(k)}" for k in key))
            continue
        if fingerprint is not None and manifest.get("dataset_fingerprint") != fingerprint:
            continue
        source = manifest.get("model_source") or {}
        if local is not None and any(source.get(k) != v for k, v in local.items()):
            continue
        if revision is not None and source.get("revision") != revision:
            continue
        if not wanted_layers <= set(manifest["layers"]):
            continue
        if not manifest.get("complete"):
            unfinished.append(folder)
        elif int(manifest.get("format_version", 1)) < FORMAT_VERSION:
            old.append(folder)
        else:
            matches.append((folder, manifest))
    if old:
        warnings.warn(f"skipping {len(old)} activation cache(s) written by an older worldprobe without checksums "
                      f"(e.g. {old[0]}); delete them (extract makes new ones)", stacklevel=2)  # fmt: skip
    if matches:
        preferred = [(p, m) for p, m in matches
                     if all(_normal(m.get(k)) == _normal(v) for k, v in (prefer or {}).items())]  # fmt: skip
        matches = preferred or matches
        _refuse_ambiguous(matches)
        matches.sort(key=lambda pm: (-pm[1]["n_entities"], -len(pm[1]["layers"]), pm[0].name))
        _refuse_undominated(matches, wanted_layers)
        return matches[0][0]
    command = extract_command(dataset, model, prompt, aggregation, revision=revision, **key)
    state = "is not finished" if unfinished else "does not exist yet"
    asked = "".join(f", {k} {v}" for k, v in key.items())
    there = f" (there is one with {'; '.join(dict.fromkeys(other))})" if other and not unfinished else ""
    raise MissingCacheError(
        f"the activation cache of {dataset} x {model} (prompt {prompt}, {aggregation} token{asked}) {state}{there}",
        file=ws.activations, hint=f"run `{command}`" + (" to resume it" if unfinished else ""),
    )  # fmt: skip


def find_twin(
    manifest: Mapping[str, Any],
    *,
    seed: int,
    layers: Sequence[int] = (),
    workspace: Workspace | str | Path | None = None,
) -> Path:
    """The finished cache of the random-init twin (weights seeded with ``seed``) of the model cache with ``manifest``:
    same dataset build, prompt, aggregation and dtype, holding ``layers``. ``worldprobe.extract.extract_twin`` writes
    it (``worldprobe probe --control random_init`` and ``worldprobe run`` call it first); the error names both."""
    model = f"{RANDOM_PREFIX}{manifest['model']}"
    try:
        return find_cache(str(manifest["dataset"]), model, str(manifest.get("prompt", "empty")),
                          str(manifest.get("aggregation", "last")), workspace=workspace, dtype=manifest.get("dtype"),
                          seed=seed, layers=list(layers))  # fmt: skip
    except MissingCacheError as error:  # (several twins that differ: find_cache's error already says how to choose)
        raise MissingCacheError(
            f"{error.message}: the random_init control reads its twins' caches", file=error.file,
            hint=f"{error.hint}, or `worldprobe probe --control random_init ...`, which extracts the twins first "
            "(Python: worldprobe.extract.extract_twin)",
        ) from None


def find_pooled(manifest: Mapping[str, Any], *, workspace: Workspace | str | Path | None = None) -> Path:
    """The finished pooled-embedding companion of the model cache with ``manifest``: layer 0 averaged over each
    entity's tokens (aggregation ``mean``), same dataset build, model, prompt, dtype and quantization.
    ``worldprobe.extract.run_extraction`` writes it beside an unsharded cache, ``extract_pooled`` for any cache;
    ``worldprobe probe --control embedding`` and ``worldprobe run`` call it first."""
    narrow = {"dtype": manifest.get("dtype")}
    if manifest.get("quantization"):
        narrow["quantization"] = manifest["quantization"]
    try:
        return find_cache(str(manifest["dataset"]), str(manifest["model"]), str(manifest.get("prompt", "empty")),
                          "mean", workspace=workspace, layers=[0], **narrow)  # fmt: skip
    except MissingCacheError as error:
        command = extract_command(str(manifest["dataset"]), str(manifest["model"]),
                                  str(manifest.get("prompt", "empty")), "mean", **narrow)  # fmt: skip
        raise MissingCacheError(
            f"{error.message}: the embedding control reads layer 0 averaged over each entity's tokens",
            file=error.file, hint=f"run `{command} --layers 0`, or `worldprobe probe --control embedding ...`, which "
            "extracts it first (Python: worldprobe.extract.extract_pooled)",
        ) from None


def _local_source(model: str, gguf_file: str | None) -> dict[str, Any] | None:
    """The identifying part (kind, path/file, sha256) of a model on disk as it is now; None for presets/hub ids."""
    from worldprobe.extract.models import local_source

    source = local_source(model, gguf_file)
    return None if source is None else {k: source[k] for k in ("kind", "path", "file", "sha256") if k in source}


def _refuse_ambiguous(matches: list[tuple[Path, dict[str, Any]]]) -> None:
    """Several finished caches answer one request and differ in more than size: name them instead of guessing."""
    kinds = {CacheIdentity.of(m).strict(): p for p, m in matches}
    if len(kinds) > 1:
        first, second = (CacheIdentity.of(m).as_dict() for p, m in matches if p in list(kinds.values())[:2])
        differences = [f"{k}: {first[k]!r} vs {second[k]!r}" for k in IDENTITY_FIELDS
                       if k not in LOOSE_FIELDS and _normal(first[k]) != _normal(second[k])]  # fmt: skip
        raise WorldprobeError(
            f"{len(kinds)} finished activation caches answer this request and differ in " + "; ".join(differences),
            file=", ".join(str(p) for p in kinds.values()),
            hint="delete the cache folder(s) you do not mean, or ask for the setting (dtype, quantization, ...)",
        )  # fmt: skip


def _refuse_undominated(matches: list[tuple[Path, dict[str, Any]]], wanted_layers: set[int]) -> None:
    """Several caches of one build (sorted largest first) may be told apart only if the largest holds at least every
    layer of each other one and more entities or the same sample: a --limit subset or a subset of layers is then
    passed over, not guessed at. Two samples of the same size (another --limit seed) or a smaller cache with layers
    the larger lacks (of ``wanted_layers``, when layers were asked for) are refused, naming both."""
    best_path, best = matches[0]
    for path, other in matches[1:]:
        same_sample = other["entity_order_sha256"] == best["entity_order_sha256"]
        fewer = int(other["n_entities"]) < int(best["n_entities"])
        lacks = sorted((set(other["layers"]) - set(best["layers"])) & (wanted_layers or set(other["layers"])))
        if lacks or not (same_sample or fewer):
            why = (f"the one with more entities lacks layers {lacks}" if lacks else
                   f"both hold {best['n_entities']} entities of different samples ({_sample(best)} and "
                   f"{_sample(other)})")  # fmt: skip
            raise WorldprobeError(
                f"2 finished activation caches of this dataset build answer this request and neither holds the "
                f"other: {why}", file=f"{best_path}, {path}",
                hint="delete the cache folder you do not mean, or ask for its layers (--layers)",
            )  # fmt: skip


def _sample(manifest: Mapping[str, Any]) -> str:
    """Which rows a cache holds, in words: the whole table or a --limit sample with its seed."""
    return f"--limit sample, seed {manifest.get('limit_seed')}" if manifest.get("limit") else "the whole table"


def _dataset_fingerprint(ws: Workspace, dataset: str) -> str | None:
    from worldprobe.datasets.table import checked_fingerprint

    return checked_fingerprint(dataset, ws)


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


def _read_lock(path: Path) -> Any:
    """A shared lock on the cache's read lock file, held while the returned handle is open (the ActivationCache
    keeps it; the OS releases it when the object is collected or the process ends). None where the folder is
    read-only: nothing can delete the cache there either."""
    try:
        handle = open(path / READ_LOCK, "a+")  # noqa: SIM115 (held open while the cache is read)
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise WorldprobeError("this activation cache is being deleted to be rebuilt (extract --rebuild)", file=path,
                              hint="run this again when the extraction has finished") from None  # fmt: skip
    return handle


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
