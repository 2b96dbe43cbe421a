"""The parts of a question, and whether an answer addresses each."""

from __future__ import annotations

from agent.coverage import (
    addressed,
    choice_items,
    choice_words,
    misses_focus,
    question_focus,
    question_parts,
    stem,
    unchosen,
    unreached,
)
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


def test_the_focus_text_holds_none_of_the_question_names() -> None:
    # what is compared in meaning with the answer: with "Damerjog's country" in it, any
    # sentence about Damerjog came close to it
    focus = question_focus("Who was the first president of Damerjog's country?")
    assert focus is not None and focus.text == "first president"
    focus = question_focus("When did the country of Izgoy's performer invade Manchuria?")
    assert focus is not None and "Izgoy" not in focus.text and "Manchuria" not in focus.text


CHOICE = "Which writer was from England, Henry Roth or Robert Erskine Childers?"


def test_a_plain_choice_has_options_a_comparison_does_not() -> None:
    assert [p.text for p in choice_items(CHOICE)] == ["Henry Roth", "Robert Erskine Childers"]
    assert question_parts(CHOICE) == []  # naming one may answer it: not parts
    # compared items are parts already, and one named thing is no choice
    assert choice_items("Who was born first, Shirley Temple or Judy Garland?") == []
    assert choice_items("Which country is Paris in?") == []
    # initials are not words an answer writes
    farrell, _ = choice_items("Which novelist, J. G. Farrell or Louis Aragon, wrote of rule?")
    assert farrell.words == ("farre",)
    # what the choice is made by: not the kind both options are ("writer")
    assert choice_words(CHOICE, choice_items(CHOICE)) == ("engla",)


def test_a_choice_is_made_by_saying_the_property_of_one_option_or_by_both() -> None:
    options = choice_items(CHOICE)
    # one option, and not what the question chooses by: which one is from England is not said
    other = ["Henry Roth was an American novelist and short story writer."]
    assert [p.text for p in unchosen(CHOICE, options, other)] == ["Robert Erskine Childers"]
    # complete: the property said of one option, or both options described
    assert unchosen(CHOICE, options, ["Robert Erskine Childers was born in England."]) == []
    both = [*other, "Robert Erskine Childers was an English-born writer."]
    assert unchosen(CHOICE, options, both) == []
    animation = "Which filmmaker was known for animation, Lev Yilmaz or Pamela B. Green?"
    known = ["Lev Yilmaz is best known for his animated comic series."]
    assert unchosen(animation, choice_items(animation), known) == []
    assert unchosen(animation, choice_items(animation), ["Pamela B. Green is a filmmaker."])


def test_a_person_is_named_without_the_initials() -> None:
    question = "In what county is the city where Harris W. Fawell was born?"
    focus = question_focus(question)
    assert focus is not None and focus.words == ("born",)
    assert misses_focus(question, focus, ["Fawell is a graduate of West Chicago High School."])


def test_a_choice_between_two_named_things() -> None:
    question = (
        "In between Liberty and MIT Technology Review which has a circulation of over 200,000?"
    )
    options = choice_items(question)
    assert [p.text for p in options] == ["Liberty", "MIT Technology Review"]
    assert choice_words(question, options) == ("circu", "over", "200", "000")
    review = ["MIT Technology Review is a magazine published by MIT."]
    assert unchosen(question, options, review) == [options[0]]
    both = [*review, "Liberty is a magazine published by the Seventh-day Adventist Church."]
    assert unchosen(question, options, both) == []
    # "and" without "between" joins things named along the way, not options
    assert (
        choice_items("What station aired the series created by Max Mutchnick and David Kohan?")
        == []
    )


def test_the_focus_leaves_out_the_hop_an_answer_that_stops_short_answers() -> None:
    # what the named thing owns, the noun "of" links it to, its kind before it and what
    # follows it describe it: they are the first hop, not what the question asks
    spouse = question_focus("Who is the spouse of Big Eye's main director?")
    assert spouse is not None and "spous" in spouse.words and "main" not in spouse.words
    assert spouse.through == ("Big Eye's",)
    river = question_focus("What river flows through the city Kevin Durant played for before X?")
    assert river is not None and river.words == ("flow", "throu")
    assert river.through[0] == "Kevin Durant"
    # only the first hop left: it is the focus, so an answer that does not reach it is caught
    author = question_focus("What country was the author of Brand a citizen of?")
    assert author is not None and author.words == ("autho",)
    # a description ends at a comma; what comes after is asked again
    consulate = (
        "The Consulate General of the United States, in the city Sarah Sorge was born, "
        "is located in what territory?"
    )
    focus = question_focus(consulate)
    assert focus is not None and focus.words == ("terri",) and focus.through == ("Sarah Sorge",)


def test_a_name_before_the_focus_is_where_the_question_ends_not_where_it_starts() -> None:
    question = (
        "The Consulate General of the United States, in the city Sarah Sorge was born, "
        "is located in what territory?"
    )
    focus = question_focus(question)
    assert focus is not None
    stopped = ["Sarah Sorge (born 26 August 1969 in Frankfurt) is a German politician."]
    assert misses_focus(question, focus, stopped)
    whole = [*stopped, "The Consulate General of the United States in Frankfurt serves Hesse."]
    assert not misses_focus(question, focus, whole)


def test_a_focus_word_that_introduces_the_next_thing_does_not_meet_the_focus() -> None:
    question = "Where did the band form that made the live album Maiden Japan?"
    focus = question_focus(question)
    assert focus is not None and focus.words == ("band", "form")
    stopped = ["Maiden Japan is a live EP by the British heavy metal band Iron Maiden."]
    unmet = misses_focus(question, focus, stopped)
    assert unmet is not None and unmet.words == ("form",) and unmet.text == "form"
    formed = ["Maiden Japan is by the band Iron Maiden, which was formed in Leyton."]
    assert not misses_focus(question, focus, formed)


def test_names_past_the_focus_that_the_answer_never_comes_to() -> None:
    question = 'Who did the producer of Songs I Wrote with Amy write "Thinking Out Loud" for?'
    focus = question_focus(question)
    assert focus is not None and focus.through == ("Songs I Wrote",)
    stopped = ["Songs I Wrote with Amy is an EP released by Ed Sheeran in 2010."]
    assert misses_focus(question, focus, stopped)
    assert unreached(question, focus, stopped) == ["Thinking Out Loud"]
    whole = [*stopped, "Ed Sheeran wrote Thinking Out Loud for Athina Andrelos."]
    assert unreached(question, focus, whole) == []


def test_a_focus_word_said_of_the_first_thing_does_not_reach_the_rest() -> None:
    question = "Who did Barry Wesson's team play in the World Series last year?"
    focus = question_focus(question)
    assert focus is not None and focus.words == ("play",)
    # "played" is said of the player himself, and the World Series is never come to
    stopped = ["Barry Wesson is a former outfielder who played for the Houston Astros."]
    assert misses_focus(question, focus, stopped)
    whole = [*stopped, "The Astros played the Chicago White Sox in the 2005 World Series."]
    assert not misses_focus(question, focus, whole)


def test_a_question_written_as_a_statement_asks_at_its_end() -> None:
    question = "The Memphis Hustle are based in a suburb of a city with a population of what?"
    focus = question_focus(question)
    assert focus is not None and focus.words == ("popul",)
    assert focus.through == ("Memphis Hustle",)
    stopped = ["The Memphis Hustle is a suburb of the city of Memphis, Tennessee."]
    assert misses_focus(question, focus, stopped)
    whole = ["The Memphis Hustle are based in Southaven, population 48,982 in 2010."]
    assert not misses_focus(question, focus, whole)
    # its question word may close it, and be a bridge word itself
    war = "Kerensky was defeated in the course of a civil war that ended when?"
    ended = question_focus(war)
    assert ended is not None and ended.words == ("ended",)
    # one that asks first is read from its first piece
    first = question_focus("What is the population of the city where the Memphis Hustle play?")
    assert first is not None and first.words == ("popul",)


def test_a_question_that_names_nothing_goes_through_what_it_describes() -> None:
    question = "What is the continental limit of the continent with the lowest average temperature?"
    focus = question_focus(question)
    assert focus is not None and focus.words == ("conti", "limit")
    stopped = ["The lowest temperature on Earth, -89.2 C, was recorded in Antarctica."]
    assert misses_focus(question, focus, stopped)
    assert not misses_focus(question, focus, ["Antarctica is a continent."])


def test_inflections_meet() -> None:
    assert stem("played") == stem("play") and stem("songs") == stem("song")
    assert stem("directed") == stem("director") == "direc"
    assert stem("bred") == "bred"  # too short to lose an ending
