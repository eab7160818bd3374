"""The one build path (worldprobe.datasets.builder): what the context owns for every source, checked with small
builders put in place of a registered one."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from worldprobe.datasets.builder import BUILDERS, BuildContext, BuildOptions, build, load_sources, run_builder
from worldprobe.datasets.table import load, load_report
from worldprobe.errors import WorldprobeError

SHA = "ab" * 32
RAW = pd.DataFrame(
    {
        "name": [f"Place {i}" for i in range(10)] + ["", "Place 0"],
        "latitude": [float(i) for i in range(10)] + [1.0, 95.0],
        "longitude": [float(i) for i in range(12)],
    }
)


def _rows(context: BuildContext, *, drop: bool = True, split: bool = True, sha256: str = SHA) -> pd.DataFrame:
    """A well-behaved builder of world places from RAW (with switches to misbehave)."""
    context.record_input(what="raw.csv", sha256=sha256, licence="CC0", attribution="us", rows=len(RAW))
    context.rows_in = len(RAW)
    table = RAW.assign(entity_id=[f"t:{i}" for i in range(len(RAW))], text=RAW["name"], entity_type="city",
                       country="Nowhere", source="test")  # fmt: skip
    if drop:
        table = context.drop(table, table["text"] == "", "empty_text")
        table = context.drop(table, table["latitude"].abs() > 90, "bad_latitude")
    else:
        table = table.iloc[:10]
    if split:
        table = context.split(table, table["text"], "grouped by text")
    context.notes.append("a test source")
    return table


@pytest.fixture
def builder(monkeypatch) -> Callable[[Callable[[BuildContext], pd.DataFrame]], None]:
    """Put a builder in place of the paper source's world_place builder for one test."""
    load_sources()

    def install(fn: Callable[[BuildContext], pd.DataFrame]) -> None:
        monkeypatch.setitem(BUILDERS, ("world_place", "paper"), fn)

    return install


def test_the_report_is_made_from_the_context(builder, workspace):
    builder(_rows)
    path, report = build("world_place", "paper", BuildOptions(seed=4), workspace)
    saved = load_report("world_place", workspace)
    assert saved.rows_in == 12 and saved.rows_out == 10
    assert list(saved.dropped.items()) == [("empty_text", 1), ("bad_latitude", 1)]  # in the order they arose
    assert saved.inputs == [{"what": "raw.csv", "sha256": SHA, "licence": "CC0", "attribution": "us", "rows": 12}]
    assert saved.split_rule == "grouped by text" and saved.seed == 4 and saved.notes == ["a test source"]
    assert saved.details["options"]["seed"] == 4 and report.fingerprint == saved.fingerprint
    table = load("world_place", workspace)
    assert len(table) == 10 and table["is_test"].any() and not table["is_test"].all()


def test_limit_is_a_seeded_sample_on_the_whole_tables_split(builder, workspace):
    builder(_rows)
    whole, _ = run_builder("world_place", "paper", BuildOptions(seed=4))
    sample, report = run_builder("world_place", "paper", BuildOptions(seed=4, limit=4))
    assert len(sample) == 4 and report.rows_out == 4 and report.dropped["beyond_limit"] == 6
    assert report.rows_in == report.rows_out + sum(report.dropped.values())
    on_whole = whole.set_index("entity_id").loc[sample["entity_id"], "is_test"]
    assert on_whole.tolist() == sample["is_test"].tolist()  # the split of the whole table, not re-drawn
    assert sample["entity_id"].tolist() == sorted(sample["entity_id"], key=lambda e: int(e.split(":")[1]))
    again, _ = run_builder("world_place", "paper", BuildOptions(seed=4, limit=4))
    other, _ = run_builder("world_place", "paper", BuildOptions(seed=5, limit=4))
    assert again.equals(sample) and not other["entity_id"].equals(sample["entity_id"])


def test_rows_lost_without_a_reason_are_refused(builder, workspace):
    builder(lambda context: _rows(context, drop=False))
    with pytest.raises(WorldprobeError, match="read 12 rows but kept 10 and dropped 0 with a reason"):
        build("world_place", "paper", BuildOptions(), workspace)
    assert not workspace.dataset_table("world_place").exists()


def test_an_input_without_a_checksum_is_refused(builder, workspace):
    builder(lambda context: _rows(context, sha256=""))
    with pytest.raises(WorldprobeError, match="recorded an input without sha256"):
        build("world_place", "paper", BuildOptions(), workspace)
    builder(lambda context: _rows(context, sha256="not-a-checksum"))
    with pytest.raises(WorldprobeError, match="is not a sha256"):
        build("world_place", "paper", BuildOptions(), workspace)


def test_a_table_without_a_split_is_refused(builder, workspace):
    builder(lambda context: _rows(context, split=False))
    with pytest.raises(WorldprobeError, match="made no split"):
        build("world_place", "paper", BuildOptions(), workspace)


def test_no_rows_left_names_the_drops(builder, workspace):
    def nothing(context: BuildContext) -> pd.DataFrame:
        table = _rows(context)
        return context.drop(table, table["latitude"] > -1, "everything")

    builder(nothing)
    with pytest.raises(WorldprobeError, match="no rows left after filtering") as info:
        build("world_place", "paper", BuildOptions(), workspace)
    assert "everything" in info.value.hint


def test_the_package_exports_the_build_path():
    import worldprobe.datasets as datasets
    from worldprobe.datasets import builder

    assert datasets.build is builder.build and datasets.BuildContext is BuildContext
    assert datasets.register_builder is builder.register_builder


def test_every_split_lists_the_texts_on_both_sides(builder, workspace):
    def by_row(context: BuildContext) -> pd.DataFrame:
        table = _rows(context).drop(columns="is_test")
        table["text"] = ["Twin"] * 6 + [f"Place {i}" for i in range(4)]  # one text, six groups
        return context.split(table, table["entity_id"], "grouped by row")

    builder(by_row)
    _, report = build("world_place", "paper", BuildOptions(seed=0), workspace)
    table = load("world_place", workspace)
    twins = table[table["text"] == "Twin"]
    assert twins["is_test"].nunique() == 2  # seed 0 puts the six rows on both sides
    [leak] = report.details["split_leaks"]
    assert leak["text"] == "Twin" and sorted(leak["train"] + leak["test"]) == sorted(twins["entity_id"])
    builder(_rows)
    assert build("world_place", "paper", BuildOptions(seed=0), workspace)[1].details["split_leaks"] == []


def test_a_source_of_ones_own_builds_through_the_same_path(workspace, monkeypatch):
    monkeypatch.setattr("worldprobe.datasets.builder.BUILDERS", dict(BUILDERS))
    from worldprobe.datasets import register_builder

    register_builder("world_place", "mine")(_rows)
    _, report = build("world_place", "mine", BuildOptions(limit=5), workspace)
    assert report.source == "mine" and report.rows_out == 5 and report.dropped["beyond_limit"] == 5
    with pytest.raises(WorldprobeError, match="no 'mine' builder for dataset 'art'"):
        build("art", "mine", BuildOptions(), workspace)
    with pytest.raises(WorldprobeError, match="unknown source 'yours'") as info:
        build("art", "yours", BuildOptions(), workspace)
    assert "mine" in info.value.hint and "packaged" in info.value.hint
    with pytest.raises(WorldprobeError, match="does not read a file"):
        build("world_place", "mine", BuildOptions(from_path="places.csv"), workspace)


def test_a_mask_of_other_rows_or_a_negative_count_is_refused(builder, workspace):
    def misaligned(context: BuildContext) -> pd.DataFrame:
        table = _rows(context)
        reordered = table.iloc[::-1]
        return context.drop(table, reordered["latitude"] > 5, "north")  # another order of the same rows

    builder(misaligned)
    with pytest.raises(WorldprobeError, match="mask of other rows than its table's"):
        build("world_place", "paper", BuildOptions(), workspace)

    def fudged(context: BuildContext) -> pd.DataFrame:
        table = _rows(context)
        context.count_dropped({"fudge": -1})
        return pd.concat([table, table.iloc[:1].assign(entity_id="extra")])

    builder(fudged)
    with pytest.raises(WorldprobeError, match="cannot be negative"):
        build("world_place", "paper", BuildOptions(), workspace)
    builder(lambda context: pd.concat([_rows(context), _rows(BuildContext("world_place", "x", BuildOptions()))[:1]]))
    with pytest.raises(WorldprobeError, match="rows were added without a reason"):
        build("world_place", "paper", BuildOptions(), workspace)


def test_every_row_is_validated_not_only_those_a_limit_keeps(builder, workspace):
    def one_bad(context: BuildContext) -> pd.DataFrame:
        table = _rows(context)
        table.loc[9, "latitude"] = float("nan")
        return table

    builder(one_bad)
    for limit in (None, 2):
        with pytest.raises(WorldprobeError, match=r"latitude nan is not a number") as info:
            build("world_place", "paper", BuildOptions(limit=limit), workspace)
        assert info.value.row == 9 and "np.float64" not in str(info.value)
    builder(lambda context: _rows(context).assign(source=""))
    with pytest.raises(WorldprobeError, match="source '' is not a source name"):
        build("world_place", "paper", BuildOptions(), workspace)


def test_limited_reports_say_what_their_details_describe(builder, workspace):
    builder(_rows)
    _, report = build("world_place", "paper", BuildOptions(limit=4), workspace)
    assert report.notes[-1].startswith("limit: a seeded sample of 4 of the 10 rows built")
    _, report = build("world_place", "paper", BuildOptions(limit=40), workspace)  # all rows kept: nothing to say
    assert report.notes == ["a test source"] and "beyond_limit" not in report.dropped


def test_a_builtin_builder_is_not_replaced_and_sha256_is_not_ignored(workspace):
    from worldprobe.datasets import register_builder

    load_sources()
    with pytest.raises(WorldprobeError, match="'packaged' already has a builder of art"):
        register_builder("art", "packaged")(_rows)
    with pytest.raises(WorldprobeError, match="does not read a file, so --sha256 would be ignored"):
        build("art", "packaged", BuildOptions(extra={"sha256": "ab" * 32}), workspace)
