"""Project-wide settings in one place: defaults, environment variables, versions of pinned sources."""

from __future__ import annotations

DEFAULT_SEED = 0
"""Seed used when a command is not given one. Every random choice takes a seed; this is its default."""

DEFAULT_MODEL = "smollm2-135m"
"""The model every command and study uses when not given one: the embedded SmolLM2-135M-Instruct (offline)."""

WORKSPACE_ENV = "WORLDPROBE_WORKSPACE"
CACHE_ENV = "WORLDPROBE_CACHE"
DEFAULT_WORKSPACE = "workspace"
APP_NAME = "worldprobe"

TEST_FRACTION = 0.2
"""Share of entities in the test split for builders that make their own split (the paper's ~20%)."""

DOWNLOAD_TIMEOUT_ENV = "WORLDPROBE_DOWNLOAD_TIMEOUT"
DEFAULT_DOWNLOAD_TIMEOUT = 900.0
"""Seconds one download (a release CSV, an API response with its retries, a PyPI archive) may take in all."""
