"""Stage 2: run a model over entity texts and cache the residual stream at every layer.

Python API (docs/explanation/extraction.md)::

    from worldprobe.extract import find_cache, open_cache
    cache = open_cache(find_cache("world_place", "smollm2-135m"))
    X, y = cache.layer(18), cache.entities[["latitude", "longitude"]].to_numpy()
"""

from worldprobe.lazy import lazy_dir, lazy_exports

_EXPORTS = {
    "ActivationCache": "worldprobe.extract.cache", "CacheIdentity": "worldprobe.extract.cache",
    "find_cache": "worldprobe.extract.cache", "open_cache": "worldprobe.extract.cache",
    "PRESETS": "worldprobe.extract.models", "LoadedModel": "worldprobe.extract.models",
    "load_model": "worldprobe.extract.models", "register_model": "worldprobe.extract.models",
    "ModelRequest": "worldprobe.extract.options", "Batching": "worldprobe.extract.options",
    "forward_batches": "worldprobe.extract.runner",
    "run_extraction": "worldprobe.extract.runner", "extract_twin": "worldprobe.extract.runner",
    "extract_pooled": "worldprobe.extract.runner", "find_pooled": "worldprobe.extract.cache",
    "EncodedEntity": "worldprobe.extract.tokens",
    "encode_entities": "worldprobe.extract.tokens",
}  # fmt: skip
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(_EXPORTS)
