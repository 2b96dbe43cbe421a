"""A turn's graph output as the events of the chat stream, in one place.

The graph is streamed with `updates` (what each node decided), `messages` (LLM tokens) and
`custom` (events nodes write themselves: retrieval, grade, rewrite); only tokens of the answer
writer become `token` events, never the planner's or the judge's. The SSE endpoint, the
OpenAI-compatible endpoint and the command line all read these events; their shapes are
documented by the models in `server.schemas` and read by the web page (`static/app.js`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from agent.context import AgentContext

ANSWER_NODE = "generate_answer"

Event = dict[str, Any]


def run_event(run_id: str, thread_id: str) -> Event:
    return {"type": "run", "run_id": run_id, "thread_id": thread_id}


LLM_FAILURES = frozenset({"llm_unavailable", "llm_failed"})
"""Errors of a turn whose model gave no answer: it ends with `error`, not `done`."""


def error_event(code: str, message: str) -> Event:
    return {"type": "error", "code": code, "message": message}


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
    writer's only), in the order they happen."""
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


def final_payload(values: dict[str, Any]) -> dict[str, Any]:
    """The outcome of the turn that ended in the graph state `values` (the thread's state holds
    every turn's flags, usage and steps: only the last turn's are kept)."""
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
        "trace_id": values.get("trace_id"),
        "trace_url": values.get("trace_url"),
    }


def closing_events(
    values: dict[str, Any],
    *,
    run_id: str,
    thread_id: str,
    tokens_streamed: bool,
    total_ms: float,
    first_token_ms: float | None,
    trace_id: str | None = None,
    trace_url: str | None = None,
) -> list[Event]:
    """The events that end a turn that ran to its end: the answer as one `token` when none
    streamed (a model that does not stream, or an answer not written by the answer writer),
    one `citation` per cited chunk with the chunk's text, then `done`; or, when the LLM failed
    (`LLM_FAILURES`), `error` with its code after the answer quoted from the evidence, so a
    client cannot take the stand-in for the model's answer."""
    payload = final_payload({**values, "thread_id": thread_id})
    events: list[Event] = []
    if not tokens_streamed and payload["answer"]:
        events.append({"type": "token", "text": payload["answer"]})
    texts = {e["id"]: e["text"] for e in values.get("evidence") or []}
    citations = [{**c, "text": texts.get(c["id"], "")} for c in payload["citations"]]
    events.extend({"type": "citation", **citation} for citation in citations)
    failure = values.get("error") or {}
    if failure.get("code") in LLM_FAILURES:
        events.append(
            error_event(
                failure["code"],
                f"{failure.get('message') or 'The LLM failed.'} The text before this error "
                "quotes the evidence; it is not the model's answer.",
            )
        )
        return events
    events.append(
        {
            "type": "done",
            **payload,
            "run_id": run_id,
            "thread_id": thread_id,
            "citations": citations,
            "trace_id": trace_id,
            "trace_url": trace_url,
            "timings": {
                "total_ms": round(total_ms, 1),
                "first_token_ms": round(first_token_ms, 1) if first_token_ms is not None else None,
            },
        }
    )
    return events
