"""Ray as the study's executor: the same units as the serial run, as Ray tasks (optional extra `ray`).

``ray.init()`` starts a local Ray on a laptop; ``address="auto"`` joins a running cluster. Extraction tasks ask for
one GPU each when the cluster has GPUs (``device_map`` shards a large model within a task). An extraction task is
one activation cache, or one shard of it when the study sets ``[extract] shards``: the shards of a cache run on
different workers at once and write disjoint rows of the same files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from worldprobe.errors import WorldprobeError


def _call(fn: Callable[[Any], Any], unit: Any) -> Any:
    """The Ray task: a plain function (Ray cannot wrap a callable object) that applies ``fn`` to one unit."""
    return fn(unit)


class RayExecutor:
    """Runs units as Ray tasks and returns their results in the order of the units."""

    name = "ray"

    def __init__(self, *, address: str | None = None, num_workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise WorldprobeError("Ray is not installed", hint="pip install 'worldprobe[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                options["address"] = address
            elif num_workers:
                options["num_cpus"] = num_workers
            try:
                ray.init(**options)
            except ConnectionError as error:  # no cluster at the address, or none running for "auto"
                raise WorldprobeError(
                    f"cannot connect to Ray: {str(error).splitlines()[0]}", field="address",
                    hint="start a cluster with `ray start --head`, or leave out --address for a local Ray",
                ) from None  # fmt: skip
        self.gpus = int(ray.cluster_resources().get("GPU", 0))

    def map(self, fn: Callable[[Any], Any], units: Sequence[Any], progress: Callable[[], None]) -> list[Any]:
        ray = self._ray
        needs_gpu = self.gpus > 0 and any(getattr(u, "stage", "") == "extract" for u in units)
        task = ray.remote(num_cpus=1, num_gpus=1 if needs_gpu else 0)(_call)
        fn_ref = ray.put(fn)
        pending = {task.remote(fn_ref, unit): index for index, unit in enumerate(units)}
        results: list[Any] = [None] * len(units)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                results[pending.pop(ref)] = ray.get(ref)
                progress()
        return results

    def close(self) -> None:
        """Nothing to end here: a local Ray stops with this process, a cluster keeps running."""

    def shutdown(self) -> None:
        self._ray.shutdown()
