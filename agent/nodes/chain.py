"""research_chain: sequential ("bridge") sub-queries, hop by hop.

Each later hop's `{previous}` is filled with what the earlier hop found: the titles of its best
chunks (in multi-hop questions the bridge entity is usually a document's subject).
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.runnables import Runnable
from langgraph.runtime import Runtime

from agent.budget import llm_calls_used
from agent.context import AgentContext
from agent.edges import research_input
from agent.nodes.common import step
from agent.state import PREVIOUS_HOP, AgentState, Research

BRIDGE_TITLES = 2


def fill_hop(query: str, previous: Research | None, question: str) -> str:
    if previous is None:
        return query.replace(PREVIOUS_HOP, "").strip()
    titles = [
        t
        for t in dict.fromkeys(e["title"] for e in previous["evidence"])
        if t and t.lower() not in question.lower()
    ][:BRIDGE_TITLES]
    filler = " ".join(titles)
    if PREVIOUS_HOP in query:
        return " ".join(query.replace(PREVIOUS_HOP, filler).split())
    return f"{query} {filler}".strip()


async def research_chain(
    state: AgentState, runtime: Runtime[AgentContext], *, research: Runnable[Any, Any]
) -> dict[str, Any]:
    started = time.perf_counter()
    turn = state["turn"]
    found: list[Research] = []
    usage: list[Any] = []
    steps: list[Any] = []
    flags: list[Any] = []
    previous: Research | None = None
    for sub in state["plan"]["subqueries"]:
        query = fill_hop(sub["query"], previous, state["question"])
        hop_input = research_input(
            state,
            sub["index"],
            query,
            state["route"]["collections"],
            llm_calls_used(state) + len(usage),
        )
        result = await research.ainvoke(hop_input, context=runtime.context)
        hop = result["research"][-1]
        found.append(hop)
        usage += result.get("usage") or []
        steps += result.get("steps") or []
        flags += result.get("flags") or []
        previous = hop
    steps.append(step(turn, "research_chain", started, f"{len(found)} hops"))
    return {"research": found, "usage": usage, "steps": steps, "flags": flags}
