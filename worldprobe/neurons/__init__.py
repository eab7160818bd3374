"""Stage beside extraction: single MLP neurons and residual coordinates that encode space or time
(docs/explanation/probes.md). It runs the model (the MLP activations are not cached), hooking the modules the anchor
table (``worldprobe.anchors``) names for the model's architecture family.

Python API::

    from worldprobe.neurons import find_neurons
    folder = find_neurons("world_place", "smollm2-135m", top_k=10)   # writes neurons.parquet
"""

from worldprobe.lazy import lazy_dir, lazy_exports

_EXPORTS = dict.fromkeys(["find_neurons", "mlp_search", "residual_search"], "worldprobe.neurons.search")
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(_EXPORTS)
