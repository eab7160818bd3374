"""How a study's units run: one after another here, in a pool of local worker processes, or on Ray."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from worldprobe.errors import WorldprobeError
from worldprobe.study.plan import Unit


class SerialExecutor:
    """Runs units one after another in this process."""

    name = "serial"

    def map(self, fn: Callable[[Unit], Any], units: Sequence[Unit], progress: Callable[[], None]) -> list[Any]:
        results = []
        for unit in units:
            results.append(fn(unit))
            progress()
        return results

    def close(self) -> None:
        """Nothing to end."""


class ProcessExecutor:
    """Runs units in a pool of local worker processes, one torch thread each: on a small CPU two processes finish
    the many small forward passes and ridge fits of a study sooner than one process with two threads. The pool
    starts with the first batch of more than one unit and serves every later stage (each worker imports torch and
    keeps its last model once, not once per stage) until :meth:`close`. Results come back in the order of the
    units; a unit's exception ends the stage (units not started are cancelled; the finished ones stay done)."""

    name = "processes"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise WorldprobeError(f"--workers must be at least 1, not {workers}", field="workers")
        self.workers = workers
        self._pool: Any = None

    def map(self, fn: Callable[[Unit], Any], units: Sequence[Unit], progress: Callable[[], None]) -> list[Any]:
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        if self.workers == 1 or len(units) <= 1:  # one unit runs here (the report draws in processes of its own)
            return SerialExecutor().map(fn, units, progress)
        pool = self._started()
        results: list[Any] = [None] * len(units)
        futures = {pool.submit(fn, unit): i for i, unit in enumerate(units)}
        try:
            for future in as_completed(futures):
                try:
                    results[futures[future]] = future.result()
                except BrokenProcessPool:
                    raise WorldprobeError(
                        f"a worker process ended abruptly during {units[futures[future]].stage} (killed, or out of "
                        "memory: see `dmesg`)", hint="the finished work is kept; the same command resumes it (with "
                        "fewer --workers if memory ran out)") from None  # fmt: skip
                progress()
        except BaseException:
            self.close()
            raise
        return results

    def _started(self) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch threads
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_one_thread)
        return self._pool

    def close(self) -> None:
        """End the worker processes (units not started are cancelled; running ones finish)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)


def _one_thread() -> None:
    """Worker start-up: one torch, OpenMP and BLAS thread per process (numpy's OpenBLAS otherwise starts one per
    core: two probe runs side by side took 29 s each instead of 19 s)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def make_executor(name: str, *, address: str | None = None, num_workers: int | None = None) -> Any:
    """``serial`` (default), ``processes`` (a local pool of ``num_workers`` processes, default the CPU count) or
    ``ray`` (optional extra: ``pip install worldprobe[ray]``)."""
    if name == "serial":
        return SerialExecutor()
    if name == "processes":
        return ProcessExecutor(num_workers or os.cpu_count() or 1)
    if name == "ray":
        from worldprobe.study.ray import RayExecutor

        return RayExecutor(address=address, num_workers=num_workers)
    raise WorldprobeError(f"unknown executor {name!r}", hint="executors: serial, processes, ray")
