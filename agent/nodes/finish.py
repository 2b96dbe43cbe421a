"""finish_research: package one sub-query's outcome for the parent graph."""

from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.context import AgentContext
from agent.nodes.common import step
from agent.state import Research, ResearchState


async def finish_research(state: ResearchState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    started = time.perf_counter()
    tried = state.get("queries_tried") or [state["query"]]
    research: Research = {
        "turn": state["turn"],
        "index": state["index"],
        "query": tried[0],
        "queries_tried": tried,
        "grade": state.get("grade", "incorrect"),
        "evidence": list(state.get("kept") or []),
        "dropped": state.get("dropped", 0),
        "fallback": bool(state.get("fallback") or state.get("stalled")),
    }
    return {
        "research": [research],
        "steps": [
            step(state["turn"], "finish_research", started, f"{len(research['evidence'])} kept")
        ],
    }
