"""The plan a model without structured output gets: split, pair up, or hop."""

from __future__ import annotations

from agent.nodes.decompose import heuristic_plan
from agent.state import PREVIOUS_HOP


def queries(question: str) -> list[str]:
    return [s["query"] for s in heuristic_plan(question, 4)["subqueries"]]


def test_two_questions_run_in_parallel() -> None:
    plan = heuristic_plan("Which planet is the largest? What is the nearest star?", 4)
    assert plan["mode"] == "parallel"
    assert queries("Which planet is the largest? What is the nearest star?") == [
        "Which planet is the largest?",
        "What is the nearest star?",
    ]


def test_a_comparison_searches_each_side() -> None:
    assert queries("Who is older, Annie Morton or Terry Richardson?") == [
        "Who is older Annie Morton",
        "Who is older Terry Richardson",
    ]


def test_a_fragment_is_not_a_question_of_its_own() -> None:
    question = (
        "Which year and which conference was the 14th season for this conference "
        "that the Colorado Buffaloes played in?"
    )
    plan = heuristic_plan(question, 4)
    assert plan["mode"] == "sequential"
    assert queries(question) == [question, f"{question} {PREVIOUS_HOP}"]
