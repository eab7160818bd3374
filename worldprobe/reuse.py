"""Asking a stage function whether its work is done, without doing it.

Every stage function returns at once when its product is already there for the same inputs (a finished cache, a
results folder with the same run key, a built table). Under :func:`reuse_only` it still does that, but raises
:class:`WorkNeeded` at the one point where it would start computing or writing (:func:`starting_work`). ``worldprobe
run`` calls each unit so in its own process and sends only the units that raised to the worker pool: a re-run of a
finished study starts no worker and loads no model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_REUSE_ONLY: ContextVar[bool] = ContextVar("reuse_only", default=False)


class WorkNeeded(Exception):  # noqa: N818 (a signal, not an error: the work is simply not done yet)
    """Raised under :func:`reuse_only` where a stage function would start its work; the message says what."""


@contextmanager
def reuse_only() -> Iterator[None]:
    """Within this block stage functions return finished products and raise :class:`WorkNeeded` instead of working."""
    token = _REUSE_ONLY.set(True)
    try:
        yield
    finally:
        _REUSE_ONLY.reset(token)


def starting_work(what: str) -> None:
    """Mark the point where a stage function starts computing or writing ``what`` (no-op outside :func:`reuse_only`)."""
    if _REUSE_ONLY.get():
        raise WorkNeeded(what)
