"""Write examples/python_api.ipynb from the cells below (inputs only; CI executes it: tests/test_examples.py).

Run ``python examples/make_notebook.py`` after editing a cell, so the notebook and this file stay the same.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

CELLS = [
    ("markdown", """# worldprobe from Python: reuse a cache, fit a new probe, map it, ask and steer

Offline, on the embedded SmolLM2-135M-Instruct (fetched once from PyPI into the worldprobe cache). Everything goes to
the workspace the CLI would use: `$WORLDPROBE_WORKSPACE`, else `./workspace`; this notebook sets
`example-workspace` unless the variable is set. A second run reuses what the first one wrote."""),
    ("code", """import os

os.environ.setdefault("WORLDPROBE_WORKSPACE", "example-workspace")
from worldprobe.workspace import Workspace

workspace = Workspace.resolve(None)
MODEL = "smollm2-135m"
print(workspace.root)"""),
    ("markdown", """## 1. A dataset and its activation cache
A seeded sample of 600 world places from the offline sources, and the residual stream of five layers (a finished
cache is reused, not recomputed)."""),
    ("code", """from worldprobe.datasets import BuildOptions, build
from worldprobe.extract import run_extraction

build("world_place", "packaged", BuildOptions(limit=600, seed=0), workspace)
run_extraction("world_place", MODEL, workspace=workspace, layers="0,6,12,18,24", progress=False)"""),
    ("markdown", """## 2. Reuse the cache: a new probe on a new target
`find_cache` looks where the CLI would; `cache.layer(l)` is a read-only memory map aligned with `cache.entities`.
The layer is chosen on train rows; the test R² gets a 95% bootstrap interval over the test places."""),
    ("code", """import numpy as np

from worldprobe.extract import find_cache, open_cache
from worldprobe.probes import probe_cache
from worldprobe.probes.bootstrap import estimate, resample_counts, weighted_r2

cache = open_cache(find_cache("world_place", MODEL))
population = np.log10(cache.entities["population"].astype(float))  # NaN rows are skipped and counted
result = probe_cache(cache, population.rename("log10_population"))
layer = result.selected_layer
test = cache.entities["is_test"].to_numpy() & np.isfinite(population.to_numpy())
truth, predicted = population.to_numpy()[test], result.predictions[layer][test, 0]
r2 = estimate(lambda w: weighted_r2(truth, predicted, w), resample_counts(len(truth), seed=0))
print(f"log10 population from layer {layer} (chosen on train rows): test R² {r2.text()}, n = {r2.n}; "
      f"{result.dropped} rows without a population")"""),
    ("markdown", """## 3. The probe stage, and its map as a GeoDataFrame
`run_probe` fits the latitude/longitude probe with its controls and writes the results folder; `place_predictions`
turns its predictions into a GeoDataFrame (predicted point as geometry, the true point, the error in km)."""),
    ("code", """from worldprobe import geodata
from worldprobe.probes import run_probe
from worldprobe.probes.results import read_summary
from worldprobe.reports import place_predictions

folder = run_probe("world_place", MODEL, workspace=workspace, controls=("shuffled", "lexical"), progress=False)
summary = read_summary(folder)
print(summary["verdict"]["sentence"])
places = place_predictions(folder)
shown = places[places["is_test"] & (places["layer"] == summary["selected_layer"])]
error = summary["headline"]["probe"]["median_error"]  # the run's estimate: value, 95% bootstrap interval, n
print(f"median error {error['value']:,.0f} km [{error['low']:,.0f}, {error['high']:,.0f}] over n = {error['n']} "
      f"test places; the map draws {len(shown)}")
equal_earth = "+proj=eqearth +units=km"
ax = geodata.world_countries().to_crs(equal_earth).plot(color="#eeeeee", edgecolor="#999999", linewidth=0.3,
                                                        figsize=(10, 5))
shown.to_crs(equal_earth).plot(ax=ax, column="error_km", markersize=8, legend=True,
                               legend_kwds={"label": "error (km)", "shrink": 0.6})
ax.set_title(f"test places at their predicted positions, layer {summary['selected_layer']} (chosen on train rows)")"""),
    ("markdown", """## 4. Ask the model, then steer it
`run_ask` asks each test place's country and compares the answer with the probe's reading; `run_steer` maps which
direction (here the difference of means and the ridge weights) at which layer moves the answer on a few train
places, chooses the best there, and tests it on test places beside a random direction of the same norm."""),
    ("code", """import json

import pandas as pd

from worldprobe.interventions import run_ask, run_steer

asked = run_ask("world_place", MODEL, workspace=workspace, limit=12, resamples=200, progress=False)
answers = pd.read_parquet(asked / "answers.parquet")
asked_summary = json.loads((asked / "summary.json").read_text())
rate = asked_summary["parse_rate"]
print(f"answers parsed: {rate['value']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}], n = {rate['n']}")
answers[["name", "answer_text", "truth_group", "answer_group", "probe_group"]].head()"""),
    ("code", """steered = run_steer("world_place", MODEL, workspace=workspace, directions=["mean_diff", "ridge"],
                    layers=[6, 12], doses=[-1, 1], select_limit=4, limit=3, map_random=1, random_directions=1,
                    random_init=False, resamples=200, progress=False)
print(json.loads((steered / "summary.json").read_text())["verdict"])
pd.read_parquet(steered / "steering_map.parquet").query("split == 'select'")[
    ["direction", "layer", "dose", "antisymmetric_shift", "ordered_share", "relative_norm"]]"""),
]


def notebook() -> nbformat.NotebookNode:
    """The notebook of :data:`CELLS`."""
    make = {"markdown": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell}
    book = nbformat.v4.new_notebook(cells=[make[kind](text) for kind, text in CELLS])
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return book


if __name__ == "__main__":
    path = Path(__file__).with_name("python_api.ipynb")
    nbformat.write(notebook(), path)
    print(path)
