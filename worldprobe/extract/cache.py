"""The activation cache on disk: manifest, entity table, one preallocated ``layer_XXX.npy`` memmap per layer, an
atomic progress ledger and a lock file. Read it with :func:`open_cache` / :func:`find_cache`; this module holds the
format (identity, file names, layers) and the reader, ``worldprobe.extract.writer`` the writer.

A cache can be written by one writer or by K shard writers in separate processes at the same time: shard i takes a
contiguous range of the length-sorted batches (:func:`shard_batches`), so its rows are disjoint from the others', and
keeps its own lock, ledger and float16-overflow side file. The shard that finishes last merges them
(``writer.merge_shards``).

A cache is finished only when the ledgers cover every row; finishing records each file's size and sha256 in the
manifest. Every open checks completeness, sizes, shapes and (through remembered checksums, re-read only for files
whose stat stamp changed) the contents (:func:`cache_problems`); ``worldprobe verify`` re-reads every file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from worldprobe.checks import FLAG, NAME, PathRule, Rule, checked_arguments
from worldprobe.checksums import file_problem
from worldprobe.config import RANDOM_PREFIX
from worldprobe.errors import WorldprobeError
from worldprobe.extract.options import Shard
from worldprobe.workspace import WORKSPACE, Workspace, as_workspace

FORMAT_VERSION = 2  # 2: rows_written and per-file sizes and sha256 in the manifest
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
ENTITIES = "entities.parquet"
LOCK = ".lock"
SETUP_LOCK = ".setup.lock"  # held briefly by every writer to create, reopen or merge the cache
READ_LOCK = ".read.lock"  # held shared by every open ActivationCache, so --rebuild cannot delete a cache being read
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


def shard_name(shard: Shard) -> str:
    """``shard-2-of-4`` for (1, 4): 1-based like the study's task labels."""
    return f"shard-{shard[0] + 1}-of-{shard[1]}"


def n_batches(n_entities: int, batch_size: int) -> int:
    return -(-n_entities // batch_size)


def shard_batches(n_entities: int, batch_size: int, shard: Shard) -> tuple[int, int]:
    """[start, stop) batch numbers of ``shard`` in the global length-sorted batch order: every batch is the one an
    unsharded run makes, so the rows are bit-identical to it."""
    total = n_batches(n_entities, batch_size)
    index, count = shard
    return index * total // count, (index + 1) * total // count


def entity_order_sha256(entity_ids: pd.Series) -> str:
    """Hash of the entity ids in cache order (detects any change of rows or of their order)."""
    return hashlib.sha256("\n".join(map(str, entity_ids)).encode()).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


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


