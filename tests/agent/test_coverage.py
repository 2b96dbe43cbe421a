"""The parts of a question, and whether an answer addresses each."""

from __future__ import annotations

from agent.coverage import addressed, misses_focus, question_focus, question_parts
from agent.state import Plan

TWO_QUESTIONS = "Which planet has the hottest surface, and what is the nearest star to the Sun?"


def test_several_questions_are_parts() -> None:
    parts = question_parts(TWO_QUESTIONS)
    assert [p.text for p in parts] == [
        "Which planet has the hottest surface",
        "what is the nearest star to the Sun",
    ]
    assert [p.kind for p in parts] == ["question", "question"]
    asked = question_parts("When was the Eiffel Tower built? Who designed the Eiffel Tower?")
    assert len(asked) == 2


def test_compared_items_are_parts_and_one_question_has_none() -> None:
    parts = question_parts("Who was born first, Shirley Temple or Judy Garland?")
    assert [(p.text, p.kind) for p in parts] == [
        ("Shirley Temple", "item"),
        ("Judy Garland", "item"),
    ]
    assert question_parts("Which planet has the hottest surface?") == []
    assert question_parts("Which year and which conference was it?") == []


def test_parallel_sub_questions_are_parts_sequential_hops_are_not() -> None:
    subs = [
        {"index": 0, "query": "Where was Ada Lovelace born?"},
        {"index": 1, "query": "Where was Alan Turing born?"},
    ]
    parallel: Plan = {"mode": "parallel", "subqueries": subs, "source": "llm"}  # type: ignore[typeddict-item]
    sequential: Plan = {**parallel, "mode": "sequential"}
    question = "Which cities did Ada Lovelace and Alan Turing grow up in"
    assert [p.kind for p in question_parts(question, parallel)] == ["subquery", "subquery"]
    assert question_parts(question, sequential) == []


def test_a_part_is_addressed_only_by_a_sentence_about_it() -> None:
    hottest, nearest = question_parts(TWO_QUESTIONS)
    half = ["Venus has the hottest surface of any planet."]
    assert addressed(hottest, half)
    assert not addressed(nearest, half)
    whole = [*half, "Proxima Centauri is the nearest star to the Sun."]
    assert addressed(nearest, whole)
    first, second = question_parts("Who was born first, Shirley Temple or Judy Garland?")
    only_one = ["Shirley Temple was born in 1928."]
    assert addressed(first, only_one) and not addressed(second, only_one)


def test_items_are_named_things_asked_about_together() -> None:
    def items(question: str) -> list[str]:
        return [p.text for p in question_parts(question)]

    assert items("Are Random House Tower and 888 7th Avenue both used for real estate?") == [
        "Random House Tower",
        "888 7th Avenue",
    ]
    assert items("Which band, Letters to Cleo or Screaming Trees, had more members?") == [
        "Letters to Cleo",
        "Screaming Trees",
    ]
    assert items("What nationality were Alfred Gell and Edmund Leach?") == [
        "Alfred Gell",
        "Edmund Leach",
    ]
    # a plain choice is answered by naming one; creators named in passing are not asked about
    assert items("Which novelist, J. G. Farrell or Louis Aragon, wrote of colonial rule?") == []
    assert items("What station aired the series created by Max Mutchnick and David Kohan?") == []
    gallery, dime = question_parts("Which magazine is older, Gallery or Dime Magazine?")
    assert dime.words == ("dime",)  # "magazine" is the question's word, not the item's
    assert addressed(gallery, ["Gallery is a men's magazine."])
    assert not addressed(dime, ["Gallery is a men's magazine."])


def test_comparatives_and_articles_between_items_still_make_items() -> None:
    def items(question: str) -> list[str]:
        return [p.text for p in question_parts(question)]

    assert items("Which tower is taller, 712 Fifth Avenue or the Woolworth Building?") == [
        "712 Fifth Avenue",
        "Woolworth Building",
    ]
    assert items("Which battle occurred first, the Battle of Manila or the Battle of Guam?") == [
        "Battle of Manila",
        "Battle of Guam",
    ]
    assert items("Which game was published most recently, Pirate's Cove or Catan?") == [
        "Pirate's Cove",
        "Catan",
    ]
    assert items("Which genus has more species, Bactris and Epigaea?") == ["Bactris", "Epigaea"]
    assert items("José Saramago and Ivo Andrić were recipients of what award?") == [
        "José Saramago",
        "Ivo Andrić",
    ]
    assert items("Which writer was from England, Henry Roth or Robert Childers?") == []
    # people named along the way are not compared, superlative or not
    named = "The youngest daughter of Lady Curzon stars with Douglas Smith and Lucien Laviscount"
    assert items(f"{named} in what film?") == []


BRIDGE = "Who was the first president of the association which published the Journal of Therapy?"


def test_the_focus_is_what_a_question_asks_of_the_thing_it_goes_through() -> None:
    focus = question_focus(BRIDGE)
    assert focus is not None and focus.words == ("first", "presi")
    # answer-type nouns and named things are not the focus; the first piece that has words is
    focus = question_focus("What is the name of the waterfall in the country of the Bubye River?")
    assert focus is not None and focus.words == ("water",)
    assert question_focus("Which country is Paris in?") is None


def test_an_answer_that_stops_at_the_bridge_misses_the_focus() -> None:
    focus = question_focus(BRIDGE)
    assert focus is not None
    stopped = ["The Journal of Therapy is published by the Psychological Association."]
    assert misses_focus(BRIDGE, focus, stopped)
    whole = [*stopped, "Stanley Hall was its first president."]
    assert not misses_focus(BRIDGE, focus, whole)
    # a sentence about what the bridge leads to, not the question's named things: moved on
    moved_on = [*stopped, "Stanley Hall led the association from 1892."]
    assert not misses_focus(BRIDGE, focus, moved_on)
    assert not misses_focus(BRIDGE, focus, [])
