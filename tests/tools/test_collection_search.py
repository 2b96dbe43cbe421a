"""Collection tools: hybrid search in fused order, and following titles a text names."""

from __future__ import annotations

from tools.collection_search import title_candidates


def test_title_candidates_are_capitalised_phrases() -> None:
    names = title_candidates("The director of Jaws was born in New York City in 1946.")
    assert {"Jaws", "New York City", "New York", "York City"} <= names
    assert "director" not in names and "was" not in names
