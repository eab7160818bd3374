"""Stage 2: run a model over entity texts and cache the residual stream at every layer.

Python API (see README "2. Extraction")::

    from worldprobe.extract import find_cache, open_cache
    cache = open_cache(find_cache("workspace", "world_place", "smollm2-135m"))
    X, y = cache.layer(18), cache.entities[["latitude", "longitude"]].to_numpy()
"""

from worldprobe.extract.cache import ActivationCache, cache_key, find_cache, open_cache
from worldprobe.extract.models import PRESETS, LoadedModel, load_model
from worldprobe.extract.runner import forward_batches, run_extraction
from worldprobe.extract.tokens import EncodedEntity, encode_entities

__all__ = [
    "PRESETS",
    "ActivationCache",
    "EncodedEntity",
    "LoadedModel",
    "cache_key",
    "encode_entities",
    "find_cache",
    "forward_batches",
    "load_model",
    "open_cache",
    "run_extraction",
]
