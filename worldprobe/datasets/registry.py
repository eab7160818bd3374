"""The six entity datasets: what each one predicts, how it is grouped, and which prompts it has."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldprobe.errors import WorldprobeError

PLACE_TARGETS = ("latitude", "longitude")
TIME_TARGETS = ("year",)


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about one entity dataset (docs/explanation/datasets.md)."""

    name: str
    kind: str  # "place" or "time"
    description: str
    group_columns: tuple[str, ...]  # grouping columns every table of this dataset carries
    holdout_columns: tuple[str, ...]  # columns the held-out block experiments use (paper Tables 3/4)
    oracle_column: str  # the group whose mean is the "group oracle" control
    prompts: tuple[str, ...]  # prompt names, see worldprobe.datasets.prompts
    era_bounds: tuple[float, ...] = ()  # years that cut a time dataset into eras for the per-era breakdown
    split_column: str = "text"  # rows sharing it stay on one side of a re-drawn split (``probe --resplits``)

    @property
    def targets(self) -> tuple[str, ...]:
        return PLACE_TARGETS if self.kind == "place" else TIME_TARGETS

    @property
    def required_columns(self) -> tuple[str, ...]:
        base = ("entity_id", "name", "text", *self.targets, "entity_type", "is_test", "source")
        return base + tuple(c for c in self.group_columns if c not in base)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "world_place", "place", "places of the world (cities, structures, natural places)",
            group_columns=("country", "entity_type"), holdout_columns=("country", "entity_type"),
            oracle_column="country", prompts=("empty", "all_caps", "random", "coords"),
        ),
        DatasetSpec(
            "us_place", "place", "places in the contiguous United States (cities, zips, counties, ...)",
            group_columns=("state_id", "entity_type"), holdout_columns=("state_id", "entity_type"),
            oracle_column="state_id", prompts=("empty", "random", "coords", "where_us"),
        ),
        DatasetSpec(
            "nyc_place", "place", "points of interest in New York City",
            group_columns=("borough", "facility_type", "entity_type"),
            holdout_columns=("borough", "facility_type"),
            oracle_column="borough", prompts=("empty", "random", "where_is", "where_nyc"),
        ),
        DatasetSpec(
            "historical_figure", "time", "historical figures and their death year",
            group_columns=("century", "occupation"), holdout_columns=("century", "occupation"),
            oracle_column="century", prompts=("empty", "random", "when", "all_caps"), era_bounds=(1500,),
        ),
        DatasetSpec(
            "art", "time", "songs, movies and books and their release date",
            group_columns=("decade", "entity_type", "creator"), holdout_columns=("decade", "entity_type"),
            oracle_column="decade", prompts=("empty", "random", "release", "all_caps"), era_bounds=(2000,),
            split_column="creator",
        ),
        DatasetSpec(
            "headline", "time", "news headlines and their publication date",
            group_columns=("pub_year", "news_desk"), holdout_columns=("pub_year", "news_desk"),
            oracle_column="pub_year", prompts=("empty", "empty_no_period", "when"),
        ),
    )
}  # fmt: skip


def era_labels(years: np.ndarray, bounds: tuple[float, ...]) -> np.ndarray:
    """An era label per year: ``before 1500``, ``1500 to 1800``, ``from 1800`` for bounds (1500, 1800)."""
    edges = sorted(bounds)
    names = [f"before {edges[0]:g}"] + [f"{a:g} to {b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    names.append(f"from {edges[-1]:g}")
    return np.asarray(names, dtype=object)[np.searchsorted(edges, np.asarray(years, dtype=np.float64), side="right")]


USER_SPEC_SUFFIX = ".spec.json"
"""A dataset of one's own is described by ``datasets/<name>.spec.json`` beside its table (``worldprobe datasets build
NAME --from FILE --kind place|time``)."""
_USER: dict[str, DatasetSpec] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def spec_dict(spec: DatasetSpec) -> dict[str, Any]:
    """A spec as JSON-ready data (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()}


def spec_from_dict(data: dict[str, Any]) -> DatasetSpec:
    """The spec of a ``.spec.json`` file; a clear error for a damaged one."""
    try:
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        spec = DatasetSpec(**fields)
    except TypeError as error:
        raise WorldprobeError(f"not a dataset spec: {error}", field="spec") from None
    if spec.kind not in ("place", "time"):
        raise WorldprobeError(f"a dataset's kind is place or time, not {spec.kind!r}", field="kind")
    return spec


def check_user_name(name: str) -> None:
    """A name for a dataset of one's own: not a shipped dataset's, lower-case letters, digits and underscores."""
    if name in DATASETS:
        raise WorldprobeError(f"{name!r} is a shipped dataset: a dataset of your own needs a name of its own",
                              field="name", hint="e.g. my_places")  # fmt: skip
    if not _NAME.match(name):
        raise WorldprobeError(f"{name!r} cannot name a dataset", field="name",
                              hint="lower-case letters, digits and underscores, starting with a letter")  # fmt: skip


def register_user_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make a dataset of one's own known to every stage of this process (shipped names are refused)."""
    check_user_name(spec.name)
    _USER[spec.name] = spec
    return spec


def load_user_specs(datasets_dir: Path) -> list[str]:
    """Register every dataset of one's own described in ``datasets_dir`` (a workspace's ``datasets/``); return their
    names. A damaged spec file is an error naming it."""
    names = []
    for path in sorted(Path(datasets_dir).glob(f"*{USER_SPEC_SUFFIX}")):
        try:
            spec = spec_from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise WorldprobeError(f"damaged dataset spec: {error}", file=path,
                                  hint="build the dataset again (worldprobe datasets build NAME --from ...)") from None
        except WorldprobeError as error:
            raise WorldprobeError(error.message, file=path, field=error.field,
                                  hint="build the dataset again (worldprobe datasets build NAME --from ...)") from None
        register_user_dataset(spec)
        names.append(spec.name)
    return names


def all_specs() -> dict[str, DatasetSpec]:
    """The shipped datasets, then those of one's own registered in this process."""
    return {**DATASETS, **_USER}


def get_spec(name: str) -> DatasetSpec:
    """The spec of a dataset by name (shipped, or of one's own once its workspace is opened), or a clear error
    listing the known ones."""
    spec = DATASETS.get(name) or _USER.get(name)
    if spec is None:
        raise WorldprobeError(
            f"unknown dataset {name!r}",
            hint=f"known datasets: {', '.join(all_specs())}; one of your own: `worldprobe datasets build {name} "
            "--from FILE.csv --kind place|time`",
        )  # fmt: skip
    return spec
