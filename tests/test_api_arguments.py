"""The Python API's argument checks take numpy integers and list-likes in the shape a rule keeps, and a workspace is
a folder path. (Every declared rule refusing a bad value, the same through the CLI and a study file:
tests/test_rules.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from worldprobe.checks import FLAG, SEED, Rule, checked_arguments
from worldprobe.datasets.builder import build
from worldprobe.errors import WorldprobeError
from worldprobe.extract.cache import find_cache, open_cache
from worldprobe.extract.runner import run_extraction
from worldprobe.interventions.ask import run_ask
from worldprobe.interventions.context import run_context
from worldprobe.interventions.steer import run_steer
from worldprobe.probes.experiments import run_probe

PUBLIC = [run_extraction, run_probe, run_ask, run_steer, run_context, find_cache, open_cache, build]


def test_numpy_integers_and_list_likes_arrive_in_the_kept_shape_and_non_finite_numbers_are_refused():
    @checked_arguments(seed=SEED, layers=Rule(int, many=True, minimum=0), dose=Rule(float), quick=FLAG)
    def echo(seed: int = 0, layers=(), dose: float = 1.0, quick: bool = False):
        return seed, layers, dose, quick

    seed, layers, dose, _ = echo(np.int64(3), np.array([1, 2]), np.float64(0.5))
    assert (seed, layers) == (3, (1, 2)) and type(seed) is int and all(type(v) is int for v in layers)
    assert echo(layers=range(3))[1] == (0, 1, 2)
    with pytest.raises(WorldprobeError, match="dose must be a finite number, not nan"):
        echo(dose=float("nan"))
    with pytest.raises(WorldprobeError, match="seed must be at least 0"):
        echo(seed=-1)
    with pytest.raises(WorldprobeError, match="quick must be true/false, not text 'yes'"):
        echo(quick="yes")
    with pytest.raises(TypeError, match="has no arguments"):
        checked_arguments(nope=SEED)(echo)


def test_a_workspace_must_be_a_folder_path():
    from worldprobe.workspace import Workspace, as_workspace

    with pytest.raises(WorldprobeError, match="workspace must be a folder path"):
        as_workspace(pd.DataFrame())
    with pytest.raises(TypeError, match="takes a folder path, not int"):
        Workspace(5)
    assert Workspace("some/where").root.name == "where"  # text is a path
