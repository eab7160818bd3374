"""The manual builds strictly and its examples run.

Every ```bash and ```python block of every page under docs/ runs here, in page order, in a fresh folder per page
(``./workspace`` is that page's workspace; the download cache is shared). Python blocks of one page share one
namespace, as in a notebook. A block that cannot run here says why on the line before it, in the page itself::

    <!-- skip: needs a GPU and the gated Llama-2 weights -->

and the reason is required. ``tutorial/python.md`` runs as the notebook it is written into (tests/test_examples.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUN_ELSEWHERE = {"tutorial/python.md": "tests/test_examples.py runs it as examples/python_api.ipynb"}
FENCE = re.compile(r"^(?P<skip><!-- skip:(?P<reason>[^>]*)-->\n)?```(?P<lang>bash|python)\n(?P<code>.*?)^```$",
                   re.MULTILINE | re.DOTALL)  # fmt: skip


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    skip: str | None


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for m in FENCE.finditer(text):
        reason = m["reason"].strip() if m["skip"] else None
        if m["skip"] and not reason:
            line = text[: m.start()].count("\n") + 1
            raise AssertionError(f"{page}: a skip marker without a reason at line {line}")
        line = text[: m.start("code")].count("\n") + 1
        found.append(Block(str(page.relative_to(DOCS)), line, m["lang"], m["code"], reason))
    return found


def pages_with_code() -> list[str]:
    return sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if any(not b.skip for b in blocks(p)))


def test_the_site_builds_strictly(tmp_path):
    """mkdocs --strict: a broken link, anchor, nav entry or API name (mkdocstrings) fails the build."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "api.html").exists()
    print(f"docs build: {time.perf_counter() - started:.1f} s")


def test_every_skip_says_why_and_every_page_is_covered():
    for page in DOCS.rglob("*.md"):
        for block in blocks(page):
            assert block.skip is None or len(block.skip) > 10, f"{block.page}:{block.line}: say why it is skipped"
    for page in RUN_ELSEWHERE:
        assert (DOCS / page).exists()


@pytest.mark.parametrize("page", [p for p in pages_with_code() if p not in RUN_ELSEWHERE])
def test_the_code_blocks_of_a_page_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORLDPROBE_WORKSPACE", raising=False)  # the page's ./workspace
    namespace: dict = {"__name__": "__main__"}
    for block in blocks(DOCS / page):
        if block.skip:
            continue
        where = f"docs/{page}, line {block.line}"
        if block.lang == "bash":
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1", "NO_MKDOCS_2_WARNING": "1"})  # fmt: skip
            output = f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            assert done.returncode == 0, f"{where} exited {done.returncode}:\n{output}"
        else:
            exec(compile(block.code, where, "exec"), namespace)
