"""Collection tools: hybrid search in fused order, and following titles a text names."""

from __future__ import annotations

from tools.collection_search import title_base, title_candidates


def test_title_candidates_are_capitalised_phrases() -> None:
    names = title_candidates("The director of Jaws was born in New York City in 1946.")
    assert {"Jaws", "New York City", "New York", "York City"} <= names
    assert "director" not in names and "was" not in names


def test_title_candidates_read_titles_as_texts_write_them() -> None:
    text = (
        'Her single "Back to December" was a hit. The band Nickelback\'s album sold well. '
        "The venue is in Bangor, Maine. She was born in Young, New South Wales, in 1965. "
        "The squadron joined the USS Essex (CV-9) in 1944. "
        "Produced by Rankin/Bass Productions with Harry Connick Jr. on piano. "
        "It inspired What Are Little Girls Made Of? That rhyme is old."
    )
    names = title_candidates(text)
    assert {
        "Back to December",
        "Nickelback",
        "Bangor, Maine",
        "Young, New South Wales",
        "USS Essex (CV-9)",
        "Rankin/Bass Productions",
        "Harry Connick Jr.",
        "What Are Little Girls Made Of?",
    } <= names
    assert "Maine. The" not in names and "and" not in names


def test_title_base_drops_the_qualifier() -> None:
    assert title_base("Pieris (plant)") == "Pieris"
    assert title_base("Bangor, Maine") == "Bangor"
    assert title_base("Kiss and Tell (1945 film)") == "Kiss and Tell"
    assert title_base("Alan J. Pakula") == "Alan J. Pakula"
