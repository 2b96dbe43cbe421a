"""`/v1/chat`: ask a question, stream the turn as Server-Sent Events (or wait for one JSON
reply); `/v1/runs/{run_id}/cancel`: stop a run."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from server import schemas
from server.deps import Caller, State
from server.errors import ApiError, run_error_response
from server.events import Event
from server.metrics import Metrics
from server.middleware import RECEIVED_AT
from server.runs import Run
from server.turns import begin_turn, finished_run, trace_headers

router = APIRouter(tags=["chat"])

STREAM_DOC = "\n".join(
    f"- `{m.model_fields['type'].default}` ({m.__name__})" for m in schemas.STREAM_EVENTS
)


def sse_frame(event: Event) -> bytes:
    return f"event: {event['type']}\r\ndata: {json.dumps(event, default=str)}\r\n\r\n".encode()


async def sse_events(
    run: Run, received_at: float | None = None, metrics: Metrics | None = None
) -> AsyncIterator[bytes]:
    """SSE frames of a run, those ready together in one write (each write is a system call and
    a wake-up of the client: per token, they cost more than the turn under load). Leaving
    early (the client disconnected) cancels the run."""
    try:
        async for batch in run.batches():
            yield b"".join(sse_frame(event) for event in batch)
            if not run.consumer_ready.is_set():
                run.consumer_ready.set()
                if received_at is not None and metrics is not None:
                    metrics.first_event_seconds.observe(time.perf_counter() - received_at)
    finally:
        if not run.finished:
            run.cancel()


@router.post(
    "/v1/chat",
    summary="Ask a question; stream the agent's events and answer tokens",
    description=(
        "With `stream: true` (default) the reply is `text/event-stream`: every SSE message "
        "has `event: <type>` and `data: <json>` (the JSON repeats `type`). Events, in "
        f"order:\n{STREAM_DOC}\n\nA stream always ends with exactly one `done` or `error`. "
        "With `stream: false` the reply is the `done` payload as JSON."
    ),
    response_model=schemas.DoneEvent,
    responses={
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {
                        "oneOf": [
                            {"$ref": f"#/components/schemas/{m.__name__}"}
                            for m in schemas.STREAM_EVENTS
                        ]
                    }
                }
            }
        },
        401: {"model": schemas.ErrorResponse},
        403: {"model": schemas.ErrorResponse},
        404: {"model": schemas.ErrorResponse},
        409: {"model": schemas.ErrorResponse},
        413: {"model": schemas.ErrorResponse},
        422: {"model": schemas.ErrorResponse},
    },
)
async def chat(
    body: schemas.ChatRequest, request: Request, state: State, caller: Caller
) -> Response:
    run = await begin_turn(
        state,
        caller,
        message=body.message,
        thread_id=body.thread_id,
        collections=body.collections,
        effort=body.effort,
        streaming=body.stream,
        user=body.user,
        trace=body.trace,
    )
    headers = trace_headers(run)
    if body.stream:
        return EventSourceResponse(
            sse_events(run, request.scope.get(RECEIVED_AT), state.metrics),
            ping=15,
            headers=headers,
        )
    result = await finished_run(run, request)
    if result["type"] == "error":
        return run_error_response(result, headers)
    return JSONResponse(result, headers=headers)


@router.post(
    "/v1/runs/{run_id}/cancel",
    summary="Stop a run: no further LLM calls; its stream ends with an `error` event",
    response_model=schemas.CancelResponse,
    responses={404: {"model": schemas.ErrorResponse}},
)
async def cancel_run(run_id: str, state: State, caller: Caller) -> schemas.CancelResponse:
    run = state.runs.get(run_id, caller.owner)
    if run is None:
        raise ApiError(404, "run_not_found", f"No run {run_id!r}.")
    return schemas.CancelResponse(run_id=run_id, cancelled=run.cancel())
