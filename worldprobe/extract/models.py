"""Model presets and loading: hub ids, local folders, GGUF files (incl. offline presets shipped in PyPI wheels),
random-initialised twins and bitsandbytes quantisation, all behind :func:`load_model`.

What a model is, for the cache identity (:func:`describe_model`'s ``source``): a preset's pinned GGUF sha256, a
local folder's checksum over its files, a GGUF file's sha256, or a hub id with the requested revision and the
commit it resolved to. Files made here (the assembled GGUF, its dequantised copy) are checked on every use.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from worldprobe import anchors
from worldprobe.checksums import (
    remembered_sha256,
)
from worldprobe.config import DEFAULT_MODEL, DEFAULT_SEED, RANDOM_PREFIX
from worldprobe.devices import DTYPES, resolve_device, resolve_dtype
from worldprobe.errors import WorldprobeError
from worldprobe.extract.options import QUANTIZATIONS, ModelRequest
from worldprobe.extract.presets import PRESETS, dequantised_folder, fetch_gguf


@dataclass
class LoadedModel:
    """A causal LM ready for extraction, with what the cache manifest needs to know about it."""

    model: torch.nn.Module
    tokenizer: Any
    name: str
    source: dict[str, Any]
    n_layers: int
    d_model: int
    decoder_layers: list[torch.nn.Module]
    dtype: str = "float32"
    device: str = "cpu"
    quantization: str | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_device(self) -> torch.device:
        """Where input ids go (the embedding's device, also with ``device_map="auto"``)."""
        return self.model.get_input_embeddings().weight.device


def find_decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks in order, from the anchor table (:mod:`worldprobe.anchors`). For a family the table
    does not cover, the ModuleList with ``num_hidden_layers`` entries, with a warning naming the table."""
    try:
        return anchors.blocks(model)
    except WorldprobeError as error:
        found = _searched_decoder_layers(model)
        warnings.warn(f"{error.message}: using the {len(found)}-block ModuleList found by search as the decoder "
                      "blocks (add the family to worldprobe.anchors.ANCHORS to make it explicit)",
                      stacklevel=2)  # fmt: skip
        return found


def _searched_decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The ModuleList with ``num_hidden_layers`` entries (preferring a name ending in ``layers``)."""
    config = getattr(model, "config", None)
    n = getattr(getattr(config, "text_config", config), "num_hidden_layers", None)
    candidates = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.ModuleList) and (n is None or len(m) == n)
    ]
    preferred = [c for c in candidates if c[0].endswith("layers")] or candidates
    if not preferred:
        raise WorldprobeError(f"cannot find the decoder layers of {type(model).__name__}", hint="not a decoder LM?")
    return list(preferred[0][1])


NOT_MODEL_FILES = (".md", ".sha256-ok")
"""File name endings in a local model folder that do not change the model (docs, old checksum notes)."""


def folder_files(path: Path) -> list[Path]:
    """The files of a local model folder that make the model: weights, config and tokenizer (top level; not
    hidden files, docs or licences)."""
    return sorted(
        file for file in path.iterdir()
        if file.is_file() and not file.name.startswith(".") and not file.name.endswith(NOT_MODEL_FILES)
        and not file.name.upper().startswith(("LICENSE", "README", "NOTICE", "USE_POLICY"))
    )  # fmt: skip


def local_source(model: str, gguf_file: str | None = None) -> dict[str, Any] | None:
    """The source record of a model on disk (a folder or a .gguf file), with the checksum of what is there now;
    None for presets and hub ids. ``random:`` twins have their base model's record."""
    base = model.removeprefix(RANDOM_PREFIX)
    if base in PRESETS:
        return None
    path = Path(base).expanduser()
    if gguf_file is not None:
        path = path / gguf_file if path.is_dir() else Path(gguf_file).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise WorldprobeError("GGUF file not found", file=path)
        return {"kind": "gguf", "file": str(path.resolve()), "sha256": remembered_sha256(path)}
    if path.is_dir():
        digest = hashlib.sha256()
        for file in folder_files(path):
            digest.update(file.name.encode() + remembered_sha256(file).encode())
        return {"kind": "folder", "path": str(path.resolve()), "sha256": digest.hexdigest()}
    return None


def looks_like_hub_id(name: str) -> bool:
    """A name the Hugging Face hub accepts as a repository id: ``gpt2`` or ``org/name`` (letters, digits, ``-_.``;
    huggingface_hub's own rule), and not a path (``./x``, ``/x``, ``~/x``) or a ``.gguf`` file name."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.endswith(".gguf"):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _resolve_source(
    model: str, gguf_file: str | None, revision: str | None = None
) -> tuple[str | Path, dict[str, Any]]:
    """(folder or hub id to load from, source record for the manifest) for a model spec."""
    if model in PRESETS:
        preset = PRESETS[model]
        if not preset.is_gguf:
            return preset.hub_id, {"kind": "hub", "hub_id": preset.hub_id, "preset": model, "revision": revision}
        _no_revision(revision, model)
        gguf = fetch_gguf(preset)
        source = {"kind": "gguf", "preset": model, "file": preset.gguf_filename, "sha256": preset.gguf_sha256}
        return dequantised_folder(gguf, preset.gguf_sha256), source
    local = local_source(model, gguf_file)
    if local is not None:
        _no_revision(revision, model)
        if local["kind"] == "gguf":
            _check_gguf_file(Path(local["file"]))
            return dequantised_folder(Path(local["file"]), local["sha256"]), local
        _check_model_folder(Path(model).expanduser())
        return Path(model).expanduser(), local
    if looks_like_hub_id(model):
        return model, {"kind": "hub", "hub_id": model, "revision": revision}
    raise unknown_model(model)


def _check_gguf_file(path: Path) -> None:
    with open(path, "rb") as head:
        if head.read(4) != b"GGUF":
            raise WorldprobeError("not a GGUF file (it does not start with the bytes GGUF)", file=path)


def _check_model_folder(path: Path) -> None:
    if not (path / "config.json").exists():
        raise WorldprobeError(
            "no config.json: not a Hugging Face model folder", file=path,
            hint="a model folder holds config.json and the weights; for a GGUF file in it add --gguf-file NAME",
        )  # fmt: skip


def unknown_model(model: str, *, file: Path | None = None, field: str | None = None) -> WorldprobeError:
    """The error for a name that is neither a preset, a folder, a .gguf file nor a valid hub id."""
    close = difflib.get_close_matches(model.removeprefix(RANDOM_PREFIX), list(PRESETS), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"presets: {', '.join(PRESETS)}; or random:<preset>"
    return WorldprobeError(
        f"model {model!r} is neither a preset, a folder, a .gguf file nor a hub id", file=file, field=field, hint=hint
    )


def hub_commit(repo: str, revision: str | None = None) -> str | None:
    """The commit a hub revision (None: the default branch) resolves to: asked of the hub, or read from the local
    hub cache when offline; None when neither knows it."""
    import huggingface_hub
    from huggingface_hub import constants

    if revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    offline = constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE
    try:
        resolved = huggingface_hub.HfApi().resolve_revision(repo, revision=revision, local_files_only=offline)
        commit = str(getattr(resolved, "resolved", resolved))
    except Exception:  # hub unreachable, gated, unknown revision, older huggingface_hub: try the local cache
        cached = huggingface_hub.try_to_load_from_cache(repo, "config.json", revision=revision)
        commit = Path(cached).parent.name if isinstance(cached, str) else ""
    return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else None


def _no_revision(revision: str | None, model: str) -> None:
    if revision is not None:
        raise WorldprobeError(
            f"--revision applies to hub models, not to {model!r}", field="revision",
            hint="a local folder or GGUF file is identified by the checksum of its files",
        )  # fmt: skip


def _quantization_config(quantization: str) -> Any:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise WorldprobeError(
            f"{quantization} loading needs bitsandbytes", hint='pip install "worldprobe[quant]"'
        ) from None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    return BitsAndBytesConfig(load_in_8bit=True)


@dataclass(frozen=True)
class ModelInfo:
    """What a model spec resolves to before its weights are loaded (enough to name its activation cache)."""

    folder: str | Path  # local folder or hub id that from_pretrained reads
    source: dict[str, Any]
    n_layers: int
    d_model: int
    dtype: str
    device: str
    revision: str | None = None  # what from_pretrained loads from the hub: the resolved commit (else as asked)


OBJECT_PREFIX = "object:"
"""A model given as a loaded object (:func:`register_model`) is named ``object:<class>:<fingerprint>``."""
_OBJECTS: dict[str, tuple[torch.nn.Module, Any, dict[str, Any]]] = {}


def register_model(model: torch.nn.Module, tokenizer: Any) -> str:
    """Make a loaded Hugging Face causal LM (and its fast tokenizer) usable by every stage that runs a model, and
    return the name they take it by: ``object:<class>:<16 hex of a sha256 over its config and every weight>``. The
    fingerprint is computed on every call (about a second per GB of weights), so the cache of a model edited since
    is never reused by mistake; the same weights in a new session get the same name and reuse their caches.

    From TransformerLens or nnsight: pass the Hugging Face model underneath (nnsight's ``LanguageModel`` keeps it as
    ``._model``; TransformerLens rewrites the weights, so load the same checkpoint with ``AutoModelForCausalLM``)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "get_input_embeddings"):
        raise WorldprobeError(f"a {type(model).__name__} is not a Hugging Face causal LM (no config)",
                              field="model", hint="pass a transformers PreTrainedModel, e.g. AutoModelForCausalLM")
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise WorldprobeError("a model object needs its fast tokenizer (offsets find the entity)", field="tokenizer",
                              hint="pass register_model(model, tokenizer), with AutoTokenizer.from_pretrained(..., "
                              "use_fast=True)")  # fmt: skip
    digest = hashlib.sha256(config.to_json_string(use_diff=False).encode())
    weights = hashlib.sha256()
    with torch.no_grad():
        for key, tensor in sorted(model.state_dict().items()):
            weights.update(key.encode())
            weights.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(weights.digest())
    name = f"{OBJECT_PREFIX}{type(model).__name__}:{digest.hexdigest()[:16]}"
    source = {"kind": "object", "class": type(model).__name__, "config_sha256": hashlib.sha256(
        config.to_json_string(use_diff=False).encode()).hexdigest(), "weights_sha256": weights.hexdigest()}
    _OBJECTS[name] = (model, tokenizer, source)
    return name


def model_name(model: str | torch.nn.Module) -> str:
    """The name a stage takes ``model`` by: a string as given; a model object must be registered with its tokenizer
    first (:func:`register_model` returns the name), so an object alone is refused, saying so."""
    return model if isinstance(model, str) else register_model(model, None)


def _object(name: str) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    base = name.removeprefix(RANDOM_PREFIX)
    if base not in _OBJECTS:
        raise WorldprobeError(f"no model object {base!r} in this session", field="model",
                              hint="pass the loaded model (and tokenizer=) again: its name lives in this process")
    return _OBJECTS[base]


def object_tokenizer(name: str) -> Any:
    """The tokenizer registered with a model object."""
    return _object(name)[1]


def _is_gated(model: str, error: Exception) -> bool:
    """A hub refusal for want of a licence acceptance or a token (a gated preset, or the hub's own words)."""
    preset = PRESETS.get(model)
    text = str(error).lower()
    return (preset is not None and preset.gated) or any(w in text for w in ("gated", "401", "403", "restricted"))


def describe_model(
    model: str = DEFAULT_MODEL,
    *,
    dtype: str = "auto",
    device: str = "auto",
    quantization: str | None = None,
    seed: int = DEFAULT_SEED,
    gguf_file: str | None = None,
    revision: str | None = None,
) -> ModelInfo:
    """Resolve a model spec (fetching/dequantising GGUF presets once) and read its config, without the weights.

    ``revision`` (hub models: a branch, tag or commit) is recorded in the source with the commit it resolved to."""
    from transformers import AutoConfig

    base = model.removeprefix(RANDOM_PREFIX)
    if base.startswith(OBJECT_PREFIX):
        return _describe_object(model, dtype, quantization, seed)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    is_raw_gguf = base not in PRESETS and (base.endswith(".gguf") or gguf_file is not None)
    if quantization is not None and is_raw_gguf:
        raise WorldprobeError(
            "transformers cannot quantise a GGUF file with bitsandbytes",
            hint="use a preset (loaded from its dequantised safetensors copy) or a safetensors checkpoint",
        )
    if quantization not in QUANTIZATIONS:
        raise WorldprobeError(f"unknown quantization {quantization!r}", hint="use 4bit or 8bit")
    folder, source = _resolve_source(base, gguf_file, revision)
    pinned = None
    if source["kind"] == "hub":  # every file is then read at the commit recorded for it
        source = {**source, "commit": hub_commit(str(folder), revision)}
        pinned = source["commit"] or revision
    try:
        config = AutoConfig.from_pretrained(folder, **({"revision": pinned} if pinned else {}))
    except (OSError, ValueError) as error:  # ValueError: a config.json transformers cannot read
        hint = None
        if source["kind"] == "hub":
            close = difflib.get_close_matches(base, list(PRESETS), n=1)
            hint = f"did you mean the preset {close[0]!r}?" if close else "no local folder has this name either"
            if _is_gated(base, error):
                hint = f"accept the licence on https://huggingface.co/{folder}, then export HF_TOKEN=<a read token>"
        raise WorldprobeError(
            f"cannot load the config of model {base!r}: {str(error).splitlines()[0]}", hint=hint
        ) from None
    if model.startswith(RANDOM_PREFIX):
        source = {**source, "random_init": True, "seed": seed}
    text = getattr(config, "text_config", None) or config
    return ModelInfo(folder, source, int(text.num_hidden_layers), int(text.hidden_size), dtype, device, pinned)


def load_model(
    model: str = DEFAULT_MODEL,
    *,
    dtype: str = "auto",
    device: str = "auto",
    quantization: str | None = None,
    seed: int = DEFAULT_SEED,
    gguf_file: str | None = None,
    max_memory: dict[Any, str] | None = None,
    revision: str | None = None,
) -> LoadedModel:
    """Load a causal LM for extraction, in eval mode.

    ``model``: a preset name (see :data:`PRESETS`), ``random:<preset or id>`` (same config and tokenizer,
    weights initialised with ``seed``), a hub id, a local folder or a ``.gguf`` path (``gguf_file`` names a GGUF
    inside a folder). GGUF files are dequantised once and kept as safetensors in the cache. ``revision``: a hub
    model's branch, tag or commit (the weights are loaded from the commit it resolves to).
    ``dtype``: auto (float32 on CPU, bfloat16 on cuda), float32, bfloat16, float16. ``quantization``: ``4bit`` or
    ``8bit`` through bitsandbytes (not with a raw GGUF file). On cuda the model is placed with
    ``device_map="auto"`` (optionally bounded by ``max_memory``).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    info = describe_model(model, dtype=dtype, device=device, quantization=quantization, seed=seed, gguf_file=gguf_file,
                          revision=revision)  # fmt: skip
    if model.removeprefix(RANDOM_PREFIX).startswith(OBJECT_PREFIX):
        return _loaded_object(model, info, seed)
    pinned = {"revision": info.revision} if info.revision else {}
    tokenizer = AutoTokenizer.from_pretrained(info.folder, **pinned)
    torch_dtype = DTYPES[info.dtype]
    if model.startswith(RANDOM_PREFIX):
        torch.manual_seed(seed)  # drawn on the CPU, so the twin's weights do not depend on the device
        lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(info.folder, **pinned), dtype=torch_dtype)
        lm = place_like_its_model(lm, info.device, max_memory)
    else:
        kwargs: dict[str, Any] = {"dtype": torch_dtype, **pinned}
        if quantization is not None:
            kwargs["quantization_config"] = _quantization_config(quantization)
        if info.device.startswith("cuda"):
            kwargs["device_map"] = "auto" if info.device == "cuda" else info.device
            if max_memory:
                kwargs["max_memory"] = max_memory
        try:
            lm = AutoModelForCausalLM.from_pretrained(info.folder, **kwargs)
        except OSError as error:
            raise WorldprobeError(f"cannot load model {model!r}: {str(error).splitlines()[0]}") from None
    if not info.device.startswith("cuda") and quantization is None:
        lm = lm.to(info.device)
    lm.eval()
    return LoadedModel(
        model=lm, tokenizer=tokenizer, name=model, source=info.source, n_layers=info.n_layers, d_model=info.d_model,
        decoder_layers=find_decoder_layers(lm), dtype=info.dtype, device=info.device,
        quantization=None if model.startswith(RANDOM_PREFIX) else quantization,
        seed=seed if model.startswith(RANDOM_PREFIX) else None,
    )  # fmt: skip


def _describe_object(model: str, dtype: str, quantization: str | None, seed: int) -> ModelInfo:
    """A registered model object as it is: its own dtype and device (another dtype or a quantisation is refused)."""
    lm, _, source = _object(model)
    parameter = next(lm.parameters())
    kept = str(parameter.dtype).removeprefix("torch.")
    if dtype not in ("auto", kept) or quantization is not None:
        raise WorldprobeError(f"a model object runs as it is ({kept}, unquantised): dtype {dtype!r} and quantization "
                              f"{quantization!r} cannot apply", field="dtype",
                              hint="convert or quantise the object yourself before passing it")  # fmt: skip
    text = getattr(lm.config, "text_config", None) or lm.config
    if model.startswith(RANDOM_PREFIX):
        source = {**source, "random_init": True, "seed": seed}
    return ModelInfo(model.removeprefix(RANDOM_PREFIX), source, int(text.num_hidden_layers), int(text.hidden_size),
                     kept, str(parameter.device))  # fmt: skip


def _loaded_object(model: str, info: ModelInfo, seed: int) -> LoadedModel:
    """A registered model object as it is (its dtype and device), or its random-init twin (same config, seeded
    weights, the object's dtype and device)."""
    from transformers import AutoModelForCausalLM

    lm, tokenizer, _ = _object(model)
    if model.startswith(RANDOM_PREFIX):
        torch.manual_seed(seed)
        lm = AutoModelForCausalLM.from_config(lm.config, dtype=next(lm.parameters()).dtype).to(info.device)
    lm.eval()
    return LoadedModel(
        model=lm, tokenizer=tokenizer, name=model, source=info.source, n_layers=info.n_layers, d_model=info.d_model,
        decoder_layers=find_decoder_layers(lm), dtype=info.dtype, device=info.device,
        seed=seed if model.startswith(RANDOM_PREFIX) else None,
    )  # fmt: skip


def place_like_its_model(lm: torch.nn.Module, device: str, max_memory: dict[Any, str] | None) -> torch.nn.Module:
    """Put a model built in memory (a random-init twin) where ``from_pretrained`` puts its trained model: spread over
    the GPUs as ``device_map="auto"`` does for ``cuda`` (accelerate, bounded by ``max_memory``), else on ``device``."""
    if device != "cuda":
        return lm.to(device)
    from accelerate import dispatch_model, infer_auto_device_map

    device_map = infer_auto_device_map(
        lm, max_memory=max_memory, no_split_module_classes=list(getattr(lm, "_no_split_modules", None) or [])
    )
    return dispatch_model(lm, device_map=device_map)


_KEPT: dict[str, LoadedModel] = {}


def load_model_kept(model: str = DEFAULT_MODEL, **options: Any) -> LoadedModel:
    """:func:`load_model`, keeping the last model loaded this way for the next identical request in this process,
    so a run over many datasets loads each model once. A different request (or a model folder or GGUF file whose
    files changed since) releases the kept model first. Requests that load the same model are one request:
    ``dtype`` and ``device`` are compared resolved (``fast`` and the ``bfloat16`` it chose; a cache's pooled
    companion asks in the second spelling and reloaded Gemma-3 each time, 5 s a dataset), absent options as their
    defaults, and the seed only for random weights."""
    key = json.dumps([model, _same_load(model, options), local_source(model, options.get("gguf_file"))],
                     sort_keys=True, default=str)  # fmt: skip
    if key not in _KEPT:
        release_kept_model()
        _KEPT[key] = load_model(model, **options)
    return _KEPT[key]


def _same_load(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of a load as it will happen: :func:`load_model`'s defaults for those not given, device and dtype
    resolved, no seed for trained weights (it changes nothing there)."""
    defaults = {name: p.default for name, p in inspect.signature(load_model).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}  # fmt: skip
    chosen = {**defaults, **options}
    chosen["device"] = resolve_device(chosen["device"])
    chosen["dtype"] = resolve_dtype(chosen["dtype"], chosen["device"])
    if not model.startswith(RANDOM_PREFIX):
        chosen.pop("seed", None)
    return chosen


def requested(model: str | torch.nn.Module | ModelRequest, seed: int = DEFAULT_SEED) -> ModelRequest:
    """What a stage does with its ``model`` argument: a :class:`ModelRequest` as it is, a name as a request with the
    default options, a loaded model registered (:func:`register_model`, which needs its tokenizer, so pass the name
    it returns); an unset request ``seed`` becomes the stage's ``seed``."""
    if not isinstance(model, ModelRequest):
        model = ModelRequest(model_name(model))
    return model if model.seed is not None else replace(model, seed=seed)


def load_requested(request: ModelRequest) -> LoadedModel:
    """The model of ``request``, loaded (kept for the next identical request, :func:`load_model_kept`)."""
    return load_model_kept(request.name, **request.options)


def release_kept_model() -> None:
    """Drop the model kept by :func:`load_model_kept` (frees its memory once nothing else holds it)."""
    _KEPT.clear()
