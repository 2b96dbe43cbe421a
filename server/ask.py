"""Running one chat turn from the command line: stream progress and answer tokens as they come,
as the events of `server.events`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from agent.context import AgentContext
from agent.services import Services
from graphs.rag import build_graph, recursion_limit
from server.events import Event, turn_events
from server.persistence import open_persistence


async def run_turn_streaming(
    services: Services,
    question: str,
    ctx: AgentContext,
    *,
    thread_id: str | None = None,
    on_event: Callable[[Event], None],
) -> dict[str, Any]:
    """Run one turn, calling `on_event` for progress and tokens; returns the final state."""
    thread = thread_id or uuid.uuid4().hex
    async with open_persistence(services.settings) as persistence:
        graph = build_graph(services, checkpointer=persistence.checkpointer)
        config: Any = {
            "configurable": {"thread_id": thread},
            "recursion_limit": recursion_limit(ctx),
        }
        on_event({"type": "run", "thread_id": thread})
        async for event in turn_events(graph, {"messages": [("user", question)]}, config, ctx):
            on_event(event)
        state = await graph.aget_state(config)
    values = dict(state.values)
    values["thread_id"] = thread
    return values


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, default=str)
