"""The `worldprobe extract` and `worldprobe models` commands."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from worldprobe.cli import app
from worldprobe.commands.extract import _parse_max_memory
from worldprobe.errors import WorldprobeError
from worldprobe.extract import open_cache

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_extract_command_writes_a_cache(workspace, tiny_llama_dir, make_entity_table):
    make_entity_table(workspace, ["Paris", "Kraków", "São Paulo", "Tokyo"])
    args = ["--workspace", str(workspace.root), "extract", "--dataset", "world_place", "--model", str(tiny_llama_dir),
            "--prompt", "coords", "--layers", "0,3", "--mean", "--batch-size", "3", "--limit", "3",
            "--seed", "5"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cache = open_cache(result.stdout.strip().splitlines()[-1])
    assert cache.layers == [0, 3] and cache.n_entities == 3 and cache.manifest["aggregation"] == "mean"
    assert cache.manifest["batch_size"] == 3 and cache.manifest["prompt"] == "coords"


def test_extract_command_shares_the_prompt_prefix_unless_told_to_feed_every_token(workspace, tiny_llama_dir,
                                                                                 make_entity_table):  # fmt: skip
    make_entity_table(workspace, ["Paris", "Kraków", "São Paulo", "Tokyo"])
    shared = {}
    for flag in ([], ["--every-token"]):
        args = ["--workspace", str(workspace.root), "extract", "--dataset", "world_place", "--model",
                str(tiny_llama_dir), "--prompt", "coords", "--layers", "2", "--limit", str(3 + len(flag)), *flag]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        shared[bool(flag)] = open_cache(result.stdout.strip().splitlines()[-1]).manifest["shared_prefix_tokens"]
    assert shared[False] > 5 and shared[True] == 0


def test_models_command_lists_the_presets():
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0 and "smollm2-135m" in result.output and "qwen2.5-1.5b" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--load-in-4bit", "--load-in-8bit"], "choose one of --load-in-4bit and --load-in-8bit"),
        (["--prompt", "where_nyc"], "dataset 'world_place' has no prompt 'where_nyc'"),
        (["--dataset", "us_place"], "dataset not built yet"),
    ],
)
def test_user_errors_name_the_problem(workspace, tiny_llama_dir, make_entity_table, extra, message):
    make_entity_table(workspace, ["Paris"])
    base = ["--workspace", str(workspace.root), "extract", "--dataset", "world_place", "--model", str(tiny_llama_dir)]
    result = CliRunner().invoke(app, base + extra)
    assert isinstance(result.exception, WorldprobeError) and message in str(result.exception)


def test_the_entry_point_prints_a_user_error_as_one_line(workspace, make_entity_table):
    make_entity_table(workspace, ["Paris"])
    command = [sys.executable, "-m", "worldprobe.cli", "--workspace", str(workspace.root), "extract", "--dataset",
               "world_place", "--model", "./no-such-model"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and "neither a preset" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_max_memory_option_is_parsed():
    assert _parse_max_memory("0=20GiB, 1=18GiB,cpu=64GiB") == {0: "20GiB", 1: "18GiB", "cpu": "64GiB"}
    assert _parse_max_memory(None) is None
    with pytest.raises(WorldprobeError, match="max-memory"):
        _parse_max_memory("0:20GiB")


def test_the_shell_completes_commands_and_options():
    """``worldprobe --install-completion`` installs what this answers: the commands and options a prefix allows."""
    env = {"_WORLDPROBE_COMPLETE": "complete_bash", "COMP_CWORD": "1"}
    commands = CliRunner().invoke(app, [], prog_name="worldprobe", env={**env, "COMP_WORDS": "worldprobe da"})
    assert commands.stdout.split() == ["datasets"]
    env.update(COMP_CWORD="2", COMP_WORDS="worldprobe extract --dt")
    assert CliRunner().invoke(app, [], prog_name="worldprobe", env=env).stdout.split() == ["--dtype"]
