"""A whole (reduced) study end to end: serial run, re-run that redoes nothing, Ray with 2 workers and 2 shards per
cache, kill -9 resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from worldprobe.errors import WorldprobeError
from worldprobe.study import load_study, run_study
from worldprobe.workspace import Workspace

pytestmark = pytest.mark.slow

COUNTRIES = {"Aland": (10.0, 20.0), "Borea": (50.0, -100.0), "Cydon": (-30.0, 140.0), "Dorra": (35.0, 5.0)}
COLUMNS = ["name", "entity_subtype", "country", "latitude", "longitude", "has_thumbnail", "page_views", "entity_type",
           "total_area", "population", "is_test"]  # fmt: skip


def release_csv(path: Path, n: int = 160) -> Path:
    """A synthetic world_place release CSV: towns of four countries around their centres, 20% test rows."""
    rng = np.random.default_rng(0)
    countries = rng.choice(list(COUNTRIES), n)
    centre = np.array([COUNTRIES[c] for c in countries])
    letters = np.array(list("abcdefghiklmnoprstuvz"))
    names = ["".join(rng.choice(letters, 6)).title() + f" {c[:2]}" + str(i) for i, c in enumerate(countries)]
    table = pd.DataFrame(
        {"name": names, "entity_subtype": "Town", "country": countries,
         "latitude": centre[:, 0] + rng.normal(0, 3, n), "longitude": centre[:, 1] + rng.normal(0, 3, n),
         "has_thumbnail": 1, "page_views": 6000.0, "entity_type": rng.choice(["populated_place", "structure"], n),
         "total_area": "", "population": "", "is_test": np.arange(n) % 5 == 0}
    )  # fmt: skip
    table[COLUMNS].to_csv(path, index=False)
    return path


def study_file(
    tmp_path: Path, model: Path, *, n: int = 160, batch_size: int = 8, flush_rows: int = 64, shards: int = 1
) -> Path:
    csv = release_csv(tmp_path / "world_place.csv", n)
    text = f"""
[study]
name = "reduced"
seed = 1

[[datasets]]
name = "world_place"
source = "paper"
from_path = "{csv}"

[extract]
models = ["{model}"]
random_init = ["{model}"]
random_init_seeds = 2
dtype = "float32"
batch_size = {batch_size}
flush_rows = {flush_rows}
shards = {shards}

[probes]
controls = ["shuffled", "lexical", "embedding", "group_oracle", "within_group", "alt_world", "random_init"]

[neurons]
datasets = ["world_place"]
top_k = 3
"""
    path = tmp_path / "reduced.toml"
    path.write_text(text)
    return path


def metrics_of(workspace: Workspace) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in sorted(workspace.results.glob("*/metrics.parquet"))]
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(list(table.columns.drop("value"))).reset_index(drop=True)


def layer_files(workspace: Workspace) -> dict[str, bytes]:
    return {
        str(p.relative_to(workspace.activations)): p.read_bytes()
        for p in sorted(workspace.activations.glob("*/layer_*.npy"))
    }


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory, tiny_llama_dir):
    root = tmp_path_factory.mktemp("serial")
    study = load_study(study_file(root, tiny_llama_dir))
    workspace = Workspace(root / "ws")
    outputs = run_study(study, workspace)
    return study, workspace, outputs


def test_serial_run_writes_every_stage(serial_run):
    study, workspace, outputs = serial_run
    assert outputs["report"][0].name == "index.html" and outputs["report"][0].exists()
    metrics = metrics_of(workspace)
    assert {"none", "shuffled", "lexical", "alt_world", "random_init"} <= set(metrics["control"])
    # the model and two random twins, embeddings + 4 blocks each, and the model's pooled embeddings (embedding control)
    assert len(layer_files(workspace)) == 3 * 5 + 1
    assert list(workspace.results.glob("*/neurons.parquet"))


def test_rerun_redoes_nothing(serial_run):
    study, workspace, _ = serial_run
    stamps = {p: p.stat().st_mtime_ns for p in workspace.root.rglob("*") if p.suffix in {".parquet", ".npy"}}
    index = workspace.reports / "index.html"
    stamps[index] = index.stat().st_mtime_ns
    started = time.perf_counter()
    run_study(study, workspace)
    assert time.perf_counter() - started < 60
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def test_a_finished_study_is_asked_here_and_sends_no_unit_to_the_executor(serial_run, tmp_path):
    """Each unit is first asked in this process whether its work is done (reuse_only): a re-run starts no worker
    pool and loads no model; a unit whose work is missing says so where it would start, having written nothing."""
    from worldprobe.reuse import WorkNeeded, reuse_only
    from worldprobe.study import SerialExecutor, Unit, plan, run_unit

    class Recording(SerialExecutor):
        sent: list = []

        def map(self, fn, units, progress):
            self.sent.extend(units)
            return super().map(fn, units, progress)

    study, workspace, _ = serial_run
    recording = Recording()
    outputs = run_study(study, workspace, executor=recording)
    assert recording.sent == [] and set(outputs) >= {"datasets", "models", "extract", "probes", "report"}
    empty = Workspace(tmp_path / "empty")
    entry = plan(study)["datasets"][0]
    with reuse_only(), pytest.raises(WorkNeeded, match="build world_place"):
        run_unit(Unit("datasets", entry.label, entry.params), study, empty)
    assert not empty.dataset_table("world_place").exists()
    shutil.copytree(workspace.datasets, empty.datasets, dirs_exist_ok=True)
    extract = plan(study)["extract"][0]
    with reuse_only(), pytest.raises(WorkNeeded, match="extract world_place"):
        run_unit(extract, study, empty)
    assert not empty.activations.exists() or not any(empty.activations.iterdir())


def test_extraction_runs_each_models_longest_datasets_first(tmp_path):
    from worldprobe.study import Unit
    from worldprobe.study.run import _longest_first

    workspace = Workspace(tmp_path)
    workspace.datasets.mkdir(parents=True, exist_ok=True)
    for name, texts in {"world_place": ["Paris"] * 10, "headline": ["A long headline about a thing"] * 10}.items():
        pd.DataFrame({"text": texts}).to_parquet(workspace.dataset_table(name))
    units = [Unit("extract", f"{d} x {m}", {"dataset": d, "model": m}) for m in ("a", "b")
             for d in ("world_place", "nyc_place", "headline")]  # fmt: skip
    order = [(u.params["model"], u.params["dataset"]) for u in _longest_first(units, workspace)]
    assert order == [("a", "headline"), ("a", "world_place"), ("a", "nyc_place"),
                     ("b", "headline"), ("b", "world_place"), ("b", "nyc_place")]  # fmt: skip


def test_a_copied_workspace_is_a_finished_study_and_its_rerun_redoes_nothing(serial_run, tmp_path):
    """Paths inside products are relative to the workspace: a finished study copied elsewhere (`cp -a`) is finished
    there too, and re-running it there rewrites no table, layer or results file."""
    study, workspace, _ = serial_run
    copy = Workspace(tmp_path / "copied")
    shutil.copytree(workspace.root, copy.root)
    stamps = {p: p.stat().st_mtime_ns for p in copy.root.rglob("*") if p.suffix in {".parquet", ".npy"}}
    run_study(study, copy)
    assert stamps and stamps == {p: p.stat().st_mtime_ns for p in stamps}


def test_a_plan_counts_finished_caches_as_on_disk(serial_run, tmp_path):
    """--dry-run marks the caches a re-run would reuse and needs no disk for them (a big study re-run on a nearly
    full disk was refused for space its own caches already took)."""
    from worldprobe.study import check_disk, estimate_disk

    study, workspace, _ = serial_run
    done = estimate_disk(study, workspace)
    assert done and all(e.on_disk for e in done) and check_disk(done, workspace)[0] == 0
    fresh = estimate_disk(study, Workspace(tmp_path / "empty"))
    assert not any(e.on_disk for e in fresh) and check_disk(fresh, workspace)[0] > 0


def test_ray_with_two_workers_and_two_shards_per_cache_matches_serial(serial_run, tmp_path, tiny_llama_dir):
    pytest.importorskip("ray")
    from worldprobe.study.ray import RayExecutor

    _, serial_ws, _ = serial_run
    study = load_study(study_file(tmp_path, tiny_llama_dir, shards=2))
    ray_ws = Workspace(tmp_path / "ws")
    executor = RayExecutor(num_workers=2)
    try:
        run_study(study, ray_ws, executor=executor, stages=("datasets", "extract", "probes", "neurons"))
    finally:
        executor.shutdown()
    pd.testing.assert_frame_equal(metrics_of(ray_ws), metrics_of(serial_ws))
    assert layer_files(ray_ws) == layer_files(serial_ws)
    manifests = [json.loads(p.read_text()) for p in ray_ws.activations.glob("*/manifest.json")]
    sharded = [m for m in manifests if m["aggregation"] == "last"]
    assert len(sharded) == 3 and all(m["complete"] and m["shards"] == 2 for m in sharded)
    (pooled,) = [m for m in manifests if m["aggregation"] == "mean"]  # the embedding control's, made by the probe unit
    assert pooled["complete"] and pooled["layers"] == [0]
    assert not list(ray_ws.activations.glob("*/progress*")) and not list(ray_ws.activations.glob("*/overflow*"))


@pytest.mark.slow
def test_two_worker_processes_match_serial(serial_run, tmp_path, tiny_llama_dir):
    from worldprobe.study import ProcessExecutor

    _, serial_ws, _ = serial_run
    study = load_study(study_file(tmp_path, tiny_llama_dir))
    workspace = Workspace(tmp_path / "ws")
    run_study(study, workspace, executor=ProcessExecutor(2), stages=("datasets", "extract", "probes", "neurons"))
    pd.testing.assert_frame_equal(metrics_of(workspace), metrics_of(serial_ws))
    assert layer_files(workspace) == layer_files(serial_ws)


def test_study_file_chooses_its_executor(tmp_path, tiny_llama_dir):
    path = study_file(tmp_path, tiny_llama_dir)
    head = 'name = "reduced"\nexecutor = "processes"\nworkers = 2'
    path.write_text(path.read_text().replace('name = "reduced"', head))
    study = load_study(path)
    assert study.executor == "processes" and study.workers == min(2, os.cpu_count() or 1)
    path.write_text(path.read_text().replace('"processes"', '"threads"'))
    with pytest.raises(WorldprobeError, match="unknown executor 'threads'"):
        load_study(path)


def test_kill_9_during_extraction_then_rerun_matches(serial_run, tmp_path, tiny_llama_dir):
    _, serial_ws, _ = serial_run
    path = study_file(tmp_path, tiny_llama_dir, flush_rows=8)
    workspace = Workspace(tmp_path / "ws")
    command = [sys.executable, "-m", "worldprobe.cli", "--workspace", str(workspace.root), "run", str(path)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, ledgers = time.time() + 300, []
    while time.time() < deadline and process.poll() is None and not ledgers:
        ledgers = list(workspace.root.glob("activations/*/progress.json"))
        time.sleep(0.02)
    assert ledgers, process.stderr.read().decode()[-2000:] if process.poll() is not None else "no ledger in time"
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run(command, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "report:" in resumed.stdout
    # Same bytes as the uninterrupted run (only the ledger interval differs), no missing or duplicate rows.
    assert layer_files(workspace) == layer_files(serial_ws)
    pd.testing.assert_frame_equal(metrics_of(workspace), metrics_of(serial_ws))


def test_a_worker_process_runs_one_thread_of_every_pool():
    """Two workers on two cores: torch, OpenMP and OpenBLAS each get one thread (OpenBLAS's default, one per core,
    made two probe runs side by side take 29 s each instead of 19 s)."""
    code = ("from worldprobe.study.executors import _one_thread; _one_thread(); import torch; "
            "from threadpoolctl import threadpool_info; "
            "print(torch.get_num_threads(), sorted({p['num_threads'] for p in threadpool_info()}))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "[1]"]


def test_a_changed_csv_is_built_again_not_reused(tmp_path):
    """The table is reused only while the file at from_path holds the bytes its build report records: the same path
    string with other contents (an edited CSV) builds anew."""
    from worldprobe.datasets import load
    from worldprobe.study.runners import DatasetEntry, _build_dataset

    csv = release_csv(tmp_path / "world_place.csv", 60)
    entry = DatasetEntry("world_place", source="paper", from_path=str(csv))
    workspace = Workspace(tmp_path / "ws")
    table = _build_dataset(entry, 0, workspace)
    stamp = table.stat().st_mtime_ns
    assert _build_dataset(entry, 0, workspace) == table and table.stat().st_mtime_ns == stamp  # unchanged: reused
    edited = pd.read_csv(csv, keep_default_na=False)
    edited.loc[0, "latitude"] = 45.0
    edited.to_csv(csv, index=False)
    _build_dataset(entry, 0, workspace)
    assert load("world_place", workspace)["latitude"].iloc[0] == 45.0


def _children(pid: int) -> set[int]:
    """The PIDs whose parent is ``pid`` (read from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a zombie has ended; its parent has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads worker PIDs from /proc (Linux)")
@pytest.mark.parametrize("ending", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_ends_the_worker_processes_too(tmp_path, tiny_llama_dir, ending):
    """SIGTERM reaches the main process only: its pool's workers went on extracting, adopted by PID 1, and held the
    cache locks, so a rerun failed. Now the run ends like Ctrl-C (exit 130, one line) and takes its workers along."""
    path = study_file(tmp_path, tiny_llama_dir, flush_rows=8)
    workspace = Workspace(tmp_path / "ws")
    command = [sys.executable, "-m", "worldprobe.cli", "--workspace", str(workspace.root), "run", str(path),
               "--executor", "processes", "--workers", "2"]  # fmt: skip
    process = subprocess.Popen(command, env={**os.environ, "TQDM_DISABLE": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)  # fmt: skip
    deadline, workers = time.time() + 300, set()
    while time.time() < deadline and process.poll() is None and len(workers) < 2:
        if list(workspace.root.glob("activations/*/progress.json")):
            workers = {pid for pid in _children(process.pid) if "spawn_main" in _cmdline(pid)}
        time.sleep(0.05)
    assert len(workers) >= 2, process.stderr.read().decode()[-2000:] if process.poll() is not None else "no workers"
    process.send_signal(ending)
    assert process.wait(timeout=60) == 130
    assert "interrupted" in process.stderr.read().decode()
    time.sleep(0.5)
    alive = [pid for pid in workers if _running(pid)]
    assert not alive, f"worker processes still running after SIGTERM: {alive}"


def test_a_worker_that_dies_is_one_line_not_a_traceback():
    """A worker killed mid-unit (the out-of-memory killer, a stray kill) raised BrokenProcessPool with a traceback."""
    from helpers import die_abruptly

    from worldprobe.study import ProcessExecutor, Unit

    units = [Unit("extract", f"unit {i}", {}) for i in range(2)]
    with pytest.raises(WorldprobeError, match="a worker process ended abruptly during extract") as error:
        ProcessExecutor(2).map(die_abruptly, units, lambda: None)
    assert "the same command resumes it" in error.value.hint
