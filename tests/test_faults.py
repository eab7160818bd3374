"""The fault table: bad inputs a new user types, each driven through the real `worldprobe` entry point (`cli.main`).

Every row asserts: the exit code, ONE error line on stderr (`error: ...`; besides it only one-line `warning: ...`s,
e.g. for a damaged folder that is skipped; no traceback), the row's phrase, and that nothing was silently produced
(no new or changed dataset table, finished cache, results folder or report).

Adding a fault is one line in FAULTS: the command after `worldprobe` (placeholders: {tiny} = a tiny local model
folder, {tmp} = a scratch folder holding the row's `files`), the exit code, a phrase of the message, and optionally
the starting workspace (`base`: "empty", "table" = a built world_place, "cache" = that table and a finished cache of
{tiny}), a `damage(workspace)` function applied after the base (`garbage(glob)`, `truncated(glob)`), files to write
into {tmp} (e.g. a study variant from `study(old, new)`), environment variables (None removes one), and `pending`
(a reason) for a fault not fixed yet: an expected failure that turns into a test failure once it passes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from worldprobe import cli

QUICK = (Path(cli.__file__).parent / "studies" / "quick.toml").read_text()


def study(old: str, new: str, text: str = QUICK) -> dict[str, str]:
    """A study file `{tmp}/study.toml`: the quick study with `old` replaced by `new` (once)."""
    assert old in text, old
    return {"study.toml": text.replace(old, new, 1)}


@dataclass(frozen=True)
class Fault:
    command: str
    code: int
    phrase: str
    base: str = "table"
    damage: Callable[[Path], None] | None = None
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str | None] = field(default_factory=dict)
    process: bool = False  # also run it as a separate `python -m worldprobe.cli` process
    pending: str | None = None  # not fixed yet (by whom): an expected failure until it passes

    def __str__(self) -> str:  # the test id
        return self.command


def garbage(pattern: str, text: str = "{ not what it should be") -> Callable[[Path], None]:
    """A damage: overwrite the workspace files matching ``pattern`` with ``text``."""

    def damage(workspace: Path) -> None:
        for path in workspace.glob(pattern):
            path.write_text(text)

    return damage


def another_sample(workspace: Path) -> None:
    """A damage: a second finished cache of the same build and size as the one there, of another sample (another
    --limit seed): the manifest copied with another entity order."""
    import json

    (cache,) = [p for p in (workspace / "activations").iterdir() if p.is_dir()]
    copy = cache.with_name(cache.name + "-other-sample")
    shutil.copytree(cache, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest.update(entity_order_sha256="0" * 64, limit=manifest["n_entities"], limit_seed=1)
    (copy / "manifest.json").write_text(json.dumps(manifest))


def truncated(pattern: str, size: int = 100) -> Callable[[Path], None]:
    """A damage: cut the workspace files matching ``pattern`` to ``size`` bytes."""

    def damage(workspace: Path) -> None:
        for path in workspace.glob(pattern):
            os.truncate(path, size)

    return damage


TINY = "-d world_place -m {tiny}"
FAULTS = [
    # usage errors of the command line (typer's bundled click)
    Fault("frobnicate", 2, "No such command 'frobnicate'", process=True),
    Fault("extract", 2, "Missing option '--dataset'", process=True),
    Fault("extract -d world_place --batch-size abc", 2, "Invalid value for '--batch-size'", process=True),
    Fault("extract -d world_place --nope", 2, "No such option: --nope"),
    Fault("models extra", 2, "unexpected extra argument"),
    Fault("datasets show", 2, "Missing argument 'name'"),
    Fault("datasets build art --seed abc", 2, "Invalid value for '--seed'"),
    # numbers out of range: the rule of the argument they become (worldprobe.checks), the same words as the API's
    Fault("datasets build art --limit 0", 2, "limit must be at least 1, not 0", process=True),
    Fault("datasets build art --limit -3", 2, "limit must be at least 1, not -3"),
    Fault(f"extract {TINY} --batch-size 0", 2, "batch_size must be at least 1, not 0"),
    Fault(f"extract {TINY} --batch-size -5", 2, "batch_size must be at least 1, not -5"),
    Fault(f"extract {TINY} --limit 0", 2, "limit must be at least 1, not 0"),
    Fault(f"extract {TINY} --threads 0", 2, "threads must be at least 1, not 0"),
    Fault(f"extract {TINY} --flush-every 0", 2, "flush_rows must be at least 1, not 0"),
    Fault(f"extract {TINY} --seed -1", 2, "seed must be at least 0, not -1"),
    Fault(f"extract {TINY} --seed 99999999999999999999", 2, "seed must be at most 9223372036854775807"),
    Fault(f"probe {TINY} --threads -1", 2, "threads must be at least 1, not -1"),
    Fault(f"neurons {TINY} --top-k 0", 2, "top_k must be at least 1, not 0"),
    Fault(f"neurons {TINY} --batch-size 0", 2, "batch_size must be at least 1, not 0"),
    Fault(f"neurons {TINY} --limit -1", 2, "limit must be at least 1, not -1"),
    Fault("report --seed -4", 2, "seed must be at least 0, not -4"),
    Fault("run --workers 0", 2, "workers must be at least 1, not 0"),
    # names that do not exist
    Fault("datasets build moon_place", 2, "unknown dataset 'moon_place'"),
    Fault("datasets build art --source nowhere", 2, "unknown source 'nowhere'"),
    Fault("datasets show art", 2, "dataset not built yet", base="empty"),
    Fault("extract -d art", 2, "dataset not built yet"),
    Fault("extract -d moon_place", 2, "unknown dataset 'moon_place'"),
    Fault("extract -d world_place -m ./no-such-folder", 2, "neither a preset, a folder"),
    Fault("extract -d world_place -m a/b/c", 2, "neither a preset, a folder"),
    Fault("extract -d world_place -m random:no-such-folder/x/y", 2, "neither a preset, a folder"),
    Fault("extract -d world_place -m smollm2-135", 2, "did you mean the preset 'smollm2-135m'"),
    Fault("extract -d world_place -m {tmp}/fake.gguf", 2, "not a GGUF file", files={"fake.gguf": "junk"}),
    Fault("extract -d world_place -m {tmp}/none.gguf", 2, "GGUF file not found"),
    Fault("extract -d world_place -m {tmp}/empty", 2, "no config.json", files={"empty/notes.txt": ""}),
    Fault(f"extract {TINY} --gguf-file nope.gguf", 2, "GGUF file not found"),
    Fault(f"extract {TINY} --prompt where_nyc", 2, "has no prompt 'where_nyc'"),
    Fault(f"extract {TINY} --layers 99", 2, "outside 0..4"),
    Fault(f"extract {TINY} --layers a:b", 2, "cannot read layers 'a:b'"),
    Fault(f"extract {TINY} --layers 1,,2", 2, "cannot read layers"),
    Fault(f"extract {TINY} --dtype float8", 2, "unknown dtype 'float8'"),
    Fault(f"extract {TINY} --device tpu", 2, "unknown device 'tpu'"),
    Fault(f"extract {TINY} --device cuda:99", 2, "asked for, but torch sees", process=True),
    Fault(f"extract {TINY} --max-memory foo", 2, "cannot read 'foo' in --max-memory"),
    Fault(f"extract {TINY} --device cpu --max-memory 0=1GiB", 2, "it would be ignored"),
    Fault(f"extract {TINY} --load-in-4bit --load-in-8bit", 2, "choose one of"),
    Fault(f"probe {TINY}", 2, "does not exist yet"),
    Fault("probe -d moon_place", 2, "unknown dataset 'moon_place'"),
    Fault(f"probe {TINY} --prompt nope", 2, "has no prompt 'nope'"),
    Fault(f"probe {TINY} --probe lasso", 2, "unknown probe 'lasso'", base="cache"),
    Fault(f"probe {TINY} --control nope", 2, "unknown control", base="cache"),
    Fault(f"probe {TINY} --target nosuch", 2, "no column 'nosuch'", base="cache"),
    Fault(f"probe {TINY} --target name", 2, "is not numeric", base="cache"),
    Fault(f"probe {TINY} --holdout nosuch", 2, "no column 'nosuch' to hold out", base="cache"),
    Fault(f"probe {TINY} --layers 99", 2, "outside 0..4", base="cache"),
    Fault(f"neurons {TINY} --prompt nope", 2, "has no prompt 'nope'"),
    Fault(f"neurons {TINY} --layers 99", 2, "outside 0..4"),
    Fault(f"ask {TINY} --limit 0", 2, "limit must be at least 1, not 0"),
    Fault(f"steer {TINY} --random -1", 2, "random_directions must be at least 1, not -1"),
    Fault(f"ask {TINY}", 2, "does not exist yet"),
    Fault(f"ask {TINY} --question borough", 2, "has no question 'borough'", base="cache"),
    Fault(f"ask {TINY} --format chat", 2, "has no chat template", base="cache"),
    Fault(f"steer {TINY} --positions middle", 2, "unknown position 'middle'", base="cache"),
    Fault(f"steer {TINY} --doses a,b", 2, "cannot read doses", base="cache"),
    Fault(f"steer {TINY} --doses 1,2", 2, "needs its negative", base="cache"),
    Fault(f"steer {TINY} --direction lda", 2, "unknown steering direction 'lda'", base="cache"),
    Fault(f"steer {TINY} --layers 4", 2, "cannot reach the answer", base="cache"),
    Fault(f"context {TINY} --limit 0", 2, "limit must be at least 2, not 0"),
    Fault(f"context {TINY} --question borough", 2, "has no question 'borough'", base="cache"),
    # files and folders
    Fault("report", 2, "no finished results found", base="empty"),
    Fault("report", 2, "no finished results found", base="cache"),
    Fault("report --out {tmp}/afile", 2, "it is a file, not a folder", files={"afile": ""}),
    Fault("--workspace {tmp}/afile datasets show art", 2, "cannot use the workspace", files={"afile": ""}),
    Fault(f"extract {TINY}", 2, "cannot use the download cache", files={"afile": ""},
          env={"WORLDPROBE_CACHE": "{tmp}/afile"}),  # fmt: skip
    Fault("datasets build world_place --source paper --from {tmp}/nope.csv", 2, "no such file"),
    Fault("datasets build world_place --source paper --from {tmp}/bad.csv", 2, "missing column",
          files={"bad.csv": "not,a\nrelease,csv\n"}),  # fmt: skip
    Fault("datasets build art --from {tmp}/bad.csv", 2, "--from would be ignored", files={"bad.csv": "x\n"}),
    Fault("datasets build art --drop-split-leaks", 2, "applies to the release split"),
    Fault("datasets build headline --source live", 2, "needs a key", env={"NYT_API_KEY": None}),
    Fault("datasets build historical_figure --source live", 2, "no fixed public download URL",
          env={"WORLDPROBE_AGE_DATASET_URL": None}),  # fmt: skip
    # study files (checked completely before any work: --dry-run shows the same errors)
    Fault("run {tmp}/nope.toml", 2, "study file not found"),
    Fault("run nope", 2, "no shipped study 'nope'"),
    Fault("run {tmp}", 2, "cannot read the study file"),
    Fault("run --executor nope --dry-run", 2, "unknown executor 'nope'"),
    Fault("run --executor ray --address nonsense", 2, "cannot read the Ray address 'nonsense'"),
    Fault("run --executor serial --workers 2", 2, "--workers applies to --executor processes or ray"),
    Fault("run --executor processes --address auto", 2, "--address applies to --executor ray"),
    Fault("run {tmp}/study.toml", 2, "not valid TOML", files={"study.toml": "[study\nname ="}),
    Fault("run {tmp}/study.toml", 2, "datasets[0].limit", files=study("limit = 2000", 'limit = "ten"'), process=True),
    Fault("run {tmp}/study.toml", 2, "datasets[1].limit",
          files=study('name = "us_place"\nlimit = 2000', 'name = "us_place"\nlimit = 0')),  # fmt: skip
    Fault("run {tmp}/study.toml", 2, "study.seed", files=study("seed = 0", 'seed = "abc"')),
    Fault("run {tmp}/study.toml", 2, "unknown executor 'threads'",
          files=study('executor = "processes"', 'executor = "threads"')),  # fmt: skip
    Fault("run {tmp}/study.toml", 2, "study.workers", files=study("workers = 2", "workers = 0")),
    Fault("run {tmp}/study.toml", 2, "must be a list", files=study('models = ["smollm2-135m", "gemma3-270m"]',
                                                                    'models = "smollm2-135m"')),
    Fault("run {tmp}/study.toml", 2, "must not be empty", files=study('models = ["smollm2-135m", "gemma3-270m"]',
                                                                       "models = []")),
    Fault("run {tmp}/study.toml", 2, "unknown probe 'lasso'", files=study('probes = ["ridge"]', 'probes = ["lasso"]')),
    Fault("run {tmp}/study.toml", 2, "did you mean 'random_init'", files=study('"random_init"]', '"random_int"]')),
    Fault("run {tmp}/study.toml", 2, "probes.holdouts", files=study("holdouts = true", "holdouts = 1")),
    Fault("run {tmp}/study.toml", 2, "listed twice", files=study('name = "us_place"', 'name = "world_place"')),
    Fault("run {tmp}/study.toml", 2, "not in extract.models",
          files=study('random_init = ["smollm2-135m", "gemma3-270m"]', 'random_init = ["qwen2.5-1.5b"]')),  # fmt: skip
    Fault("run {tmp}/study.toml", 2, "outside 0..18 for gemma3-270m",
          files=study('random_init_seeds = 1', 'random_init_seeds = 1\nlayers = "20"')),  # fmt: skip
    Fault("run {tmp}/study.toml", 2, "neurons.top_k", files=study("top_k = 10", "top_k = 0")),
    Fault("run {tmp}/study.toml", 2, "extract.shards",
          files=study('random_init_seeds = 1', 'random_init_seeds = 1\nshards = 0')),  # fmt: skip
    Fault("run {tmp}/study.toml", 2, "did you mean 'neurons'", files=study("[neurons]", "[neuron]")),
    Fault("run {tmp}/study.toml", 2, "'models' belongs in [extract]",
          files=study("[extract]\nmodels", "models = []\n[extract]\nmodels")),  # fmt: skip
    Fault("run {tmp}/study.toml", 2, "extract.device", files=study('random_init_seeds = 1', 'random_init_seeds = 1\n'
                                                                    'device = "cuda:99"')),  # fmt: skip
    Fault("run {tmp}/study.toml --dry-run", 2, "cannot load the config of model 'gpt2'",
          files=study('"gemma3-270m"]\nrandom_init = ["smollm2-135m", "gemma3-270m"]',
                      '"gpt2"]\nrandom_init = ["smollm2-135m"]')),  # fmt: skip
    # damaged files
    Fault("datasets show world_place", 2, "damaged dataset table", damage=garbage("datasets/*.parquet")),
    Fault("datasets show world_place", 2, "damaged build report", damage=garbage("datasets/*.build.json")),
    Fault(f"extract {TINY}", 2, "damaged dataset table", damage=garbage("datasets/*.parquet")),
    Fault(f"probe {TINY}", 2, "layer_002.npy is 100 bytes", base="cache",
          damage=truncated("activations/*/layer_002.npy")),  # fmt: skip
    Fault(f"probe {TINY}", 2, "unreadable manifest", base="cache", damage=garbage("activations/*/manifest.json")),
    # several caches of one build that neither holds the other: named, not guessed between
    Fault(f"probe {TINY}", 2, "neither holds the other: both hold 12 entities of different samples", base="cache",
          damage=another_sample),  # fmt: skip
    Fault(f"steer {TINY} --direction das --das-steps 0", 2, "das_steps must be at least 1, not 0", base="cache"),
    Fault(f"steer {TINY} --doses nan,-nan", 2, "doses must be a finite number, not nan", base="empty"),
    Fault(f"steer {TINY} --doses inf,-inf", 2, "doses must be a finite number, not inf", base="empty"),
    Fault("run {tmp}/study.toml --dry-run", 2, "steer.doses",
          files=study("[probes]", '[steer]\ndoses = [nan, 1.0]\n\n[probes]')),  # fmt: skip
]

PRODUCTS = ("datasets/*.parquet", "activations/*/manifest.json", "activations/*/layer_*.npy", "results/*/*",
            "reports/index.html", "*/index.html")  # fmt: skip


def products(root: Path) -> dict[str, int]:
    """Every file a stage hands on, with its modification time: a fault must add or change none."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for pattern in PRODUCTS for p in root.glob(pattern)}


@pytest.fixture(scope="module")
def bases(tmp_path_factory, tiny_llama_dir) -> dict[str, Path]:
    """Template workspaces: empty, a small built world_place table, and that table with a finished cache."""
    import torch
    from helpers import write_entity_table

    from worldprobe.extract.runner import run_extraction
    from worldprobe.workspace import Workspace

    root = tmp_path_factory.mktemp("bases")
    texts = ["Paris", "London", "Tokyo", "Cairo", "Hamburg", "Zürich", "Kraków", "Mexico City", "Reykjavík", "Ōsaka",
             "São Paulo", "St. Louis"]  # fmt: skip
    (root / "empty").mkdir()
    write_entity_table(Workspace(root / "table"), texts)
    write_entity_table(Workspace(root / "cache"), texts)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_extraction("world_place", str(tiny_llama_dir), workspace=root / "cache", progress=False)
    finally:
        torch.set_num_threads(threads)
    return {name: root / name for name in ("empty", "table", "cache")}


def _prepare(fault: Fault, bases: dict[str, Path], tmp_path: Path, tiny: Path) -> tuple[Path, list[str], dict]:
    workspace = tmp_path / "workspace"
    shutil.copytree(bases[fault.base], workspace)
    if fault.damage is not None:
        fault.damage(workspace)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name, text in fault.files.items():
        (scratch / name).parent.mkdir(parents=True, exist_ok=True)
        (scratch / name).write_text(text)
    fill = {"tiny": str(tiny), "tmp": str(scratch)}
    args = [arg.format(**fill) for arg in shlex.split(fault.command)]
    env = {key: None if value is None else value.format(**fill) for key, value in fault.env.items()}
    return workspace, args, env


def _rows(faults: list[Fault]) -> list:
    return [pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=f.pending)) if f.pending else f
            for f in faults]  # fmt: skip


@pytest.mark.parametrize("fault", _rows(FAULTS), ids=str)
def test_fault(fault, bases, tmp_path, tiny_llama_dir, hub_offline, monkeypatch, capsys):
    workspace, args, env = _prepare(fault, bases, tmp_path, tiny_llama_dir)
    monkeypatch.setenv("WORLDPROBE_WORKSPACE", str(workspace))
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.delenv(key, raising=False) if value is None else monkeypatch.setenv(key, value)
    before = products(workspace)
    monkeypatch.setattr(sys, "argv", ["worldprobe", *args])
    with pytest.raises(SystemExit) as done:
        cli.main()  # a traceback would escape here and fail the test
    out, err = capsys.readouterr()
    assert (done.value.code or 0) == fault.code, err
    if fault.code:
        lines = err.strip().splitlines()
        errors = [line for line in lines if line.startswith("error: ")]
        assert len(errors) == 1 and all(line.startswith(("error: ", "warning: ")) for line in lines), err
        assert fault.phrase in err, err
        assert products(workspace) == before, "a failed command produced or changed files"
        if fault.base != "empty":
            assert products(workspace), "the base workspace lost its files"


@pytest.mark.slow
@pytest.mark.parametrize("fault", _rows([f for f in FAULTS if f.process]), ids=str)
def test_fault_in_a_real_process(fault, bases, tmp_path, tiny_llama_dir):
    """The same rows as the installed command runs them: exit code and one line on stderr, nothing else."""
    workspace, args, env = _prepare(fault, bases, tmp_path, tiny_llama_dir)
    environ = {**os.environ, "WORLDPROBE_WORKSPACE": str(workspace), "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": str(Path(cli.__file__).parents[1])}  # fmt: skip
    environ.update({k: v for k, v in env.items() if v is not None})
    before = products(workspace)
    result = subprocess.run([sys.executable, "-m", "worldprobe.cli", *args], env=environ, capture_output=True,
                            text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == fault.code, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and fault.phrase in result.stderr and result.stdout == ""
    assert products(workspace) == before


def test_no_arguments_prints_the_help_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["worldprobe"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 2 and "Usage: worldprobe" in capsys.readouterr().out


def test_a_programming_error_keeps_its_traceback(monkeypatch):
    """Only user errors are shortened: a bug must still show where it happened."""
    monkeypatch.setattr("worldprobe.extract.models.PRESETS", None)
    monkeypatch.setattr(sys, "argv", ["worldprobe", "models"])
    with pytest.raises(AttributeError):
        cli.main()


def test_ctrl_c_exits_130_and_says_the_work_resumes(monkeypatch, capsys):
    """typer turns KeyboardInterrupt into an exit code the entry point used to drop (exit 0 after Ctrl-C)."""

    class Interrupted:
        def values(self):
            raise KeyboardInterrupt

    monkeypatch.setattr("worldprobe.extract.models.PRESETS", Interrupted())
    monkeypatch.setattr(sys, "argv", ["worldprobe", "models"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 130 and "interrupted" in capsys.readouterr().err


def test_a_dry_run_of_a_study_for_another_machine_notes_the_missing_device(tmp_path, monkeypatch, capsys):
    """The plan of a GPU study can be made on a laptop (exit 0), but it says the run would stop here."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "study.toml"
    path.write_text(study('random_init_seeds = 1', 'random_init_seeds = 1\ndevice = "cuda"')["study.toml"])
    monkeypatch.setenv("WORLDPROBE_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setattr(sys, "argv", ["worldprobe", "run", str(path), "--dry-run"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 0
    assert "warning: device 'cuda' asked for, but torch sees no CUDA device" in capsys.readouterr().out


def test_every_test_the_fault_cases_page_names_exists():
    """docs/explanation/integrity.md lists the faults once tried and the test that holds each: a renamed or deleted
    test must not leave the page pointing at nothing."""
    import ast
    import re

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "explanation" / "integrity.md").read_text()
    table = page.split("## Faults tried", 1)[1]
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", table)
    assert len(named) >= 20
    for file, name in named:
        tree = ast.parse((root / file).read_text())
        defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in defined, f"{file}::{name}"
