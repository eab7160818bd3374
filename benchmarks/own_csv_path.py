"""Wall and CPU time of a researcher's own-CSV path through the CLI alone (issue 26: "measured and stated").

    python benchmarks/own_csv_path.py FOLDER [--rows 300] [--model smollm2-135m]

Writes two CSVs of a few hundred rows each in FOLDER, in the plain formats docs/how-to/own-entities.md describes:
places ``name,latitude,longitude,borough`` (NYC places) and works ``name,year,entity_type`` (films and songs), taken
from the packaged nyc_place and art tables of a scratch workspace so the names are real. Then, in a fresh workspace,
each goes through ``datasets build --from`` -> ``extract`` -> ``probe`` (shuffled, lexical, within-group controls,
a hold-out by borough for the places) and finally one ``report``. Prints one line per command (wall seconds, CPU
seconds of the command's process tree) and the total, and checks the report holds a map and a timeline.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Run one CLI command; return its wall and CPU seconds (children's user + system time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def write_csvs(folder: Path, rows: int, model: str) -> tuple[Path, Path]:
    """The two CSVs, from packaged tables built in a scratch workspace (not timed)."""
    scratch = folder / "scratch"
    for name in ("nyc_place", "art"):
        subprocess.run(["worldprobe", "--workspace", str(scratch), "datasets", "build", name, "--limit", str(rows)],
                       check=True, capture_output=True)  # fmt: skip
    places = pd.read_parquet(scratch / "datasets" / "nyc_place.parquet")
    works = pd.read_parquet(scratch / "datasets" / "art.parquet")
    places_csv, works_csv = folder / "places.csv", folder / "works.csv"
    places[["name", "latitude", "longitude", "borough"]].to_csv(places_csv, index=False)
    works[["name", "year", "entity_type"]].to_csv(works_csv, index=False)
    return places_csv, works_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    folder = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    places_csv, works_csv = write_csvs(folder, args.rows, args.model)
    workspace = folder / "workspace"
    cli = ["worldprobe", "--workspace", str(workspace)]
    model = ["-m", args.model]
    steps = [
        ("build places", cli + ["datasets", "build", "my_places", "--from", str(places_csv), "--kind", "place",
                                "--group-by", "borough"]),
        ("extract places", cli + ["extract", "-d", "my_places"] + model),
        ("probe places", cli + ["probe", "-d", "my_places", *model, "--control", "shuffled", "--control", "lexical",
                                "--control", "within_group", "--holdout", "borough"]),
        ("build works", cli + ["datasets", "build", "my_works", "--from", str(works_csv), "--kind", "time"]),
        ("extract works", cli + ["extract", "-d", "my_works"] + model),
        ("probe works", cli + ["probe", "-d", "my_works", *model, "--control", "shuffled", "--control", "lexical",
                               "--control", "within_group"]),
        ("report", cli + ["report"]),
    ]  # fmt: skip
    total_wall = total_cpu = 0.0
    for label, command in steps:
        wall, cpu = timed(command, folder)
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        print(f"{label:15s} {wall:6.1f} s wall {cpu:6.1f} CPU-s", flush=True)
    print(f"{'total':15s} {total_wall:6.1f} s wall {total_cpu:6.1f} CPU-s "
          f"({len(pd.read_csv(places_csv))} places, {len(pd.read_csv(works_csv))} works, {args.model})")  # fmt: skip
    figures = sorted(p.name for p in (workspace / "reports" / "figures").glob("*.png"))
    has_map = any(name.startswith("my_places") and "map" in name for name in figures)
    has_timeline = any(name.startswith("my_works") and "timeline" in name for name in figures)
    print(f"report: {len(figures)} figures; a map of my_places: {has_map}; a timeline of my_works: {has_timeline}")
    if not (has_map and has_timeline):
        sys.exit("the report lacks a map or a timeline")


if __name__ == "__main__":
    main()
