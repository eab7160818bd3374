"""The shared foundation: workspace layout, errors, schema validation, grouped split, archive reading."""

from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pandas as pd
import pytest

from worldprobe.datasets import get_spec, load, write_table
from worldprobe.datasets.schema import validate
from worldprobe.datasets.split import grouped_split, text_leaks
from worldprobe.datasets.table import BuildReport, fingerprint
from worldprobe.errors import WorldprobeError
from worldprobe.pypi_archives import PackagedArchive, fetch, read_member
from worldprobe.workspace import Workspace, cache_dir


def place_table(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": [f"e{i}" for i in range(n)],
            "name": [f"Place {i}" for i in range(n)],
            "text": [f"Place {i}" for i in range(n)],
            "latitude": np.linspace(-10, 10, n),
            "longitude": np.linspace(-100, 100, n),
            "entity_type": "city",
            "country": "France",
            "is_test": [False] * (n - 1) + [True],
            "source": "fixture",
        }
    )


def test_workspace_env_and_stage_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLDPROBE_WORKSPACE", str(tmp_path / "ws"))
    ws = Workspace.resolve()
    assert ws.root == (tmp_path / "ws").resolve()
    assert ws.results.is_dir() and ws.results.parent == ws.root
    assert Workspace.resolve(tmp_path / "other").root == (tmp_path / "other").resolve()


def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLDPROBE_CACHE", str(tmp_path / "c"))
    assert cache_dir("pypi") == tmp_path / "c" / "pypi"


def test_error_names_file_row_field():
    text = str(WorldprobeError("bad value", file="x.csv", row=3, field="latitude", hint="fix it"))
    assert text == "x.csv, row 3, field 'latitude': bad value (hint: fix it)"


@pytest.mark.parametrize(
    "column,value,field",
    [("latitude", 123.0, "latitude"), ("longitude", -181.0, "longitude"), ("text", "Paris ", "text"),
     ("text", "", "text"), ("entity_id", "e0", "entity_id"), ("latitude", np.nan, "latitude")],
)  # fmt: skip
def test_validate_names_row_and_field(column, value, field):
    table = place_table()
    table.loc[2, column] = value
    with pytest.raises(WorldprobeError) as info:
        validate(table, get_spec("world_place"))
    assert info.value.row == 2 and info.value.field == field


def test_validate_missing_column():
    with pytest.raises(WorldprobeError, match="country"):
        validate(place_table().drop(columns="country"), get_spec("world_place"))


def test_write_and_load_roundtrip(workspace):
    table = place_table()
    report = BuildReport("world_place", "fixture", [], 5, 0, {}, "fixed", None)
    path = write_table(table, report, workspace)
    assert path == workspace.dataset_table("world_place")
    loaded = load("world_place", workspace)
    pd.testing.assert_frame_equal(loaded, table)
    assert fingerprint(loaded) == fingerprint(table)
    assert fingerprint(table.iloc[::-1]) != fingerprint(table)


def test_load_missing_dataset_says_how_to_build(workspace):
    with pytest.raises(WorldprobeError, match="datasets build us_place"):
        load("us_place", workspace)


def test_grouped_split_keeps_groups_together_and_is_seeded():
    keys = pd.Series([f"g{i // 3}" for i in range(300)])
    first = grouped_split(keys, seed=1)
    assert np.array_equal(first, grouped_split(keys, seed=1))
    assert not np.array_equal(first, grouped_split(keys, seed=2))
    assert 0.18 <= first.mean() <= 0.22
    table = pd.DataFrame({"text": keys, "is_test": first})
    assert text_leaks(table).empty


def test_read_member_from_wheel_and_sdist(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/data/cities.json", b"[1, 2]")
    sdist = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        info = tarfile.TarInfo("pkg-1.0/pkg/data.noun")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    assert read_member(wheel, "*/cities.json") == b"[1, 2]"
    assert read_member(sdist, "pkg-1.0/pkg/data.noun") == b"hello"


def test_fetch_rejects_a_wrong_checksum(tmp_path, monkeypatch):
    import worldprobe.pypi_archives as pypi_archives

    def download_wrong_bytes(archive, folder):
        (folder / archive.filename).write_bytes(b"not what was pinned")

    monkeypatch.setattr(pypi_archives, "_pip_download", download_wrong_bytes)
    archive = PackagedArchive("pkg", "1.0", "pkg-1.0-py3-none-any.whl", "0" * 64)
    with pytest.raises(WorldprobeError, match="sha256 mismatch"):
        fetch(archive, cache=tmp_path)
    assert not (tmp_path / "pkg-1.0-py3-none-any.whl").exists()


def test_a_workspace_names_its_own_files_relative_to_itself(tmp_path):
    """Products record paths inside the workspace relative to it, so a moved or copied workspace names its own."""
    ws = Workspace(tmp_path / "ws")
    assert ws.relative(ws.activations / "a-cache") == "activations/a-cache"
    assert ws.relative(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")
