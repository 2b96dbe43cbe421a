"""Routing functions for the graphs' conditional edges: pure functions of the state.

Each node records what it decided in the state (a route kind, a plan, a `retry` or `stalled`
mark, a verdict's action); the function here only reads that decision back. So the branches
live in the graph files, where `get_graph()` and LangGraph Studio draw them, and the state
Studio shows says why a branch was taken.
"""

from __future__ import annotations

from typing import Literal

from langgraph.types import Send

from agent.budget import llm_calls_used
from agent.state import AgentState, ResearchInput, ResearchState

RESEARCH = "research"
"""The name under which the per-sub-query research subgraph is added to the main graph."""


def research_input(state: AgentState, index: int, query: str) -> ResearchInput:
    """What one sub-query's research starts from; budgets count the turn's LLM calls so far."""
    return {
        "turn": state["turn"],
        "started_at": state["started_at"],
        "question": state["question"],
        "index": index,
        "query": query,
        "collections": state["route"]["collections"],
        "llm_calls_before": llm_calls_used(state),
    }


def research_sends(state: AgentState) -> list[Send]:
    """One research run per sub-query of the plan, all in parallel."""
    return [
        Send(RESEARCH, research_input(state, sub["index"], sub["query"]))
        for sub in state["plan"]["subqueries"]
    ]


def after_route(state: AgentState) -> Literal["generate_answer", "decompose_query"] | list[Send]:
    kind = state["route"]["kind"]
    if kind == "direct":
        return "generate_answer"
    if kind == "decompose":
        return "decompose_query"
    return research_sends(state)


def after_decompose(state: AgentState) -> Literal["research_chain"] | list[Send]:
    """Sequential plans run hop by hop (each hop needs the previous one's findings)."""
    if state["plan"]["mode"] == "sequential":
        return "research_chain"
    return research_sends(state)


def after_grade(state: ResearchState) -> Literal["rewrite_query", "finish_research"]:
    return "rewrite_query" if state.get("retry") else "finish_research"


def after_rewrite(state: ResearchState) -> Literal["retrieve_chunks", "finish_research"]:
    """A rewrite that repeats a query already tried ends the loop with what was found."""
    return "finish_research" if state.get("stalled") else "retrieve_chunks"


def after_reflect(state: AgentState) -> Literal["generate_answer", "__end__"]:
    return "generate_answer" if state["verdict"]["action"] == "regenerate" else "__end__"
