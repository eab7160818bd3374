"""Which torch device a stage runs on: one rule for extraction, generation and every probe estimator."""

from __future__ import annotations

import torch

from worldprobe.errors import WorldprobeError


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
