"""Project-wide settings in one place: defaults, environment variable names and the random-init model prefix (pinned
archives and their checksums are in ``worldprobe.pins``)."""

from __future__ import annotations

DEFAULT_SEED = 0
"""Seed used when a command is not given one. Every random choice takes a seed; this is its default."""

DEFAULT_MODEL = "smollm2-135m"
"""The model every command and study uses when not given one: the embedded SmolLM2-135M-Instruct (offline)."""

DEFAULT_PROMPT = "empty"
"""The prompt of every command and API call not given one: the bare entity name, as in the paper."""

DEFAULT_RESAMPLES = 1000
"""Bootstrap resamples per interval (percentile ends of a 95% interval are stable to about ±.005 R²)."""

DEFAULT_MARGINS = {"r2": 0.05, "r": 0.05}
"""The verdicts' equivalence margins, in the units of each difference: ±.05 of R² (probe minus control) and ±.05 of
Pearson r (within-group residual probe minus its lexical twin). Inside the margin a difference counts as "no more
than" its control (TOST; docs/verdicts.md). ``worldprobe probe --margin-r2/--margin-r``, study keys
``[probes] margin_r2 / margin_r``."""

RANDOM_INIT_SEEDS = 3
"""Random-weight twins per model (seeds ``seed, seed + 1, ...``): a random-init control varies with its seed."""

DEFAULT_SHOTS = 3
"""Seeded train examples in a few-shot prompt (ask, steer)."""

DEFAULT_TOP_K = 10
"""Neurons kept per layer and target by the neuron search."""

DEFAULT_STEER_LIMIT = 100
"""Test entities steered by default (a seeded sample)."""

STEER_METHODS = ("ridge", "pattern", "mean_diff", "pls1")
"""The steering directions tried by default (``worldprobe.interventions.directions``)."""
STEER_DOSES = (-2.0, -1.0, 1.0, 2.0)
"""Steering doses in multiples of |Δμ| at the layer (a pilot on Gemma-3-270M moved death years monotonically at ±1,
±2)."""
STEER_SELECT = 24
"""Train entities the steering map is measured on (the direction, layer and position are chosen there)."""
STEER_MAP_RANDOM = 2
"""Random directions per layer x position in the steering map: the random band beside the methods."""

RANDOM_PREFIX = "random:"
"""``random:<model>`` names the model's architecture and tokenizer with seeded random weights (the random-init twin)."""

WORKSPACE_ENV = "WORLDPROBE_WORKSPACE"
CACHE_ENV = "WORLDPROBE_CACHE"
DEFAULT_WORKSPACE = "workspace"
APP_NAME = "worldprobe"

TEST_FRACTION = 0.2
"""Share of entities in the test split for builders that make their own split (the paper's ~20%)."""

DOWNLOAD_TIMEOUT_ENV = "WORLDPROBE_DOWNLOAD_TIMEOUT"
DEFAULT_DOWNLOAD_TIMEOUT = 900.0
"""Seconds one download (a release CSV, an API response with its retries, a PyPI archive) may take in all."""
