"""Which torch device and dtype a stage runs in: one device rule for extraction, generation and every probe
estimator, and the dtype rule of extraction (``auto``, ``fast``) that stages reading a cache resolve the same way."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from worldprobe.errors import WorldprobeError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The dtypes a model runs in by name (an activation cache stores float16 or float32 whatever the model ran in)."""


def resolve_device(device: str = "auto", *, mps: bool = True) -> str:
    """``auto`` -> cuda if available, else mps (when ``mps``), else cpu; a device asked for by name must exist on this
    machine. Probe estimators pass ``mps=False``: the ridge works in float64, which Apple's MPS does not have, and
    both probes stay on one code path off CUDA."""
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if mps and _mps_available():
            return "mps"
        return "cpu"
    if device == "mps" and not mps:
        raise WorldprobeError("probes do not run on 'mps' (no float64 there)", field="device", hint="use auto or cpu")
    check_device_name(device)
    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            seen = f"{count} CUDA device(s)" if count else f"no CUDA device (torch {torch.__version__})"
            raise WorldprobeError(
                f"device {device!r} asked for, but torch sees {seen}", field="device",
                hint="use device auto or cpu, or install a CUDA build of torch on a machine with a GPU",
            )  # fmt: skip
    if device == "mps" and not _mps_available():
        raise WorldprobeError(
            "device 'mps' asked for, but torch sees no Apple MPS device", field="device",
            hint="use device auto or cpu",
        )  # fmt: skip
    return device


DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")


def check_device_name(device: str) -> None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether this machine has it is :func:`resolve_device`'s
    check)."""
    index = device.partition(":")[2] if device.startswith("cuda:") else None
    if device not in DEVICE_NAMES and not (index and index.isdigit()):
        raise WorldprobeError(f"unknown device {device!r}", field="device", hint="use auto, cpu, cuda, cuda:N or mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


DTYPE_CHOICES = ("auto", "fast", *DTYPES)
"""What ``--dtype`` and a study's ``extract.dtype`` accept; the manifest records the dtype each resolves to."""


BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
"""x86 flags of CPUs that multiply bfloat16 in hardware, where ``fast`` extracts in bfloat16. Measured (smollm2-135m,
2,000 world places, 2 cores): with AMX, bfloat16 took 0.55-0.62x the CPU time of float32; with AVX512-BF16 and no
AMX (an AMD EPYC), 0.56x (SmolLM2) and 0.73x (Gemma-3); without either, bfloat16 was 8x slower."""


def cpu_bfloat16_flag() -> str | None:
    """The flag by which this CPU multiplies bfloat16 in hardware (:data:`BFLOAT16_CPU_FLAGS`, read from
    /proc/cpuinfo; torch's AMX check elsewhere), or None."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private in torch 2.x: absent means unknown
    if amx is not None and amx():
        return "amx_bf16"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set(" ".join(re.findall(r"^flags\s*:(.*)$", cpuinfo, flags=re.MULTILINE)).split())
    return next((flag for flag in BFLOAT16_CPU_FLAGS if flag in flags), None)


def cache_dtype(dtype: str, device: str = "auto") -> str:
    """The dtype an activation cache extracted with these options records (``auto`` and ``fast`` resolved for the
    device on this machine): what a stage that reads the cache asks :func:`~worldprobe.extract.find_cache` for."""
    return resolve_dtype(dtype, resolve_device(device))


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` -> float32 on cpu/mps (exact), bfloat16 on cuda (no float16 overflow); ``fast`` -> bfloat16 on cuda
    and on CPUs with a :data:`BFLOAT16_CPU_FLAGS` flag, float32 elsewhere (a per-machine choice: test R² moved by
    about .001)."""
    return dtype_choice(dtype, device)[0]


def dtype_choice(dtype: str, device: str) -> tuple[str, str]:
    """(the dtype ``dtype`` resolves to on ``device``, why), the reason as the manifest records it."""
    if dtype == "auto":
        on_cuda = device.startswith("cuda")
        return ("bfloat16", "auto: bfloat16 on cuda") if on_cuda else ("float32", "auto: float32 off cuda")
    if dtype == "fast":
        if device.startswith("cuda"):
            return "bfloat16", "fast: bfloat16 on cuda"
        flag = cpu_bfloat16_flag() if device == "cpu" else None
        if flag:
            return "bfloat16", f"fast: bfloat16, this CPU has {flag}"
        where = "this CPU has none of " + ", ".join(BFLOAT16_CPU_FLAGS) if device == "cpu" else f"on {device}"
        return "float32", f"fast: float32, {where}"
    if dtype not in DTYPES:
        raise WorldprobeError(f"unknown dtype {dtype!r}", field="dtype", hint=f"use {', '.join(DTYPE_CHOICES)}")
    return dtype, "asked"
