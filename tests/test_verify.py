"""`worldprobe verify`: every dataset, cache, results folder and download re-read and checked against its record."""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from worldprobe import checksums, cli, pins
from worldprobe.commands.verify import DAMAGED, OK, STALE, UNFINISHED, verify
from worldprobe.errors import WorldprobeError
from worldprobe.extract import cache as cache_mod
from worldprobe.extract import open_cache
from worldprobe.extract.runner import Batching, run_extraction
from worldprobe.probes import run_probe
from worldprobe.pypi_archives import PackagedArchive

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def study(workspace, tiny_llama_dir, make_entity_table, tmp_path, monkeypatch):
    """A small workspace: one dataset, its cache of the tiny model and one probe run; an empty download cache."""
    monkeypatch.setenv("WORLDPROBE_CACHE", str(tmp_path / "cache"))
    make_entity_table(workspace, [f"Place {i}" for i in range(30)])
    cache = run_extraction(
        "world_place", str(tiny_llama_dir), workspace=workspace, progress=False, batching=Batching(batch_size=8)
    )
    results = run_probe("world_place", str(tiny_llama_dir), workspace=workspace, progress=False)
    return workspace, cache, results


def statuses(workspace, **kwargs) -> dict[str, str]:
    return {f"{f.kind}:{f.path.name}": f.status for f in verify(workspace, progress=False, **kwargs)}


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["worldprobe", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as done:
        code = done.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_a_sound_workspace_verifies_ok(study, monkeypatch, capsys):
    workspace, cache, results = study
    found = statuses(workspace)
    assert found == {"dataset:world_place.parquet": OK, f"activations:{cache.name}": OK, f"results:{results.name}": OK}
    code, out, _ = run(monkeypatch, capsys, "--workspace", str(workspace.root), "verify", "--all")
    assert code == 0 and out.count("\n") == 4 and out.startswith("OK ")
    assert "verified 3 items" in out and "activations 1 ok" in out


def test_values_changed_below_the_file_system_pass_the_open_check_but_not_verify(study, monkeypatch, capsys):
    workspace, cache, _ = study
    file = cache / "layer_002.npy"
    recorded = json.loads((cache / cache_mod.MANIFEST).read_text())["files"]["layer_002.npy"]["sha256"]
    data = bytearray(file.read_bytes())
    data[-10] ^= 0x40
    file.write_bytes(bytes(data))
    checksums.remember(file, recorded)  # as if the stamp had not moved (disk corruption, a raw device write)
    assert open_cache(cache).n_entities == 30  # the cheap check trusts the remembered checksum
    code, out, _ = run(monkeypatch, capsys, "--workspace", str(workspace.root), "verify", "--no-downloads")
    assert code == 1
    line = next(x for x in out.splitlines() if x.startswith("DAMAGED"))
    assert "layer_002.npy has sha256" in line and "--rebuild" in line
    with pytest.raises(WorldprobeError, match="layer_002.npy has sha256"):  # verify re-remembered the truth
        open_cache(cache)


def test_a_table_edited_after_extraction_is_refused_by_probe_and_report(study, tiny_llama_dir):
    """probe read the cache's old copy and report drew it as current, both with exit 0 (extract and verify refused)."""
    from worldprobe.reports import build_report

    workspace, _, _ = study
    table_file = workspace.dataset_table("world_place")
    table = pd.read_parquet(table_file)
    table.loc[3, "latitude"] = 12.5
    table.to_parquet(table_file, index=False)
    with pytest.raises(WorldprobeError, match="does not match its build report") as refused:
        run_probe("world_place", str(tiny_llama_dir), workspace=workspace, progress=False, controls=["shuffled"])
    assert str(refused.value.file) == str(table_file) and "datasets build world_place" in refused.value.hint
    with pytest.raises(WorldprobeError, match="does not match its build report"):
        build_report(workspace)


def test_damaged_dataset_results_and_manifest_are_each_named(study):
    workspace, cache, results = study
    table_file = workspace.dataset_table("world_place")
    table = pd.read_parquet(table_file)
    table.loc[3, "latitude"] = 12.5
    table.to_parquet(table_file, index=False)
    metrics = results / "metrics.parquet"
    metrics.write_bytes(metrics.read_bytes()[:100])
    other = workspace.activations / "broken"
    other.mkdir()
    (other / cache_mod.MANIFEST).write_text("{not json")
    findings = {f.path.name: f for f in verify(workspace, downloads=False, progress=False)}
    assert findings["world_place.parquet"].status == DAMAGED
    assert "fingerprint" in findings["world_place.parquet"].detail
    assert "datasets build world_place" in findings["world_place.parquet"].detail
    assert findings[results.name].status == DAMAGED and "metrics.parquet is unreadable" in findings[results.name].detail
    assert findings[cache_mod.MANIFEST].status == DAMAGED and findings[cache.name].status == OK
    with pytest.raises(WorldprobeError, match="does not match its build report"):  # extraction refuses it too
        run_extraction("world_place", "smollm2-135m", workspace=workspace)


def test_unfinished_and_stale_items_are_reported_but_not_damage(study, tiny_llama_dir, make_entity_table):
    workspace, cache, results = study
    (results / "summary.json").unlink()
    (workspace.activations / "interrupted").mkdir()
    found = statuses(workspace, downloads=False)
    assert found[f"results:{results.name}"] == UNFINISHED and found["activations:interrupted"] == UNFINISHED
    make_entity_table(workspace, [f"Place {i}" for i in range(31)])  # the dataset is rebuilt
    found = statuses(workspace, downloads=False)
    assert found[f"activations:{cache.name}"] == STALE and DAMAGED not in found.values()


def test_results_whose_cache_changed_are_stale(study):
    workspace, cache, results = study
    manifest = json.loads((cache / cache_mod.MANIFEST).read_text())
    manifest["files"]["layer_001.npy"]["sha256"] = "0" * 64  # as after a rebuild with other bytes
    (cache / cache_mod.MANIFEST).write_text(json.dumps(manifest))
    findings = {f.path.name: f for f in verify(workspace, downloads=False, progress=False)}
    assert findings[results.name].status == STALE and "changed since this run" in findings[results.name].detail


def test_downloads_are_fully_rehashed(study, tmp_path, monkeypatch):
    workspace, _, _ = study
    pypi = tmp_path / "cache" / "pypi"
    pypi.mkdir(parents=True)
    wheel = pypi / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake/data.txt", b"data" * 100)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setitem(pins.ARCHIVES, "fake", PackagedArchive("fake", "1.0", wheel.name, sha))
    assert statuses(workspace)[f"download:{wheel.name}"] == OK
    data = bytearray(wheel.read_bytes())
    data[20] ^= 1
    wheel.write_bytes(bytes(data))
    checksums.remember(wheel, sha)  # the stamp-keyed memo is not what verify relies on
    finding = next(f for f in verify(workspace, progress=False) if f.path == wheel)
    assert finding.status == DAMAGED and "the next use fetches it again" in finding.detail


def test_recorded_fingerprint_is_of_the_table_as_stored(workspace, make_entity_table):
    from worldprobe.datasets.table import BuildReport, fingerprint, load, load_report, write_table

    table = make_entity_table(workspace, ["A", "B", "C", "D", "E"])
    table["population"] = pd.Series([10, None, 30, 40, 50], dtype=object)  # parquet reads this back as float64
    write_table(table, BuildReport("world_place", "test", [], 5, 5, {}, "every 5th row", 0), workspace)
    assert fingerprint(load("world_place", workspace)) == load_report("world_place", workspace).fingerprint
    assert fingerprint(table) != load_report("world_place", workspace).fingerprint


def test_tampered_results_are_damaged_and_recomputed(study, tiny_llama_dir, tmp_path):
    """verify passed results whose tables were edited (every R² set to .99): results carried no checksums. Now the
    summary records each table's sha256; verify re-reads them, and the same probe command recomputes the run."""
    from worldprobe.probes.results import file_problems, write_neurons

    workspace, _, results = study
    metrics = pd.read_parquet(results / "metrics.parquet")
    metrics.assign(value=0.99).to_parquet(results / "metrics.parquet", index=False)  # still a valid table
    findings = {f.path.name: f for f in verify(workspace, downloads=False, progress=False)}
    assert findings[results.name].status == DAMAGED and "metrics.parquet" in findings[results.name].detail
    assert "expected" in findings[results.name].detail and "recomputes" in findings[results.name].detail
    again = run_probe("world_place", str(tiny_llama_dir), workspace=workspace, progress=False)
    assert again == results and not (pd.read_parquet(again / "metrics.parquet")["value"] == 0.99).all()
    assert statuses(workspace, downloads=False)[f"results:{results.name}"] == OK

    from worldprobe.probes.results import NEURON_COLUMNS

    table = pd.DataFrame({c: [1] for c in NEURON_COLUMNS})
    folder = write_neurons(tmp_path / "neurons", table, {"dataset": "world_place"})
    record = json.loads((folder / "neurons.json").read_text())
    assert file_problems(folder, record, full=True) == []
    table.assign(**{NEURON_COLUMNS[-1]: 2}).to_parquet(folder / "neurons.parquet", index=False)
    assert "contents changed" in file_problems(folder, record, full=True)[0]


def test_a_moved_or_copied_workspace_is_checked_against_its_own_caches(study, tmp_path):
    """verify followed the absolute cache paths saved in summary.json: after `mv` every result was "stale", after
    `cp -a` it checked the original's caches."""
    import shutil

    from worldprobe.workspace import Workspace

    workspace, _, results = study
    recorded = json.loads((results / "summary.json").read_text())["cache"]["path"]
    assert recorded.startswith("activations/") and not Path(recorded).is_absolute()  # relative to the workspace
    moved = Workspace(tmp_path / "moved")
    shutil.copytree(workspace.root, moved.root)
    shutil.rmtree(workspace.root)  # the original is gone: as after `mv`
    found = statuses(moved, downloads=False)
    assert found[f"results:{results.name}"] == OK, found


def test_an_edited_summary_is_caught_by_its_own_checksum(tmp_path):
    """summary.json carries the sha256 of its own content: an R² edited in it makes the run unfinished for every
    stage that reuses it (is_complete) and damaged for verify; its layout (indentation) does not matter."""
    import json

    import pandas as pd

    from worldprobe.probes.results import SELF_CHECKSUM, is_complete, run_problems, write_run

    folder = write_run(tmp_path / "run", {"metrics": pd.DataFrame({"value": [0.5]})},
                       {"run_key": "k", "headline": {"r2": 0.5}})  # fmt: skip
    assert is_complete(folder, "k", ("metrics",))
    summary = json.loads((folder / "summary.json").read_text())
    assert len(summary[SELF_CHECKSUM]) == 64
    (folder / "summary.json").write_text(json.dumps(summary))  # another layout, same content
    assert is_complete(folder, "k", ("metrics",))
    summary["headline"]["r2"] = 0.99
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    assert run_problems(folder, "k", ("metrics",)) == ["summary.json changed since the run wrote it (its content no "
                                                       "longer has its recorded sha256)"]  # fmt: skip
    assert not is_complete(folder, "k", ("metrics",))
