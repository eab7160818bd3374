"""Cost of the integrity checks on a workspace made by `worldprobe run` (run on demand, not in the tests).

    worldprobe --workspace WS run && python benchmarks/integrity_bench.py WS

Prints: sha256 / blake2b / md5 throughput on the largest dequantised model file; per model load, the checks of
the assembled GGUF and the dequantised copy with unchanged stamps (what every load does) and with every file
re-read; per cache open, ``open_cache`` and a full re-hash of each cache; finishing (hashing) the largest cache;
``is_complete`` per results folder; and each part of ``worldprobe verify``. Times are wall clock on whatever else
the machine is doing; medians of 5 where cheap.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from worldprobe import checksums, verify
from worldprobe.extract import cache as cache_mod
from worldprobe.extract import presets
from worldprobe.probes.results import is_complete
from worldprobe.workspace import Workspace, cache_dir


def median_time(fn: Callable[..., object], *args: object, repeat: int = 5, **kwargs: object) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def load_checks(gguf: Path, sha256: str, folder: Path, *, full: bool) -> None:
    """What a model load checks: the assembled GGUF against its pin and the dequantised copy against its record."""
    checksums.file_problem(gguf, sha256, full=full)
    presets.dequantised_problems(folder, full=full)


def hash_speeds(file: Path) -> None:
    data = file.read_bytes()
    for name in ("sha256", "blake2b", "md5"):
        view, best = memoryview(data), float("inf")
        for _ in range(3):
            started, digest = time.perf_counter(), hashlib.new(name)
            for i in range(0, len(data), checksums.CHUNK):
                digest.update(view[i : i + checksums.CHUNK])
            best = min(best, time.perf_counter() - started)
        print(f"{name}: {len(data) / best / 1e9:.2f} GB/s ({len(data) / 1e6:.0f} MB in memory)")


def model_loads() -> Path | None:
    largest = None
    for preset in (p for p in presets.PRESETS.values() if p.is_gguf):
        gguf = cache_dir("models") / preset.gguf_filename
        folder = cache_dir("models") / f"{gguf.stem}-{preset.gguf_sha256[:12]}-dequantised"
        if not gguf.exists() or presets.dequantised_problems(folder):
            continue
        size = gguf.stat().st_size + sum(f.stat().st_size for f in folder.iterdir())
        cheap = median_time(load_checks, gguf, preset.gguf_sha256, folder, full=False)
        full = median_time(load_checks, gguf, preset.gguf_sha256, folder, full=True, repeat=1)
        print(f"model load {preset.name}: {size / 1e9:.2f} GB; checks with unchanged stamps {cheap * 1000:.1f} ms, "
              f"every file re-read {full:.2f} s")
        weights = folder / "model.safetensors"
        if weights.exists() and (largest is None or weights.stat().st_size > largest.stat().st_size):
            largest = weights
    return largest


def caches(ws: Workspace) -> None:
    folders = [f for f, m in cache_mod.iter_manifests(ws) if m.get("complete")]
    opens, fulls, sizes = [], [], []
    for folder in folders:
        opens.append(median_time(cache_mod.open_cache, folder))
        manifest = cache_mod.read_manifest(folder)
        sizes.append(sum(int(e["bytes"]) for e in manifest["files"].values()))
        fulls.append(median_time(cache_mod.cache_problems, folder, manifest, full=True, repeat=1))
    print(f"{len(folders)} caches, {sum(sizes) / 1e6:.0f} MB: open_cache median {statistics.median(opens) * 1000:.1f} "
          f"ms (max {max(opens) * 1000:.1f}); full re-hash median {statistics.median(fulls) * 1000:.0f} ms, "
          f"all {sum(fulls):.2f} s")
    biggest = folders[sizes.index(max(sizes))]
    names = list(cache_mod.read_manifest(biggest)["files"])
    seal = median_time(checksums.files_record, biggest, names, repeat=1)
    print(f"finishing (hashing) the largest cache, {max(sizes) / 1e6:.1f} MB in {len(names)} files: {seal:.2f} s")


def results(ws: Workspace) -> None:
    folders = [f for f in ws.results.iterdir() if (f / "summary.json").exists()]
    times = [median_time(is_complete, f, json.loads((f / "summary.json").read_text())["run_key"]) for f in folders]
    print(f"{len(folders)} results folders: is_complete median {statistics.median(times) * 1000:.1f} ms")


def verify_parts(ws: Workspace) -> None:
    for kind, checks in (("datasets", verify._dataset_checks(ws)), ("caches", verify._cache_checks(ws)),
                         ("results", verify._results_checks(ws)), ("downloads", verify._download_checks())):
        started, cpu = time.perf_counter(), time.process_time()
        findings = [check() for check in checks]
        bad = sum(f.status != verify.OK for f in findings)
        print(f"verify {kind}: {len(findings)} items ({bad} not ok) in {time.perf_counter() - started:.2f} s wall, "
              f"{time.process_time() - cpu:.2f} s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    ws = Workspace.resolve(parser.parse_args().workspace)
    largest = model_loads()
    if largest is not None:
        hash_speeds(largest)
    caches(ws)
    results(ws)
    verify_parts(ws)


if __name__ == "__main__":
    main()
