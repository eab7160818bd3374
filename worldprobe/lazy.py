"""Lazy package exports (PEP 562): ``from worldprobe.extract import open_cache`` works, yet importing the package
(as the CLI does at start-up) does not import torch or matplotlib until a name is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_dir(exports: dict[str, str]) -> Callable[[], list[str]]:
    """A module ``__dir__`` listing the lazy exports, so ``dir(package)`` and tab completion show them."""

    def __dir__() -> list[str]:
        return sorted({*exports, "__doc__", "__name__"})

    return __dir__


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) on first access of ``name``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__
