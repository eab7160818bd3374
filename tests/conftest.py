"""Shared fixtures: an isolated workspace and cache per test, paths to the paper's release data."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PAPER_DATA = PROJECT_ROOT.parent / "shared" / "paper-data"


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh workspace folder, also set as $WORLDPROBE_WORKSPACE for CLI calls."""
    root = tmp_path / "workspace"
    monkeypatch.setenv("WORLDPROBE_WORKSPACE", str(root))
    from worldprobe.workspace import Workspace

    return Workspace(root)


def paper_csv(name: str) -> Path:
    """A release CSV from ../shared/paper-data, or skip the test with a visible reason."""
    path = PAPER_DATA / f"{name}.csv"
    if not path.exists():
        pytest.skip(f"paper release data not found at {path}")
    return path
