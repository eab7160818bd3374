"""Stage 3: probes (ridge, MLP), metrics, controls and neuron search on cached activations.

Python API::

    from worldprobe.probes import RidgeProbe, MLPProbe, run_probe, probe_cache
    folder = run_probe("world_place", "smollm2-135m", "empty", holdouts=("country",))
"""

from worldprobe.probes.experiments import (
    ProbeResult,
    compare_models,
    compare_prompts,
    cross_prompt_transfer,
    holdout_blocks,
    layer_sweep,
    probe_cache,
    run_probe,
)
from worldprobe.probes.mlp import MLPProbe
from worldprobe.probes.ridge import RidgeProbe

__all__ = [
    "MLPProbe",
    "ProbeResult",
    "RidgeProbe",
    "compare_models",
    "compare_prompts",
    "cross_prompt_transfer",
    "holdout_blocks",
    "layer_sweep",
    "probe_cache",
    "run_probe",
]
