"""The benchmark scripts whose numbers the docs quote, run at a tiny size: they run and print what they promise."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from helpers import PROJECT_ROOT

BENCHMARKS = PROJECT_ROOT / "benchmarks"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip


def test_study_stages_reads_the_stage_times_from_the_files_each_stage_writes_last(tmp_path):
    ws = tmp_path / "ws"
    files = {"datasets/a.parquet": 30, "activations/c/manifest.json": 270, "results/r/summary.json": 344,
             "reports/index.html": 360}  # fmt: skip
    log = tmp_path / "time.log"
    log.write_text("\tElapsed (wall clock) time (h:mm:ss or m:ss): 6:03.00\n")
    end = 1_000_000.0
    os.utime(log, (end, end))
    for name, at in files.items():
        path = ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
        os.utime(path, (end - 363 + at, end - 363 + at))
    out = run("study_stages.py", str(ws), str(log))
    assert out.returncode == 0, out.stderr
    assert re.findall(r": (\d+) s \(ends", out.stdout) == ["30", "240", "74", "16"]
    assert out.stdout.strip().endswith("wall: 363 s")
    missing = run("study_stages.py", str(tmp_path / "nowhere"), str(log))
    assert missing.returncode == 1 and "no file matches" in missing.stderr


def test_holdout_block_floor_prints_the_block_its_floor_and_their_ratio():
    out = run("holdout_block_floor.py", "--n", "700", "--d", "48", "--repeats", "1", "--threads", "1", "--sklearn")
    assert out.returncode == 0, out.stderr
    ours = float(re.search(r"as the probe stage fits it: ([\d.]+) CPU-s = ([\d.]+)x its floor", out.stdout)[1])
    floor = float(re.search(r"floor \(the two\): ([\d.]+) CPU-s", out.stdout)[1])
    assert ours >= 0 and floor >= 0
    assert "scikit-learn stacked, the same block:" in out.stdout
