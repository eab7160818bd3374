"""Stage 3: probes (ridge, MLP), metrics and controls on cached activations; the results contract (``results``).

Python API::

    from worldprobe.probes import RidgeProbe, MLPProbe, ProbeOptions, run_probe, probe_cache
    folder = run_probe("world_place", "smollm2-135m", "empty", options=ProbeOptions(holdouts=("country",)))
"""

from worldprobe.lazy import lazy_dir, lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        ["compare_models", "compare_prompts", "cross_prompt_transfer", "probe_cache", "run_probe"],
        "worldprobe.probes.experiments",
    ),
    "holdout_blocks": "worldprobe.probes.holdouts",
    **dict.fromkeys(["ProbeResult", "layer_sweep"], "worldprobe.probes.sweep"),
    "MLPProbe": "worldprobe.probes.mlp",
    "ProbeOptions": "worldprobe.probes.options",
    "RunFolder": "worldprobe.probes.results",
    "RidgeProbe": "worldprobe.probes.ridge",
}  # fmt: skip
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(_EXPORTS)
