"""The candidate answers of the self-check benchmark: each perturbation changes exactly the one
fact it names, and each faithful restatement keeps every number and name."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest

from eval.datasets import CorpusDoc, Question
from eval.perturbations import (
    Candidate,
    Edit,
    NameIndex,
    attributed,
    build_candidates,
    change_number,
    flip_comparison,
    inverted,
    names_and_numbers,
    question_parts,
    reordered,
    swap_name,
    toggle_negation,
)

DASH = "\u2013"  # an en dash, as Wikipedia writes date ranges
DOCS = [
    CorpusDoc(
        "lovelace",
        "Ada Lovelace",
        f"Ada Lovelace (10 December 1815 {DASH} 27 November 1852) was an English mathematician. "
        "In 1843, she published the first algorithm intended for a machine. "
        "She was not a member of the Royal Society, which admitted 41 new fellows that year.",
    ),
    CorpusDoc(
        "hopper",
        "Grace Hopper",
        f"Grace Hopper (December 9, 1906 {DASH} January 1, 1992) was an American computer "
        "scientist. "
        "She was older than most of her colleagues when she joined the Navy in 1943. "
        "Hopper is the namesake of the destroyer USS Hopper.",
    ),
    CorpusDoc(
        "turing",
        "Alan Turing",
        f"Alan Turing (23 June 1912 {DASH} 7 June 1954) was an English mathematician.",
    ),
    CorpusDoc(
        "babbage",
        "Charles Babbage",
        f"Charles Babbage (26 December 1791 {DASH} 18 October 1871) was an English polymath.",
    ),
    CorpusDoc(
        "knuth",
        "Donald Knuth",
        "Donald Knuth (born January 10, 1938) is an American computer scientist.",
    ),
    CorpusDoc("london", "London", "London is the capital city of England."),
    CorpusDoc("leeds", "Leeds", "Leeds is a city in West Yorkshire, England."),
    CorpusDoc("royal-society", "Royal Society", "The Royal Society is a learned society."),
]
CORPUS = {d.id: d for d in DOCS}
COMPARE = Question(
    id="q-older",
    question="Who was born first, Ada Lovelace or Grace Hopper?",
    answer="Ada Lovelace",
    answers=["Ada Lovelace"],
    supporting_doc_ids=["lovelace", "hopper"],
    extra={"distractor_doc_ids": ["london"]},
)


@pytest.fixture(scope="module")
def names() -> NameIndex:
    return NameIndex.from_corpus(DOCS)


@pytest.fixture(scope="module")
def candidates(names: NameIndex) -> list[Candidate]:
    return build_candidates(COMPARE, CORPUS, names, seed=0)


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'-]+|[^\w\s]", text)


def _bag(text: str) -> list[str]:
    return sorted(w.lower() for w in re.findall(r"[\w'-]+", text))


def _differing(before: str, after: str) -> tuple[list[str], list[str]]:
    """The tokens of `before` and `after` outside their common prefix and suffix."""
    a, b = _words(before), _words(after)
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    return a[start : len(a) - end], b[start : len(b) - end]


def test_the_corpus_names_people_and_places_by_kind(names: NameIndex) -> None:
    assert names.kind_of["Ada Lovelace"] == "person"
    assert names.kind_of["Donald Knuth"] == "person"
    assert names.kind_of["Leeds"] == "settlement"
    assert "Royal Society" not in names.kind_of  # "a learned society": no kind we know


def test_a_number_change_changes_one_number_to_one_the_evidence_lacks() -> None:
    sentence = "In 1843, she published the first algorithm intended for a machine."
    evidence = CORPUS["lovelace"].text
    for seed in range(20):
        edit = change_number(sentence, random.Random(seed), forbidden=evidence)
        assert edit is not None
        old, new = _differing(sentence, edit.text)
        assert old == ["1843"] and new == [edit.after] and edit.before == "1843"
        assert edit.after.isdigit() and edit.after != "1843"
        assert edit.after not in evidence


def test_a_number_change_keeps_thousands_separators_and_skips_ordinals() -> None:
    edit = change_number("It sold 12,500 copies in its 3rd week.", random.Random(1))
    assert edit is not None
    assert edit.before == "12,500" and re.fullmatch(r"\d{1,3}(,\d{3})+", edit.after)
    assert change_number("It came 3rd.", random.Random(1)) is None


def test_a_day_of_the_month_stays_a_day() -> None:
    sentence = "Ada Lovelace died on 27 November 1852."
    days = set()
    for seed in range(30):
        edit = change_number(sentence, random.Random(seed))
        assert edit is not None
        if edit.before == "27":
            days.add(int(edit.after))
    assert days and all(1 <= d <= 28 and d != 27 for d in days)


def test_a_name_swap_puts_a_person_absent_from_the_evidence_for_a_person(
    names: NameIndex,
) -> None:
    sentence = (
        f"Ada Lovelace (10 December 1815 {DASH} 27 November 1852) was an English mathematician."
    )
    evidence = "\n".join(CORPUS[d].text for d in ("lovelace", "hopper", "london"))
    for seed in range(10):
        swapped = swap_name(sentence, names, random.Random(seed), forbidden=evidence)
        assert swapped is not None
        edit, kind = swapped
        assert kind == "person" and edit.before == "Ada Lovelace"
        assert names.kind_of[edit.after] == "person"
        assert edit.after not in evidence and edit.after not in sentence
        assert edit.text == sentence.replace("Ada Lovelace", edit.after)


def test_a_name_inside_a_longer_name_is_not_swapped(names: NameIndex) -> None:
    index = NameIndex(kind_of={"Kiss": "film", "Heat": "film"}, by_kind={"film": ["Heat", "Kiss"]})
    assert swap_name("Kiss and Tell is a 1945 film.", index, random.Random(0)) is None
    assert swap_name("Sir Kiss was a knight.", index, random.Random(0)) is None
    swapped = swap_name("Kiss is a 1945 film.", index, random.Random(0))
    assert swapped is not None and swapped[0].text == "Heat is a 1945 film."
    assert names.names_in("They met Ada Lovelace Smith.") == []
    assert names.names_in("Back to Leeds is a song.") == []
    assert names.names_in("In Leeds, they met.") == [(3, 8, "Leeds")]


@pytest.mark.parametrize(
    ("sentence", "before", "after", "expected"),
    [
        (
            "Ada Lovelace was an English mathematician.",
            "was",
            "was not",
            "Ada Lovelace was not an English mathematician.",
        ),
        (
            "She was not a member of the Royal Society.",
            "not",
            "",
            "She was a member of the Royal Society.",
        ),
        ("He never married.", "never", "", "He married."),
        ("The band didn't tour in 1999.", "didn't", "did", "The band did tour in 1999."),
        ("It has been sold twice.", "has", "has not", "It has not been sold twice."),
    ],
)
def test_negation_is_toggled_once(sentence: str, before: str, after: str, expected: str) -> None:
    edit = toggle_negation(sentence)
    assert edit is not None
    assert (edit.before, edit.after, edit.text) == (before, after, expected)
    negations = re.compile(r"\b(not|never)\b|n't\b")
    assert abs(len(negations.findall(edit.text)) - len(negations.findall(sentence))) == 1


def test_negation_is_not_forced_where_no_auxiliary_takes_it() -> None:
    assert toggle_negation("It has operations in 70 countries.") is None


@pytest.mark.parametrize(
    ("sentence", "before", "after"),
    [
        ("She was older than most of her colleagues.", "older", "younger"),
        ("She published the first algorithm.", "first", "last"),
        ("He joined after the war.", "after", "before"),
        ("It sold fewer copies than the album.", "fewer", "more"),
        ("The street is named after him, and he came later.", "later", "earlier"),
    ],
)
def test_a_comparison_word_is_flipped_to_its_antonym(
    sentence: str, before: str, after: str
) -> None:
    edit = flip_comparison(sentence)
    assert edit is not None and (edit.before, edit.after) == (before, after)
    assert _differing(sentence, edit.text) == ([before], [after])


def test_sentences_without_an_ordering_word_are_not_compared() -> None:
    assert flip_comparison("The street is named after him.") is None
    assert flip_comparison("He sold at least ten.") is None
    assert flip_comparison("First Lady Edith Wilson spoke.") is None


@pytest.mark.parametrize(
    ("restate", "sentence", "expected"),
    [
        (
            reordered,
            "In 1843, she published the first algorithm intended for a machine.",
            "She published the first algorithm intended for a machine in 1843.",
        ),
        (
            reordered,
            "The office was held by Leo Varadkar in June 2017.",
            "In June 2017, the office was held by Leo Varadkar.",
        ),
        (
            inverted,
            "London is the capital city of England.",
            "The capital city of England is London.",
        ),
        (
            attributed,
            "The Royal Society admitted 41 new fellows.",
            "According to the documents, the Royal Society admitted 41 new fellows.",
        ),
        (
            attributed,
            "Ada Lovelace was an English mathematician.",
            "According to the documents, Ada Lovelace was an English mathematician.",
        ),
    ],
)
def test_restatements_keep_every_number_and_name(
    restate: Callable[[str], Edit | None], sentence: str, expected: str
) -> None:
    edit = restate(sentence)
    assert edit is not None and edit.text == expected
    assert names_and_numbers(edit.text) == names_and_numbers(sentence)
    kept = edit.text.removeprefix("According to the documents, ")
    assert _bag(kept) == _bag(sentence)  # no word added, none lost: only the order changed


def test_a_phrase_is_not_moved_across_a_clause_it_could_come_to_modify() -> None:
    assert reordered("She was older than her colleagues when she joined the Navy in 1943.") is None
    assert reordered("After the war, he moved to Paris where he died.") is None


def test_pronoun_subjects_and_clauses_are_not_inverted() -> None:
    assert inverted("He is the son of a goalkeeper.") is None
    assert inverted("Paris is the city that never sleeps.") is None


def test_each_candidate_changes_exactly_what_its_kind_names(candidates: list[Candidate]) -> None:
    kinds = {c.kind for c in candidates}
    assert {"faithful", "number", "name", "negation", "comparison", "miscited", "partial"} <= kinds
    for c in candidates:
        (claim, *rest) = c.claims
        if c.kind in ("number", "name", "negation", "comparison"):
            assert not rest and c.changed is not None and c.expected == "unsupported"
            assert claim.source == c.original and claim.source in CORPUS[claim.doc_id].text
            assert claim.text == claim.source.replace(c.changed.before, c.changed.after, 1)
            assert claim.text != claim.source
        if c.kind == "miscited":
            assert claim.miscite and claim.text == claim.source and c.expected == "unsupported"
        if c.kind == "name":
            assert c.changed is not None and c.name_kind == "person"
            assert c.changed.after not in "\n".join(d.text for d in DOCS[:2])
            assert c.changed.after not in CORPUS["london"].text


def test_faithful_candidates_keep_every_number_and_name(candidates: list[Candidate]) -> None:
    faithful = [c for c in candidates if c.kind == "faithful"]
    assert {c.variant for c in faithful} >= {"verbatim", "attributed", "reordered", "all_parts"}
    for c in faithful:
        assert c.expected == "supported" and not any(claim.miscite for claim in c.claims)
        for claim in c.claims:
            assert names_and_numbers(claim.text) == names_and_numbers(claim.source)
            assert claim.source in CORPUS[claim.doc_id].text


def test_a_comparison_question_gets_a_partial_and_a_complete_answer(
    candidates: list[Candidate],
) -> None:
    (partial,) = [c for c in candidates if c.kind == "partial"]
    (complete,) = [c for c in candidates if c.variant == "all_parts"]
    assert (partial.parts, partial.parts_covered, partial.expected) == (2, 1, "incomplete")
    assert (complete.parts, complete.parts_covered, complete.expected) == (2, 2, "supported")
    assert {c.doc_id for c in complete.claims} == {"lovelace", "hopper"}
    assert len(partial.claims) == 1


def test_the_same_seed_builds_the_same_candidates(names: NameIndex) -> None:
    again = build_candidates(COMPARE, CORPUS, names, seed=0)
    assert [c.as_dict() for c in again] == [
        c.as_dict() for c in build_candidates(COMPARE, CORPUS, names, seed=0)
    ]


def test_question_parts_from_a_decomposition_a_comparison_or_a_joined_question() -> None:
    musique = Question(
        id="m",
        question="Who was the first president of the association that publishes X?",
        answer="G. Stanley Hall",
        answers=[],
        supporting_doc_ids=["a", "b"],
        extra={
            "decomposition": [
                {"question": "Who publishes X?", "answer": "the APA"},
                {"question": "Who was the first president of #1 ?", "answer": "G. Stanley Hall"},
            ]
        },
    )
    parts = question_parts(musique, {})
    assert [p.question for p in parts] == [
        "Who publishes X?",
        "Who was the first president of the APA ?",
    ]
    assert [p.doc_ids for p in parts] == [("a",), ("b",)]
    titles = {"lovelace": "Ada Lovelace", "hopper": "Grace Hopper"}
    assert [p.doc_ids for p in question_parts(COMPARE, titles)] == [("lovelace",), ("hopper",)]
    joined = Question("j", "Who directed Heat, and when was it released?", None, [], ["h"])
    assert len(question_parts(joined, {"h": "Heat"})) == 2
    bridge = Question(
        "b",
        "What distinction is held by the former NBA player who was a member of the Charlotte "
        "Hornets during their 1992-93 season and was head coach for the WNBA team Charlotte "
        "Sting?",
        None,
        [],
        [],
    )
    assert len(question_parts(bridge, {})) == 1
