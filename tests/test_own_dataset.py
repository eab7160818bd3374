"""A researcher's own entities through the CLI alone: a CSV of places or works -> datasets build --kind -> extract
-> probe (with the controls that need groups) -> report (a map for places, a timeline for time); bad rows are one-line
errors naming the file, row and field; shipped dataset names cannot be taken."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from worldprobe.cli import app
from worldprobe.errors import WorldprobeError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _places(path, n=120, seed=0):
    rng = np.random.default_rng(seed)
    boroughs = {"Manhattan": (40.78, -73.97), "Brooklyn": (40.65, -73.95), "Queens": (40.73, -73.79),
                "Bronx": (40.84, -73.88)}  # fmt: skip
    rows = []
    for i in range(n):
        borough = list(boroughs)[i % 4]
        lat, lon = boroughs[borough]
        rows.append({"name": f"Place {i} {borough}", "latitude": lat + rng.normal(0, 0.02),
                     "longitude": lon + rng.normal(0, 0.02), "borough": borough})  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _works(path, n=120, seed=1):
    rng = np.random.default_rng(seed)
    pd.DataFrame({"name": [f"Work {i}" for i in range(n)], "year": rng.integers(1900, 2020, n),
                  "entity_type": np.where(np.arange(n) % 2, "song", "film")}).to_csv(path, index=False)  # fmt: skip
    return path


def _cli(workspace, *args):
    result = CliRunner().invoke(app, ["--workspace", str(workspace.root), *map(str, args)])
    return result


def test_own_places_and_works_through_the_cli(workspace, tmp_path, tiny_llama_dir):
    places, works = _places(tmp_path / "places.csv"), _works(tmp_path / "works.csv")
    built = _cli(workspace, "datasets", "build", "my_places", "--from", places, "--kind", "place", "--group-by",
                 "borough")  # fmt: skip
    assert built.exit_code == 0, built.output
    assert "my_places: 120 rows" in built.output and "from csv" in built.output
    spec = json.loads((workspace.datasets / "my_places.spec.json").read_text())
    assert spec["kind"] == "place" and spec["oracle_column"] == "borough"
    report = json.loads((workspace.datasets / "my_places.build.json").read_text())
    assert report["inputs"][0]["what"] == "places.csv" and len(report["inputs"][0]["sha256"]) == 64
    assert _cli(workspace, "datasets", "build", "my_works", "--from", works, "--kind", "time").exit_code == 0
    assert json.loads((workspace.datasets / "my_works.spec.json").read_text())["oracle_column"] == "decade"
    listed = _cli(workspace, "datasets", "list")
    assert "my_places" in listed.output and "my_works" in listed.output
    for name in ("my_places", "my_works"):
        done = _cli(workspace, "extract", "-d", name, "-m", tiny_llama_dir)
        assert done.exit_code == 0, done.output
        probed = _cli(workspace, "probe", "-d", name, "-m", tiny_llama_dir, "--control", "shuffled", "--control",
                      "lexical", "--control", "group_oracle", "--control", "within_group", "--holdout",
                      "borough" if name == "my_places" else "decade")  # fmt: skip
        assert probed.exit_code == 0, probed.output
        assert "Test R²" in probed.output
    shown = _cli(workspace, "report")
    assert shown.exit_code == 0, shown.output
    figures = {p.name for p in (workspace.reports / "figures").glob("*.png")}
    assert any(f.startswith("my_places__") and f.endswith("__map.png") for f in figures)
    assert any(f.startswith("my_works__") and f.endswith("__timeline.png") for f in figures)


@pytest.mark.parametrize(
    ("csv", "args", "message"),
    [
        ("name,latitude,longitude\nA,1,2\nB,north,3\n", ["--kind", "place"], "row 3, field 'latitude'"),
        ("name,year\nA,1900\nB,\n", ["--kind", "time"], "row 3, field 'year'"),
        ("name,latitude,longitude\nA,1,2\nB,123,3\n", ["--kind", "place"], "latitude 123 is not a number in"),
        ("name,latitude\nA,1\n", ["--kind", "place"], "no column 'longitude'"),
        ("name,latitude,longitude,latitude\nA,1,2,3\n", ["--kind", "place"], "names the column 'latitude' twice"),
        ("name,year\nA,1900\n", ["--kind", "time", "--group-by", "era"], "no column 'era'"),
        ("name,year\nA,1900\n", ["--kind", "epoch"], "unknown kind 'epoch'"),
        ("name,year\nA,1900\n", [], "needs --from FILE.csv and --kind"),
    ],
)  # fmt: skip
def test_bad_own_files_are_one_line_errors(workspace, tmp_path, csv, args, message):
    path = tmp_path / "mine.csv"
    path.write_text(csv)
    result = _cli(workspace, "datasets", "build", "mine", "--from", path, *args)
    assert isinstance(result.exception, WorldprobeError), result.output
    assert message in str(result.exception)
    assert not (workspace.datasets / "mine.parquet").exists()


def test_a_shipped_name_cannot_be_taken(workspace, tmp_path):
    result = _cli(workspace, "datasets", "build", "world_place", "--from", _places(tmp_path / "p.csv"), "--kind",
                  "place")  # fmt: skip
    assert isinstance(result.exception, WorldprobeError)
    assert "'world_place' is a shipped dataset" in str(result.exception)
    assert not (workspace.datasets / "world_place.parquet").exists()
