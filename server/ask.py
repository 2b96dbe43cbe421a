"""Running one chat turn from the command line: stream progress and answer tokens as they come.

The graph is streamed with `updates` (what each node decided) and `messages` (LLM tokens);
only tokens of the answer writer reach the answer line, never the planner's or the judge's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from agent.context import AgentContext
from agent.services import Services
from graphs.rag import build_graph, recursion_limit
from server.persistence import open_persistence

ANSWER_NODE = "generate_answer"


Event = dict[str, Any]


def progress_events(namespace: tuple[str, ...], update: dict[str, Any]) -> list[Event]:
    """Turn one node's update into the events a person (or a UI) wants to see."""
    events: list[Event] = []
    for node, values in update.items():
        if not isinstance(values, dict):
            continue
        if node == "route_query" and "route" in values:
            events.append({"type": "route", **values["route"]})
        if node in ("route_query", "decompose_query") and values.get("plan"):
            plan = values["plan"]
            if plan["subqueries"] and (plan["mode"] != "single" or node == "decompose_query"):
                events.append({"type": "plan", **plan})
        if node == "reflect_answer" and values.get("verdict"):
            events.append({"type": "verdict", **values["verdict"]})
        for f in values.get("flags") or []:
            events.append({"type": "flag", "flag": f["flag"], "reason": f["reason"]})
    return events


async def turn_events(
    graph: Any, turn_input: dict[str, Any], config: Any, ctx: AgentContext
) -> AsyncIterator[Event]:
    """Run one turn and yield what it does as events: progress, then answer tokens (the answer
    writer's only), in the order they happen. The CLI prints them; the chat API streams them."""
    stream: AsyncIterator[Any] = graph.astream(
        turn_input,
        config,
        context=ctx,
        stream_mode=["updates", "messages", "custom"],
        subgraphs=True,
    )
    async for namespace, mode, payload in stream:
        if mode == "messages":
            chunk, meta = payload
            if meta.get("langgraph_node") == ANSWER_NODE and chunk.content:
                yield {"type": "token", "text": chunk.content}
        elif mode == "custom" and isinstance(payload, dict):
            yield payload
        elif mode == "updates":
            for event in progress_events(namespace, payload):
                yield event


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


def final_payload(values: dict[str, Any]) -> dict[str, Any]:
    turn = values.get("turn")
    usage = [u for u in values.get("usage") or [] if u.get("turn") == turn]
    return {
        "thread_id": values.get("thread_id"),
        "answer": values.get("answer", ""),
        "citations": values.get("citations") or [],
        "verdict": values.get("verdict"),
        "route": values.get("route"),
        "plan": values.get("plan"),
        "flags": [f for f in values.get("flags") or [] if f.get("turn") == turn],
        "error": values.get("error"),
        "usage": {
            "llm_calls": len(usage),
            "input_tokens": sum(u["input_tokens"] for u in usage),
            "output_tokens": sum(u["output_tokens"] for u in usage),
            "model_ms": round(sum(u["model_ms"] for u in usage), 1),
        },
        "steps": [s for s in values.get("steps") or [] if s.get("turn") == turn],
    }


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, default=str)
