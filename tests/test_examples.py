"""The example notebook: the file is what examples/make_notebook.py writes from docs/tutorial/python.md, and it runs
start to end on the embedded model (every cell, in a fresh workspace), drawing its map and printing numbers with their n
and the outcomes of its tests, nulls included."""

from __future__ import annotations

import importlib.util
import os
import re

import nbformat
import pytest
from helpers import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "examples"


def _maker():
    spec = importlib.util.spec_from_file_location("make_notebook", EXAMPLES / "make_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_notebook_file_is_what_its_maker_writes():
    stored = nbformat.read(EXAMPLES / "python_api.ipynb", as_version=4)
    made = _maker().notebook()
    assert [(c.cell_type, c.source) for c in stored.cells] == [(c.cell_type, c.source) for c in made.cells]
    assert all(not c.get("outputs") for c in stored.cells if c.cell_type == "code")  # inputs only


@pytest.mark.slow
@pytest.mark.model
def test_the_notebook_runs_on_the_embedded_model(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("WORLDPROBE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    book = nbformat.read(EXAMPLES / "python_api.ipynb", as_version=4)
    NotebookClient(book, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [out for cell in book.cells for out in cell.get("outputs", [])]
    text = "\n".join(out.get("text", "") for out in outputs)
    tables = "\n".join(out.get("data", {}).get("text/plain", "") for out in outputs)
    assert str(tmp_path / "workspace") in text
    assert "test R² " in text and ", n = " in text and "chosen on train rows" in text
    assert "median error" in text and "answers parsed:" in text
    assert "Holm" in text  # the verdicts say which correction decided them
    outcomes = re.findall(r"(above|below|equivalent|inconclusive)\s*$", tables, re.M)
    assert len(outcomes) >= 2, tables  # the comparisons table: shuffled and lexical, nulls included
    images = [out for cell in book.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) == 1  # the GeoDataFrame map
    assert (tmp_path / "workspace" / "results").is_dir()
