"""File checksums that keep holding: sha256 of a file, remembered by its stat stamp so unchanged files are not
re-read, and checks of a file against a recorded or pinned sha256 on every use.

A file's stamp is (device, inode, size, mtime, ctime) in nanoseconds. Writing a file changes its mtime and ctime,
replacing it changes its inode, and resetting its mtime (``touch -d``, ``os.utime``) changes its ctime, which user
programs cannot set. So a remembered sha256 is trusted only while the file is provably untouched through the file
system; what it cannot see are changes below the file system (disk corruption, raw device writes) or a system clock
set back to the old ctime. ``worldprobe verify`` re-reads every file for those.

sha256 was chosen by measurement (benchmarks/integrity_bench.py): 1.0-1.4 GB/s on the 2-core development machine
(SHA-NI), against 0.55-0.95 GB/s for blake2b and 0.4-0.6 GB/s for md5 (hashlib, 1 MiB chunks, in memory).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path

from worldprobe import config
from worldprobe.errors import WorldprobeError
from worldprobe.workspace import cache_dir

CHUNK = 1 << 20


def is_sha256(text: str) -> bool:
    """Whether ``text`` is a sha256 as worldprobe writes one: 64 lower-case hex digits."""
    return re.fullmatch(r"[0-9a-f]{64}", text) is not None


def checked_sha256(path: Path, expected: str | None) -> str:
    """The sha256 of a file a user gave (``--from``), which must be ``expected`` when that is given."""
    actual = sha256_of(path)
    if expected is not None and actual != expected:
        raise WorldprobeError(f"checksum mismatch: the file has sha256 {actual}, expected {expected}", file=path,
                              hint="the file is not the one you meant, or it was changed")  # fmt: skip
    return actual


def sha256_of(path: Path, chunk: int = CHUNK) -> str:
    """The sha256 of a file, read in chunks (the whole file, every call)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stamp(path: Path) -> str:
    """The file's (device, inode, size, mtime, ctime): it changes whenever the file is written, replaced or its
    times are reset."""
    s = os.stat(path)
    return f"{s.st_dev}:{s.st_ino}:{s.st_size}:{s.st_mtime_ns}:{s.st_ctime_ns}"


def _memo(path: Path, file_stamp: str) -> Path:
    key = hashlib.sha256(f"{Path(path).resolve()}|{file_stamp}".encode()).hexdigest()[:32]
    return cache_dir("checksums") / f"{key}.sha256"


def remember(path: Path, sha256: str) -> None:
    """Record that ``path`` (as it is now) has this sha256, e.g. right after writing and hashing it. The memo only
    saves re-reading: where the download cache is read-only it is skipped, with one warning per process."""
    memo = _memo(path, stamp(path))
    tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(sha256)
        os.replace(tmp, memo)
    except OSError as error:
        if not _UNWRITABLE:
            _UNWRITABLE.append(memo.parent)
            warnings.warn(f"the checksum memo in {memo.parent} cannot be written ({error.strerror}): files are "
                          f"re-read for each check (set ${config.CACHE_ENV} to a writable folder to keep it)",
                          stacklevel=2)  # fmt: skip


_UNWRITABLE: list[Path] = []


def remembered_sha256(path: Path) -> str:
    """The sha256 of ``path``: from the memo while the file's stamp is unchanged, else read and remembered."""
    memo = _memo(path, stamp(path))
    if memo.exists():
        known = memo.read_text().strip()
        if len(known) == 64:
            return known
    digest = sha256_of(path)
    remember(path, digest)
    return digest


def file_problem(path: Path, sha256: str | None, size: int | None = None, *, full: bool = False) -> str | None:
    """What is wrong with ``path`` against its recorded size and sha256 (None when it matches).

    The size is compared first (a truncated or grown file); the sha256 comes from the memo unless ``full`` (then the
    file is read whatever its stamp says)."""
    path = Path(path)
    if not path.is_file():
        return f"{path.name} is missing"
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"{path.name} is {actual_size:,} bytes, expected {size:,}"
    if sha256 is None:
        return None
    actual = sha256_of(path) if full else remembered_sha256(path)
    if full:
        remember(path, actual)
    if actual != sha256:
        return f"{path.name} has sha256 {actual[:16]}..., expected {sha256[:16]}... (its contents changed)"
    return None


def check_file(path: Path, sha256: str, size: int | None = None, *, hint: str, full: bool = False) -> Path:
    """``path`` if it matches its recorded size and sha256, else a WorldprobeError naming it with ``hint``."""
    problem = file_problem(path, sha256, size, full=full)
    if problem:
        raise WorldprobeError(problem, file=path, hint=hint)
    return Path(path)


def write_record(path: Path, record: dict) -> None:
    """Write a JSON record atomically (temp file + rename)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_record(path: Path) -> dict | None:
    """A JSON record written by :func:`write_record`, or None when it is missing or unreadable."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def files_record(folder: Path, names: list[str] | None = None) -> dict[str, dict[str, int | str]]:
    """``{name: {"bytes": size, "sha256": digest}}`` of the files in ``folder`` (all regular files, or ``names``),
    each remembered for later cheap checks."""
    chosen = names if names is not None else sorted(p.name for p in Path(folder).iterdir() if p.is_file())
    record = {}
    for name in chosen:
        path = Path(folder) / name
        digest = sha256_of(path)
        remember(path, digest)
        record[name] = {"bytes": path.stat().st_size, "sha256": digest}
    return record


def recorded_problems(folder: Path, record: dict[str, dict], *, full: bool = False) -> list[str]:
    """Problems of the files a :func:`files_record` lists in ``folder``: missing, resized or changed."""
    return [
        problem
        for name, entry in sorted(record.items())
        if (problem := file_problem(Path(folder) / name, entry.get("sha256"), entry.get("bytes"), full=full))
    ]


def folder_problems(
    folder: Path, record: dict[str, dict], *, full: bool = False, extra_ok: tuple[str, ...] = ()
) -> list[str]:
    """Problems of the files of ``folder`` against a :func:`files_record`: missing, resized, changed, or present
    without being recorded (except names in ``extra_ok``)."""
    problems = recorded_problems(folder, record, full=full)
    unrecorded = sorted(
        p.name for p in Path(folder).iterdir() if p.is_file() and p.name not in record and p.name not in extra_ok
    )
    problems += [f"{name} is not part of the recorded files" for name in unrecorded]
    return problems
