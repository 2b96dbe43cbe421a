"""Where each branching node goes next: pure functions of the state and the node's update.

A branching node records its decision in its update (a route kind, a plan, `retry`, `stalled`,
a verdict's action) and returns `Command(update=..., goto=after_x(...))` with the function here
that reads the decision back. The graph files name each node's possible destinations, so
`get_graph()` and LangGraph Studio draw every branch, and the state Studio shows says why one
was taken. (A `Command` costs LangGraph less than a conditional edge, which re-reads the whole
state through a traced runnable after the node.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from langgraph.types import Send

from agent.budget import llm_calls_used
from agent.state import AgentState, Plan, ResearchInput

RESEARCH = "research"
"""The name under which the per-sub-query research subgraph is added to the main graph."""

Update = Mapping[str, Any]


def research_input(
    state: AgentState, index: int, query: str, collections: list[str], llm_calls: int
) -> ResearchInput:
    """What one sub-query's research starts from; its budgets count the turn's `llm_calls`
    made so far."""
    return {
        "turn": state["turn"],
        "started_at": state["started_at"],
        "question": state["question"],
        "index": index,
        "query": query,
        "collections": collections,
        "llm_calls_before": llm_calls,
    }


def research_sends(
    state: AgentState, update: Update, plan: Plan, collections: list[str]
) -> list[Send]:
    """One research run per sub-query of the plan, all in parallel."""
    llm_calls = llm_calls_used(state) + len(update.get("usage") or [])
    return [
        Send(RESEARCH, research_input(state, sub["index"], sub["query"], collections, llm_calls))
        for sub in plan["subqueries"]
    ]


def after_route(
    state: AgentState, update: Update
) -> Literal["generate_answer", "decompose_query"] | list[Send]:
    route = update["route"]
    if route["kind"] == "direct":
        return "generate_answer"
    if route["kind"] == "decompose":
        return "decompose_query"
    return research_sends(state, update, update["plan"], route["collections"])


def after_decompose(state: AgentState, update: Update) -> Literal["research_chain"] | list[Send]:
    """Sequential plans run hop by hop (each hop needs the previous one's findings)."""
    plan: Plan = update["plan"]
    if plan["mode"] == "sequential":
        return "research_chain"
    return research_sends(state, update, plan, state["route"]["collections"])


def after_grade(update: Update) -> Literal["rewrite_query", "finish_research"]:
    return "rewrite_query" if update.get("retry") else "finish_research"


def after_rewrite(update: Update) -> Literal["retrieve_chunks", "finish_research"]:
    """A rewrite that repeats a query already tried ends the loop with what was found."""
    return "finish_research" if update.get("stalled") else "retrieve_chunks"


def after_reflect(update: Update) -> Literal["generate_answer", "__end__"]:
    return "generate_answer" if update["verdict"]["action"] == "regenerate" else "__end__"
