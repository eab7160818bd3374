"""Write examples/python_api.ipynb from docs/tutorial/python.md (inputs only; CI executes it: tests/test_examples.py).

The page is the one source: its prose becomes markdown cells, its ``python`` blocks code cells. Run
``python examples/make_notebook.py`` after editing the page, so the notebook and the page stay the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

PAGE = Path(__file__).resolve().parents[1] / "docs" / "tutorial" / "python.md"
FENCE = re.compile(r"^```python\n(.*?)^```\n", re.S | re.M)


def cells(page: str) -> list[tuple[str, str]]:
    """(kind, source) of each cell: the prose between code blocks, and the code blocks, in page order."""
    found, start = [], 0
    for block in FENCE.finditer(page):
        prose = page[start : block.start()].strip()
        if prose:
            found.append(("markdown", prose))
        found.append(("code", block.group(1).rstrip("\n")))
        start = block.end()
    if page[start:].strip():
        found.append(("markdown", page[start:].strip()))
    return found


def notebook(page: Path = PAGE) -> nbformat.NotebookNode:
    """The notebook of the page."""
    make = {"markdown": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell}
    book = nbformat.v4.new_notebook(cells=[make[kind](text) for kind, text in cells(page.read_text())])
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return book


if __name__ == "__main__":
    path = Path(__file__).with_name("python_api.ipynb")
    nbformat.write(notebook(), path)
    print(path)
