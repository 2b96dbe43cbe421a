"""Starting a chat turn from a request, and waiting for its end: what the chat endpoint and the
OpenAI-compatible endpoint share. Every check a request can fail runs before the run starts, so
a bad request gets a 4xx reply instead of a stream that ends in an error."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import Request

from agent.context import AgentContext
from server.auth import Principal
from server.deps import AppState
from server.errors import ApiError
from server.events import Event, error_event
from server.runs import Run


async def begin_turn(
    state: AppState,
    caller: Principal,
    *,
    message: str,
    thread_id: str | None,
    collections: list[str] | None,
    effort: str | None,
    history: list[Any] | None = None,
    streaming: bool = True,
    user: str | None = None,
    trace: bool = True,
) -> Run:
    """Check everything a request can get wrong before a run starts, then start it."""
    if len(message) > state.settings.max_message_chars:
        raise ApiError(
            413,
            "message_too_long",
            f"The message has {len(message)} characters; the limit is "
            f"{state.settings.max_message_chars}.",
        )
    allowed = await _allowed_collections(state, caller, collections)
    if thread_id is not None:
        if await state.persistence.threads.get(thread_id, caller.owner) is None:
            raise ApiError(404, "thread_not_found", f"No thread {thread_id!r}.")
        if state.runs.thread_busy(thread_id, caller.owner):
            raise ApiError(
                409,
                "thread_busy",
                f"Thread {thread_id!r} has a run in progress; wait or cancel it.",
            )
    ctx = AgentContext(
        effort=effort or "medium",  # type: ignore[arg-type]
        collections=allowed,
        tenant=caller.tenant,
        groups=list(caller.groups) if caller.groups is not None else None,
    )
    return state.runs.start(
        message=message,
        thread_id=thread_id or uuid.uuid4().hex,
        ctx=ctx,
        history=history or [],
        new_thread=thread_id is None,
        streaming=streaming,
        traced=state.services.tracing.sampled(trace),
        user=user,
        owner=caller.owner,
    )


async def _allowed_collections(
    state: AppState, caller: Principal, requested: list[str] | None
) -> list[str] | None:
    if requested is None:
        return sorted(caller.collections) if caller.collections is not None else None
    infos = await asyncio.to_thread(state.services.catalog.collections, None, caller.tenant)
    existing = {c.name for c in infos if caller.allows(c.name)}
    for name in requested:
        if not caller.allows(name):
            raise ApiError(
                403, "forbidden_collection", f"This key may not use collection {name!r}."
            )
        if name not in existing:
            raise ApiError(
                404,
                "collection_not_found",
                f"No collection {name!r}. Available: {', '.join(sorted(existing)) or 'none'}.",
            )
    return list(dict.fromkeys(requested))


def trace_headers(run: Run) -> dict[str, str]:
    """`X-Trace-Id` (and `X-Trace-Url`) of a traced turn, sent before its first event."""
    headers = {"X-Trace-Id": run.trace_id} if run.trace_id else {}
    if run.trace_url:
        headers["X-Trace-Url"] = run.trace_url
    return headers


async def finished_run(run: Run, request: Request) -> Event:
    """Wait for a run's last event (`done` or `error`); a client that goes away cancels the
    run."""
    assert run.task is not None
    while not run.task.done():
        done, _ = await asyncio.wait({run.task}, timeout=0.5)
        if not done and await request.is_disconnected():
            run.cancel()
    return run.result or error_event("internal_error", "no result")
