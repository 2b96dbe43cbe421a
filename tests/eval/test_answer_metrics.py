"""SQuAD-style answer metrics, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from eval.answer_metrics import (
    answer_in_text,
    exact_match,
    is_yes_no,
    normalize_answer,
    strip_citations,
    token_f1,
)


def test_normalisation_drops_case_punctuation_articles_and_extra_space() -> None:
    assert normalize_answer("  The Eiffel   Tower! ") == "eiffel tower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("Theatre") == "theatre"  # an article only as a whole word
    assert normalize_answer("U.S.A.") == "usa"


def test_citations_are_removed_before_scoring() -> None:
    assert strip_citations("Paris [1]. It is in France [2][3].") == "Paris. It is in France."
    assert exact_match("Chief of Protocol [1].", ["Chief of Protocol"]) == 1.0
    assert token_f1("Chief of Protocol [1].", ["Chief of Protocol"]) == 1.0


def test_exact_match_takes_the_best_alias() -> None:
    assert exact_match("The Eiffel Tower!", ["Eiffel Tower"]) == 1.0
    assert exact_match("Seine River", ["the Seine", "Seine River"]) == 1.0
    assert exact_match("Eiffel Tower in Paris", ["Eiffel Tower"]) == 0.0
    assert exact_match("anything", []) == 0.0


def test_f1_by_hand() -> None:
    # "eiffel tower" vs "eiffel tower in paris": overlap 2, P = 2/2, R = 2/4, F1 = 2/3
    assert token_f1("the Eiffel Tower", ["Eiffel Tower in Paris"]) == pytest.approx(2 / 3)
    # repeated tokens count once per gold occurrence: overlap 1, P = 1/2, R = 1/1, F1 = 2/3
    assert token_f1("Paris Paris", ["Paris"]) == pytest.approx(2 / 3)
    # "born in dijon france" vs "dijon": overlap 1, P = 1/4, R = 1, F1 = 0.4
    assert token_f1("Born in Dijon, France.", ["Dijon"]) == pytest.approx(0.4)
    # best alias wins: 0 against "Lutetia", 1 against "Paris"
    assert token_f1("Paris", ["Lutetia", "Paris"]) == 1.0
    assert token_f1("London", ["Paris"]) == 0.0


def test_f1_of_empty_sides_is_zero_as_in_squad() -> None:
    assert token_f1("The.", ["Paris"]) == 0.0
    assert token_f1("Paris", ["the"]) == 0.0
    assert token_f1("Paris", []) == 0.0


def test_answer_in_text_matches_whole_tokens_only() -> None:
    assert answer_in_text(["Paris"], "The tower stands in Paris, France.")
    assert not answer_in_text(["Paris"], "A Parisian landmark.")
    assert answer_in_text(["the Seine"], "Paris lies along the Seine river.")
    assert answer_in_text(["Lutetia", "Paris"], "Paris")
    assert not answer_in_text(["the"], "the Seine")  # nothing left to find after normalising
    assert not answer_in_text([], "Paris")


def test_yes_no_questions() -> None:
    assert is_yes_no(["yes"])
    assert is_yes_no(["No."])
    assert not is_yes_no(["Yesterday"])
    assert not is_yes_no(["yes", "Paris"])
    assert not is_yes_no([])


def test_a_bare_string_is_refused_as_answers() -> None:
    with pytest.raises(TypeError):
        exact_match("Paris", "Paris")
    with pytest.raises(TypeError):
        token_f1("Paris", "Paris")
