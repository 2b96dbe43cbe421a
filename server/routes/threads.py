"""`/v1/threads`: the conversations a tenant has with the server, and their messages."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from langchain_core.messages import AIMessage, HumanMessage

from server import schemas
from server.deps import Caller, State
from server.errors import ApiError

router = APIRouter(tags=["threads"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": schemas.ErrorResponse}}


@router.post("/v1/threads", status_code=201, response_model=schemas.ThreadModel)
async def create_thread(
    state: State, caller: Caller, body: schemas.CreateThreadRequest | None = None
) -> schemas.ThreadModel:
    record = await state.persistence.threads.create(
        uuid.uuid4().hex, caller.owner, (body.title if body else "").strip()
    )
    return schemas.ThreadModel(**record)


@router.get("/v1/threads", response_model=schemas.ThreadList)
async def list_threads(state: State, caller: Caller, limit: int = 100) -> schemas.ThreadList:
    records = await state.persistence.threads.list(caller.owner, max(1, min(limit, 1000)))
    return schemas.ThreadList(threads=[schemas.ThreadModel(**r) for r in records])


@router.get("/v1/threads/{thread_id}", response_model=schemas.ThreadHistory, responses=NOT_FOUND)
async def get_thread(thread_id: str, state: State, caller: Caller) -> schemas.ThreadHistory:
    record = await state.persistence.threads.get(thread_id, caller.owner)
    # a new thread whose run may not have recorded it yet (a client may ask at once)
    if record is None and state.runs.thread_busy(thread_id, caller.owner):
        now = time.time()
        record = {"thread_id": thread_id, "title": "", "created_at": now, "updated_at": now}
    if record is None:
        raise ApiError(404, "thread_not_found", f"No thread {thread_id!r}.")
    snapshot = await state.runs.graph.aget_state({"configurable": {"thread_id": thread_id}})
    messages = []
    for m in snapshot.values.get("messages") or []:
        if isinstance(m, HumanMessage):
            messages.append(schemas.ThreadMessage(role="user", content=str(m.content)))
        elif isinstance(m, AIMessage):
            messages.append(
                schemas.ThreadMessage(
                    role="assistant",
                    content=str(m.content),
                    citations=m.additional_kwargs.get("citations") or [],
                )
            )
    return schemas.ThreadHistory(**record, messages=messages)


@router.delete("/v1/threads/{thread_id}", status_code=204, responses=NOT_FOUND)
async def delete_thread(thread_id: str, state: State, caller: Caller) -> Response:
    if state.runs.thread_busy(thread_id, caller.owner):
        raise ApiError(409, "thread_busy", f"Thread {thread_id!r} has a run in progress.")
    if not await state.persistence.threads.delete(thread_id, caller.owner):
        raise ApiError(404, "thread_not_found", f"No thread {thread_id!r}.")
    await state.persistence.checkpointer.adelete_thread(thread_id)
    return Response(status_code=204)
