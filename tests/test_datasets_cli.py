"""`worldprobe datasets build | list | show` through the real command-line entry point."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import FIXTURES, paper_csv

from worldprobe import cli
from worldprobe.datasets import load, load_report
from worldprobe.datasets.builder import DEFAULT_SOURCE, SOURCE_DESCRIPTIONS
from worldprobe.datasets.registry import DATASETS

PAPER_FIXTURES = FIXTURES / "paper"


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `worldprobe <args>` as the console script does; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["worldprobe", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as done:
        code = done.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_build_show_and_list(monkeypatch, capsys, workspace):
    code, out, _ = run(monkeypatch, capsys, "--workspace", str(workspace.root), "datasets", "build", "nyc_place",
                       "--source", "paper", "--from", str(PAPER_FIXTURES / "nyc_place.csv"))  # fmt: skip
    assert code == 0
    assert "nyc_place: 9 rows (3 test) from paper" in out and "1 text(s) sit on both sides" in out
    assert len(load("nyc_place", workspace)) == 9

    code, out, _ = run(monkeypatch, capsys, "--workspace", str(workspace.root), "datasets", "show", "nyc_place")
    assert code == 0
    assert "rows: 9 (train 6, test 3)" in out
    assert "by borough (6 groups): Manhattan 3" in out and "unknown 1" in out
    assert "latitude (train): 40.5712 .. 40.8077" in out
    assert "texts on both sides of the split: 1" in out

    code, out, _ = run(monkeypatch, capsys, "datasets", "list")
    assert code == 0
    for name, spec in DATASETS.items():
        assert name in out and spec.description in out
    for source, description in SOURCE_DESCRIPTIONS.items():
        assert f"{source:<18} {description}" in out
    assert "paper" in out.split("nyc_place")[1].split("\n")[1]  # the sources line under nyc_place


def test_build_options_reach_the_builder(monkeypatch, capsys, workspace):
    code, out, _ = run(monkeypatch, capsys, "datasets", "build", "us_place", "--source", "paper", "--from",
                       str(PAPER_FIXTURES / "us_place.csv"), "--drop-split-leaks", "--limit", "5")  # fmt: skip
    assert code == 0 and "us_place: 5 rows" in out  # workspace from $WORLDPROBE_WORKSPACE
    assert "dropped 1 row(s): split_leak_test_side" in out and "dropped 4 row(s): beyond_limit" in out
    assert load_report("us_place", workspace).dropped == {"split_leak_test_side": 1, "beyond_limit": 4}


def test_bad_input_is_one_line_without_traceback(monkeypatch, capsys, workspace, tmp_path):
    bad = tmp_path / "world_place.csv"
    lines = (PAPER_FIXTURES / "world_place.csv").read_text().splitlines()
    lines[3] = lines[3].replace("53.3498", "123")
    bad.write_text("\n".join(lines) + "\n")
    code, out, err = run(
        monkeypatch, capsys, "datasets", "build", "world_place", "--source", "paper", "--from", str(bad)
    )
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"error: {bad}, row 2, field 'latitude': latitude '123' is outside [-90, 90] (line 4 of the file)"
    ]


@pytest.mark.parametrize(
    "args,message",
    [
        (("datasets", "build", "mars_place", "--source", "paper"), "unknown dataset 'mars_place'"),
        (("datasets", "build", "art", "--source", "nowhere"), "unknown source 'nowhere'"),
        (("datasets", "show", "art"), "dataset not built yet"),
    ],
)
def test_user_errors(monkeypatch, capsys, workspace, args, message):
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_default_source_is_packaged(monkeypatch, capsys, workspace):
    assert DEFAULT_SOURCE == "packaged"
    code, out, _ = run(monkeypatch, capsys, "datasets", "build", "--help")
    assert code == 0 and "--drop-split-leaks" in out and "packaged" in out


def test_every_help_shows_an_example_and_no_bool_metavar(monkeypatch, capsys, workspace):
    """A flag shown as ``--dry-run <bool>`` reads as if it took a value; ``--help`` itself is made per context, outside
    the commands' params, and needs the same treatment."""
    import typer

    tree = typer.main.get_command(cli.app)
    leaves = [(name, sub) for name, cmd in tree.commands.items()
              for sub in (list(cmd.commands) if hasattr(cmd, "commands") else [None])]  # fmt: skip
    assert len(leaves) > 10
    monkeypatch.setenv("COLUMNS", "200")
    for name, sub in leaves:
        code, out, _ = run(monkeypatch, capsys, *[part for part in (name, sub) if part], "--help")
        assert code == 0 and "<bool>" not in out, f"{name} {sub or ''}: {out[-600:]}"
        assert "Example" in out, f"{name} {sub or ''} --help shows no example"


@pytest.mark.slow
def test_real_world_place_through_the_cli(monkeypatch, capsys, workspace):
    source = paper_csv("world_place")
    code, out, _ = run(
        monkeypatch, capsys, "datasets", "build", "world_place", "--source", "paper", "--from", str(source)
    )
    assert code == 0 and "world_place: 39,585 rows (7,917 test) from paper" in out
    code, out, _ = run(monkeypatch, capsys, "datasets", "show", "world_place")
    assert "by country (225 groups): United States 6,477, United Kingdom 5,667" in out


def test_out_of_memory_is_one_line_with_a_hint(monkeypatch, capsys, workspace):
    """A MemoryError ended with a traceback; it is a fact about the machine, said in one line with what to change."""
    from worldprobe.commands import datasets as datasets_commands

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(datasets_commands, "build", no_memory)
    code, _, err = run(monkeypatch, capsys, "datasets", "build", "art", "--limit", "5")
    assert code == 2 and err.count("\n") == 1 and "out of memory" in err and "--batch-size" in err


def test_a_latin_1_terminal_gets_escapes_not_a_crash(tmp_path):
    """On a latin-1 terminal a path with other characters crashed the command after its work was done."""
    folder = tmp_path / "Москва"
    env = {**os.environ, "PYTHONIOENCODING": "latin-1", "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "worldprobe.cli", "--workspace", str(folder), "datasets", "build", "art",
               "--limit", "5"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert b"\\u041c" in done.stdout  # the path, escaped
