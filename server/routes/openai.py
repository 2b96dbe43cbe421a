"""`/v1/chat/completions` and `/v1/models` in OpenAI's shape, so OpenAI SDKs and chat UIs work
unchanged. `model` picks the effort tier; citations ride in an extra `citations` field.

OpenAI clients send the whole conversation each time: without `thread_id` the earlier messages
become the new thread's history; with `thread_id` the server's thread holds the history and only
the last user message is taken.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from server import schemas
from server.deps import Caller, State
from server.errors import ApiError, run_error_response
from server.events import Event
from server.runs import Run
from server.turns import begin_turn, finished_run, trace_headers

router = APIRouter(tags=["openai"])

MODELS: dict[str, str] = {
    "agentrag": "medium",
    "agentrag-low": "low",
    "agentrag-medium": "medium",
    "agentrag-high": "high",
}
REVISED = "\n\n(Revised answer)\n\n"
"""Streamed when reflection rejects the answer and it is written again: OpenAI streams cannot
take text back, so the reader sees both, the second one marked."""


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class CompletionMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class CompletionRequest(schemas.RequestModel):
    """OpenAI's request; sampling fields (temperature, ...) are accepted and ignored: the agent
    chooses its own."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="agentrag | agentrag-low | agentrag-medium | agentrag-high")
    messages: list[CompletionMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    thread_id: str | None = Field(default=None, description="agentrag extension: keep a thread.")
    collections: list[str] | None = Field(
        default=None, min_length=1, description="agentrag extension: collections to search."
    )
    user: str | None = Field(
        default=None, max_length=200, description="End user, recorded as the trace's user."
    )
    trace: bool = Field(
        default=True, description="agentrag extension: false, no Langfuse trace for this turn."
    )


@router.get("/v1/models")
async def list_models(caller: Caller) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "agentrag"} for name in MODELS
        ],
    }


@router.post(
    "/v1/chat/completions",
    responses={
        400: {"model": schemas.ErrorResponse},
        404: {"model": schemas.ErrorResponse},
        422: {"model": schemas.ErrorResponse},
    },
)
async def chat_completions(
    body: CompletionRequest, request: Request, state: State, caller: Caller
) -> Response:
    if body.model not in MODELS:
        raise ApiError(
            404,
            "model_not_found",
            f"No model {body.model!r}. Models: {', '.join(MODELS)}.",
        )
    last = body.messages[-1]
    question = last.text()
    if last.role != "user" or not question.strip():
        raise ApiError(422, "invalid_request", "The last message must be a user message with text.")
    _check_sizes(
        body.messages, state.settings.max_message_chars, state.settings.max_history_messages
    )
    history: list[Any] = []
    if body.thread_id is None:
        history = [
            (m.role, m.text())
            for m in body.messages[:-1]
            if m.role in ("user", "assistant") and m.text().strip()
        ]
    run = await begin_turn(
        state,
        caller,
        message=question,
        thread_id=body.thread_id,
        collections=body.collections,
        effort=MODELS[body.model],
        history=history,
        streaming=body.stream,
        user=body.user,
        trace=body.trace,
    )
    headers = trace_headers(run)
    created = int(time.time())
    completion_id = f"chatcmpl-{run.run_id}"
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return EventSourceResponse(
            _stream(run, body.model, completion_id, created, include_usage),
            ping=15,
            headers=headers,
        )
    result = await finished_run(run, request)
    if result["type"] == "error":
        return run_error_response(result, headers)
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result["answer"]},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(result),
            "citations": result["citations"],
            "thread_id": result["thread_id"],
            "agentrag": _extras(result),
        },
        headers=headers,
    )


def _check_sizes(messages: list[CompletionMessage], max_chars: int, max_earlier: int) -> None:
    """Every message, of any role, is held to the chat message limit, and there are at most
    `max_earlier` before the last: earlier messages are stored with the thread too."""
    if len(messages) - 1 > max_earlier:
        raise ApiError(
            413,
            "too_many_messages",
            f"The request has {len(messages) - 1} earlier messages; the limit is {max_earlier}.",
        )
    for i, message in enumerate(messages):
        if len(text := message.text()) > max_chars:
            raise ApiError(
                413,
                "message_too_long",
                f"messages[{i}] has {len(text)} characters; the limit is {max_chars}.",
            )


def _usage(done: Event) -> dict[str, int]:
    usage = done["usage"]
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["input_tokens"] + usage["output_tokens"],
    }


def _extras(done: Event) -> dict[str, Any]:
    return {
        "run_id": done["run_id"],
        "verdict": done.get("verdict"),
        "flags": done.get("flags") or [],
        "llm_calls": done["usage"]["llm_calls"],
        "trace_id": done.get("trace_id"),
        "trace_url": done.get("trace_url"),
    }


async def _stream(
    run: Run, model: str, completion_id: str, created: int, include_usage: bool
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        return json.dumps(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            },
            default=str,
        )

    yield chunk({"role": "assistant", "content": ""})
    run.consumer_ready.set()
    streamed = False
    try:
        async for event in run.events():
            for frame in _frames(event, chunk, streamed, include_usage):
                yield frame
            streamed = streamed or event["type"] == "token"
    finally:
        if not run.finished:
            run.cancel()
    yield "[DONE]"


def _frames(event: Event, chunk: Any, streamed: bool, include_usage: bool) -> list[str]:
    kind = event["type"]
    if kind == "token":
        return [chunk({"content": event["text"]})]
    if kind == "verdict" and event.get("action") == "regenerate" and streamed:
        return [chunk({"content": REVISED})]
    if kind == "error":
        return [json.dumps({"error": {"code": event["code"], "message": event["message"]}})]
    if kind != "done":
        return []
    frames: list[str] = []
    if streamed and (event.get("verdict") or {}).get("revised"):
        # the checked answer differs from what streamed: unsupported claims removed or marked,
        # missing parts said to be missing
        frames.append(chunk({"content": REVISED + event["answer"]}))
    frames.append(
        chunk(
            {},
            "stop",
            citations=event["citations"],
            thread_id=event["thread_id"],
            agentrag=_extras(event),
        )
    )
    if include_usage:
        last = json.loads(chunk({}))
        last["choices"] = []
        last["usage"] = _usage(event)
        frames.append(json.dumps(last))
    return frames
