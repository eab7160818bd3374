"""Answer parsers on real answer strings (SmolLM2-135M-Instruct and Gemma-3-270M answers from `worldprobe ask`, and
the formats the issue names), and the question rendering that locates the entity inside a prompt."""

from __future__ import annotations

import pytest

from worldprobe.interventions import questions
from worldprobe.interventions.parse import GroupVocabulary, parse_coordinates, parse_year

DEATH = questions.get_question("historical_figure", "death_year")

YEARS = [  # (answer, entity, expected year or None, status) under the death-year question
    ("Jane Austen died in 1817.", "Jane Austen", 1817, "year"),
    ("1859", "Svante August Arrhenius", 1859, "year"),
    ("In 432 BCE, Xenophanes died in Athens, Greece.", "Xenophanes", -432, "year"),
    ("The Buddha died in the year 483 BCE.", "Gautama Buddha", -483, "year"),
    ("Alexander I died in 320 AD.", "Alexander I", 320, "year"),
    ("In 2020, Ledbetter died at the age of 8", "Ledbetter", 2020, "year"),
    ("Claude Bernard was born in 1929.", "Claude Bernard", None, "unparsed"),  # a birth year is not the answer
    ("Leonhard Euler was born in 1743 and died in 1", "Leonhard Euler", None, "unparsed"),  # cut by the budget
    ("Euler was born in 1707 and died in 1783.", "Leonhard Euler", 1783, "year"),
    ("Stephen Crane was born in 1871, but his work was interrupted by the Civil War, and he died", "Stephen Crane",
     None, "unparsed"),
    ("John XXIII died in 19 Anga.", "John XXIII", None, "unparsed"),
    ("Miles Davis died in 20", "Miles Davis", None, "unparsed"),  # the truncated answer
    ("The year Conan Doyle died is 2001.", "Conan Doyle", 2001, "year"),
    ("Abraham Lincoln (1809-1865) was the 16th president.", "Abraham Lincoln", 1865, "range"),  # a lifespan: its end
    ("c. 563–483 BC", "Gautama Buddha", -483, "range"),
    ("He died in the 1850s.", "X", 1855, "decade"),  # a decade: its midpoint
    ("sometime in the 4th century BC", "X", -350, "century"),
    ("AD 79, in the eruption of Vesuvius", "Pliny the Elder", 79, "year"),
    ("He died at age 100 in 1923", "X", 1923, "year"),
    ("Louis XIV died in 1715, aged 76", "Louis XIV", 1715, "year"),
    ("The 1,234 soldiers", "X", None, "unparsed"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "entity", "year", "status"), YEARS)
def test_death_year_answers(text, entity, year, status):
    found = questions.parse_answer(DEATH, text, entity)
    assert found["answer_status"] == status
    assert found["answer_year"] == (None if year is None else pytest.approx(year))


def test_year_ranges_take_their_midpoint_unless_too_wide_and_the_entity_is_masked():
    assert parse_year("released between 1850 to 1860") == parse_year("1850-60")
    assert parse_year("1850-60").year == 1855 and parse_year("1850-60").status == "range"
    assert parse_year("1200-1500").status == "unparsed"  # wider than 100 years
    assert parse_year("It was published in 1999.", entity="Prince's 1999").year == 1999
    assert parse_year("Prince's 1999 came out in 1982", entity="Prince's 1999").year == 1982
    assert parse_year("around 1200 BCE").year == -1200 and parse_year("in 44 B.C.").year == -44


COORDINATES = [
    ("40.7128° N, 74.0060° W", (40.7128, -74.006)),
    ("40°42′46″N 74°00′21″W", (40 + 42 / 60 + 46 / 3600, -(0 + 21 / 3600 + 74))),
    ("74.0060° W, 40.7128° N", (40.7128, -74.006)),  # hemispheres decide, not the order
    ("-33.87, 151.21", (-33.87, 151.21)),
    ("Latitude: 48.85, Longitude: 2.35", (48.85, 2.35)),
    ("longitude 2.35, latitude 48.85", (48.85, 2.35)),
    ("It is 330 m tall, at 48.8584° N, 2.2945° E.", (48.8584, 2.2945)),
    ("51 degrees 30 minutes North, 0 degrees 7 minutes West", (51.5, -7 / 60)),
    ("The coordinates are 35.6895 N, 139.6917 E", (35.6895, 139.6917)),
    ("33°51′S 151°12′E", (-(33 + 51 / 60), 151.2)),
]


@pytest.mark.parametrize(("text", "expected"), COORDINATES)
def test_coordinates(text, expected):
    found = parse_coordinates(text)
    assert found.status == "coordinates"
    assert (found.latitude, found.longitude) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text", ["40, -74", "95.2° N, 10.1° E", "about 40.7", "no idea", "20.5° E, 10.1° E"])
def test_coordinates_not_read(text):
    assert parse_coordinates(text).status == "unparsed"


def test_country_answers_through_the_datasets_canonical_names():
    vocabulary = questions.vocabulary("world_place", ["United States", "United Kingdom", "China", "Japan", "Niger"])
    cases = [
        ("Denver is a city located in the United States of America", "Denver", "United States"),
        ("The airport is in the United Arab Emirates (UAE)", "Gander International Airport", "United Arab Emirates"),
        ("In the United States, the capital city of Calamba is", "Calamba", "United States"),
        ("Panama City is in the U.S. state of Florida", "Panama City", "United States"),  # not Panama
        ("England", "Leeds", "United Kingdom"),  # an alias of the release data -> the canonical country
        ("People's Republic of China", "Yunlong", "China"),
        ("It is in Nigeria.", "Kano", "Nigeria"),  # not Niger
        ("Japan", "Japan", "Japan"),  # a country asked about as a place names itself
        ("In the context of the game, the answer is not available", "Librazhd", None),
        ("Let us see: it is in France", "Lyon", "France"),  # "us" is no country; "US" would be
        ("Holland", "Steenwijk", "Netherlands"),
    ]
    for text, entity, expected in cases:
        found = vocabulary.parse(text, entity=entity)
        assert found.group == expected, text
        assert found.status == ("unparsed" if expected is None else "group")


def test_group_vocabulary_prefers_the_earliest_then_the_longest_name():
    vocabulary = GroupVocabulary({"Guinea": "Guinea", "Papua New Guinea": "Papua New Guinea", "Korea": "South Korea",
                                  "North Korea": "North Korea"})  # fmt: skip
    assert vocabulary.parse("Papua New Guinea, not Guinea").group == "Papua New Guinea"
    assert vocabulary.parse("North Korea").group == "North Korea"
    assert vocabulary.parse("Guinea or North Korea").group == "Guinea"


def test_us_states_and_boroughs():
    states = questions.vocabulary("us_place", ["CA", "NY"])
    assert states.parse("It is in California.").group == "CA"
    boroughs = questions.vocabulary("nyc_place", ["Manhattan", "Bronx", "Brooklyn", "Queens", "Staten Island"])
    assert boroughs.parse("The Bronx").group == "Bronx" and boroughs.parse("Kings County").group == "Brooklyn"


class _Chat:
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return f"<|user|>{messages[0]['content']}<|end|><|assistant|>"


def test_rendering_keeps_the_entity_span():
    text, (a, b) = questions.render(_Chat(), DEATH, "Jane Austen", "chat")
    assert text[a:b] == "Jane Austen" and text.endswith("<|assistant|>") and "Answer with the year only." in text
    shots = [("Eugene Sue", "1857"), ("Gautama Buddha", "483 BC")]
    text, (a, b) = questions.render(None, DEATH, "Jane Austen", "fewshot", shots)
    assert text[a:b] == "Jane Austen" and text.endswith("Q: In what year did Jane Austen die?\nA:")
    assert "A: 483 BC\n\n" in text


def test_fewshot_examples_are_seeded_train_rows_with_their_answers():
    import pandas as pd

    train = pd.DataFrame({"text": [f"p{i}" for i in range(20)], "year": [-300.0 + 100 * i for i in range(20)]})
    first = questions.fewshot_examples(train, DEATH, 3, seed=1)
    assert first == questions.fewshot_examples(train, DEATH, 3, seed=1)
    assert first != questions.fewshot_examples(train, DEATH, 3, seed=2)
    assert all(answer == questions.format_answer(DEATH, train.set_index("text").loc[text].rename({"year": "year"}))
               for text, answer in first)  # fmt: skip
    assert questions.format_answer(DEATH, pd.Series({"year": -300.0})) == "300 BC"


def test_subset_estimates_ignore_resamples_that_draw_none_of_the_subset():
    import numpy as np

    from worldprobe.interventions.stats import quiet_estimate, resample_counts, subset, weighted_slope
    from worldprobe.probes.bootstrap import weighted_median

    values = np.array([5.0, 6.0, 7.0, 100.0, 101.0])
    w = resample_counts(5, 2000, seed=0)
    keep = np.array([False, False, False, True, True])
    found = subset(lambda v: weighted_median(values[keep], v), w, keep)
    assert found.n == 2 and found.value == 100.5 and found.low >= 100.0  # never the 0-weight fallback value
    x, y = np.array([0.0, 1, 2, 3, 4]), np.array([1.0, 3, 5, 7, 9])
    slope = quiet_estimate(lambda v: weighted_slope(x, y, v), w)
    assert (slope.value, slope.low, slope.high) == pytest.approx((2.0, 2.0, 2.0))
