"""How long each stage of a finished `worldprobe run` took, from the times of the files each stage writes last.

    WORLDPROBE_CACHE=<empty folder> /usr/bin/time -v worldprobe --workspace ws run 2> time.log
    python benchmarks/study_stages.py ws time.log

The run's start is the log's last write minus the wall time ``/usr/bin/time -v`` printed into it. The stages overlap
where the study lets them (model preparation beside the dataset builds, the neuron search beside the probes), so each
figure is the time from the end of the stage before to the stage's last file: the datasets (``datasets/*.parquet``),
extraction (every cache's ``manifest.json``), the probes and the neuron search (``results/``), the report
(``reports/index.html``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)")


def last_write(folder: Path, patterns: list[str]) -> float:
    """The latest modification time of the files matching ``patterns`` under ``folder``."""
    times = [p.stat().st_mtime for pattern in patterns for p in folder.glob(pattern)]
    if not times:
        raise SystemExit(f"{folder}: no file matches {patterns}: is this a finished study's workspace?")
    return max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("time_log", type=Path, help="what /usr/bin/time -v wrote (its stderr)")
    args = parser.parse_args()
    found = WALL.search(args.time_log.read_text())
    if found is None:
        raise SystemExit(f"{args.time_log}: no 'Elapsed (wall clock) time' line of /usr/bin/time -v")
    hours, minutes, seconds = found.groups()
    wall = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    start = args.time_log.stat().st_mtime - wall
    ends = {
        "datasets (beside the models' preparation)": last_write(args.workspace, ["datasets/*.parquet"]),
        "extraction": last_write(args.workspace, ["activations/*/manifest.json"]),
        "probes (beside the neuron search)": last_write(args.workspace, ["results/*/*"]),
        "report": last_write(args.workspace, ["reports/index.html"]),
    }
    previous = start
    for stage, end in ends.items():
        print(f"{stage}: {end - previous:.0f} s (ends at {end - start:.0f} s)")
        previous = end
    print(f"wall: {wall:.0f} s")


if __name__ == "__main__":
    main()
