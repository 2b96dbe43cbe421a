"""The graphs as `get_graph()` and LangGraph Studio draw them: every branch that runs is drawn.

A branch that lived only inside node code would be missing here, and a developer debugging the
corrective loop in Studio would not see it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.runnables.graph import Graph

from agent.services import Services
from agent.settings import load_settings
from graphs.rag import build_graph
from graphs.research import build_research_graph


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    data: Path = tmp_path_factory.mktemp("drawn") / "data"
    return Services(load_settings(data_dir=data), supports_tools=False)


def edges(graph: Graph) -> set[tuple[str, str]]:
    return {(e.source, e.target) for e in graph.edges}


def test_research_loop_is_drawn(services: Services) -> None:
    drawn = edges(build_research_graph(services).get_graph())
    assert drawn == {
        ("__start__", "retrieve_chunks"),
        ("retrieve_chunks", "grade_evidence"),
        ("grade_evidence", "rewrite_query"),
        ("grade_evidence", "finish_research"),
        ("rewrite_query", "retrieve_chunks"),
        ("rewrite_query", "finish_research"),
        ("finish_research", "__end__"),
    }


def test_main_graph_draws_every_branch(services: Services) -> None:
    graph = build_graph(services).get_graph()
    drawn = edges(graph)
    assert drawn == {
        ("__start__", "contextualize_query"),
        ("contextualize_query", "route_query"),
        ("route_query", "generate_answer"),
        ("route_query", "decompose_query"),
        ("route_query", "research"),
        ("decompose_query", "research"),
        ("decompose_query", "research_chain"),
        ("research", "collect_evidence"),
        ("research_chain", "collect_evidence"),
        ("collect_evidence", "generate_answer"),
        ("generate_answer", "reflect_answer"),
        ("reflect_answer", "generate_answer"),
        ("reflect_answer", "__end__"),
    }
    conditional = {(e.source, e.target) for e in graph.edges if e.conditional}
    assert ("reflect_answer", "generate_answer") in conditional
    assert ("route_query", "research") in conditional


def test_xray_expands_the_research_subgraph(services: Services) -> None:
    drawn = edges(build_graph(services).get_graph(xray=1))
    assert ("route_query", "research:__start__") in drawn
    assert ("research:grade_evidence", "research:rewrite_query") in drawn
    assert ("research:rewrite_query", "research:retrieve_chunks") in drawn
    assert ("research:finish_research", "collect_evidence") in drawn
    assert not any(node == "research" for edge in drawn for node in edge)
