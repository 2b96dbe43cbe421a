"""The chat API: FastAPI app that streams agent turns as Server-Sent Events.

`create_app()` builds the app; its lifespan opens the thread store, builds the graph once and
warms the models in the background (`/readyz` says when). `app` is the same, built lazily from
the process settings: `langgraph.json` mounts it next to LangGraph's own API, and both share one
`Services` (the embedded store has one owner per process).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from langchain_core.messages import AIMessage, HumanMessage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.context import AgentContext
from agent.errors import AgentragError, ConfigError
from agent.services import Services
from agent.settings import Settings, get_settings, validate_collection_name
from graphs.rag import build_graph, shared_services
from retrievers.loaders import SUPPORTED_SUFFIXES, load_paths
from server import schemas
from server.auth import AuthError, KeyRing, Principal
from server.logs import configure_logging, log
from server.metrics import Metrics
from server.persistence import Persistence, open_persistence
from server.runs import Run, RunManager

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_LIMITS = (
    Settings.model_fields["max_request_bytes"].default,
    Settings.model_fields["max_upload_bytes"].default,
)
RECEIVED_AT = "agentrag.received_at"
"""ASGI scope key: when the request reached the server (for the first-event metric)."""
ERROR_STATUS = {
    "cancelled": 409,
    "collection_not_found": 404,
    "agent_error": 500,
    "internal_error": 500,
}


class ApiError(Exception):
    """Every 4xx/5xx the API answers: `{"error": {"code", "message"}}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


@dataclass
class AppState:
    settings: Settings
    services: Services
    persistence: Persistence
    runs: RunManager
    keys: KeyRing
    metrics: Metrics
    warmup: dict[str, str]


def app_state(request: Request) -> AppState:
    state: AppState | None = getattr(request.app.state, "agentrag", None)
    if state is None:
        raise ApiError(503, "starting", "The server is starting; try again in a moment.")
    return state


def principal(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Principal:
    try:
        return state.keys.authenticate(request.headers.get("authorization"))
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


State = Annotated[AppState, Depends(app_state)]
Caller = Annotated[Principal, Depends(principal)]


class BodyLimit:
    """Rejects bodies over the limit before the app reads them (413), also when a client sends
    no Content-Length. Uploads (multipart) have their own, larger limit."""

    def __init__(self, app: ASGIApp, limits: Callable[[], tuple[int, int]]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[RECEIVED_AT] = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        json_limit, upload_limit = self.limits()
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        limit = upload_limit if multipart else json_limit
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit, scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(limit, scope, receive, send)


class _BodyTooLarge(Exception):
    pass


async def _too_large(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(
        413, "request_too_large", f"The request body is larger than {limit} bytes."
    )
    await response(scope, receive, send)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """`settings`/`services` default to the process's own (read at start, not at import)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = settings or (services.settings if services else get_settings())
        configure_logging(cfg.log_json)
        svc = services or shared_services()
        metrics = Metrics()
        keys = KeyRing(cfg)
        if cfg.cors_origins:
            log(logging.INFO, "cors enabled", origins=cfg.cors_origins)
        if keys.open:
            log(
                logging.WARNING,
                "no API keys configured: the server is open to anyone who can reach it, "
                "and every caller uses tenant 'public'",
            )
        async with open_persistence(cfg) as persistence:
            graph = build_graph(svc, checkpointer=persistence.checkpointer)
            runs = RunManager(graph, persistence.threads, metrics, cfg.max_concurrent_turns)
            warmup: dict[str, str] = {"embeddings": "loading", "llm": "loading"}
            app.state.agentrag = AppState(cfg, svc, persistence, runs, keys, metrics, warmup)
            warm_task = asyncio.create_task(_warm_up(svc, warmup))
            log(logging.INFO, "server started", threads=persistence.backend)
            try:
                yield
            finally:
                warm_task.cancel()
                await runs.shutdown()
                app.state.agentrag = None

    app = FastAPI(
        title="agentrag",
        version="0.1.0",
        summary="Grounded, cited answers from your documents, streamed as the agent works.",
        lifespan=lifespan,
        openapi_tags=[
            {"name": "chat", "description": "Ask questions; answers stream as SSE events."},
            {"name": "openai", "description": "OpenAI-compatible chat completions."},
            {"name": "threads", "description": "Conversations kept by the server."},
            {"name": "collections", "description": "Document collections."},
            {"name": "operations", "description": "Health, readiness and metrics."},
        ],
    )
    cors = (settings.cors_origins if settings else None) or _env_cors()
    if cors:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors,
            allow_methods=["*"],
            allow_headers=["*"],
        )

    def limits() -> tuple[int, int]:
        state: AppState | None = getattr(app.state, "agentrag", None)
        cfg = state.settings if state else settings
        if cfg is None:
            return DEFAULT_LIMITS
        return cfg.max_request_bytes, cfg.max_upload_bytes

    app.add_middleware(BodyLimit, limits=limits)
    _install_error_handlers(app)
    _chat_routes(app)
    from server.openai_compat import openai_routes

    openai_routes(app)
    _thread_routes(app)
    _collection_routes(app)
    _operation_routes(app)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _document_events(app)
    return app


def _document_events(app: FastAPI) -> None:
    """Put the SSE event models into the OpenAPI components, where `/v1/chat` refers to them."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = build()
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in schemas.STREAM_EVENTS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _env_cors() -> list[str]:
    try:
        return get_settings().cors_origins
    except ConfigError:
        return []


async def _warm_up(services: Services, status: dict[str, str]) -> None:
    """Load the embedding model and start the LLM before the first question needs them."""
    result: dict[str, str] = {}
    try:
        await services.vectors.embed_query("warm up")
        await services.vectors.embed(
            ["warm up"]
        )  # the copy that answer sentences use, when separate
        result["embeddings"] = "ok"
    except Exception as exc:
        result["embeddings"] = f"error: {exc}"
    try:
        await services.models.aget("generator", AgentContext())
        result["llm"] = "ok"
    except Exception as exc:
        result["llm"] = f"error: {exc}"
    # Models, graph and imports are loaded for good: move them out of the garbage collector's
    # sight, so that full collections under load stay short (they stalled every stream for
    # up to a second in the load benchmark). Ready only after that.
    gc.collect()
    gc.freeze()
    status.update(result)


# -- errors ------------------------------------------------------------------------------------
def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "invalid_json", "The request body is not valid JSON.")
        parts = []
        for e in errors:
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        return error_response(422, "invalid_request", "; ".join(parts) or "Invalid request.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logging.getLogger("agentrag.server").exception("request failed")
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")


# -- chat --------------------------------------------------------------------------------------
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
        if await state.persistence.threads.get(thread_id, caller.tenant) is None:
            raise ApiError(404, "thread_not_found", f"No thread {thread_id!r}.")
        if state.runs.thread_busy(thread_id):
            raise ApiError(
                409,
                "thread_busy",
                f"Thread {thread_id!r} has a run in progress; wait or cancel it.",
            )
    ctx = AgentContext(
        effort=effort or "medium",  # type: ignore[arg-type]
        collections=allowed,
        tenant=caller.tenant,
    )
    return state.runs.start(
        message=message,
        thread_id=thread_id or uuid.uuid4().hex,
        ctx=ctx,
        history=history or [],
        new_thread=thread_id is None,
        streaming=streaming,
    )


async def _allowed_collections(
    state: AppState, caller: Principal, requested: list[str] | None
) -> list[str] | None:
    if requested is None:
        return sorted(caller.collections) if caller.collections is not None else None
    infos = await asyncio.to_thread(state.services.stack.store.list_collections)
    existing = {c.name for c in infos}
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


async def finished_run(run: Run, request: Request) -> dict[str, Any]:
    """Wait for a run's last event; a client that goes away cancels the run."""
    assert run.task is not None
    while not run.task.done():
        done, _ = await asyncio.wait({run.task}, timeout=0.5)
        if not done and await request.is_disconnected():
            run.cancel()
    result = run.result or {"type": "error", "code": "internal_error", "message": "no result"}
    return result


def sse_frame(event: dict[str, Any]) -> bytes:
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


def _chat_routes(app: FastAPI) -> None:
    stream_doc = "\n".join(
        f"- `{m.model_fields['type'].default}` ({m.__name__})" for m in schemas.STREAM_EVENTS
    )

    @app.post(
        "/v1/chat",
        tags=["chat"],
        summary="Ask a question; stream the agent's events and answer tokens",
        description=(
            "With `stream: true` (default) the reply is `text/event-stream`: every SSE message "
            "has `event: <type>` and `data: <json>` (the JSON repeats `type`). Events, in "
            f"order:\n{stream_doc}\n\nA stream always ends with exactly one `done` or `error`. "
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
        )
        if body.stream:
            return EventSourceResponse(
                sse_events(run, request.scope.get(RECEIVED_AT), state.metrics), ping=15
            )
        result = await finished_run(run, request)
        if result["type"] == "error":
            return error_response(
                ERROR_STATUS.get(result["code"], 500), result["code"], result["message"]
            )
        return JSONResponse(result)

    @app.post(
        "/v1/runs/{run_id}/cancel",
        tags=["chat"],
        summary="Stop a run: no further LLM calls; its stream ends with an `error` event",
        response_model=schemas.CancelResponse,
        responses={404: {"model": schemas.ErrorResponse}},
    )
    async def cancel_run(run_id: str, state: State, caller: Caller) -> schemas.CancelResponse:
        run = state.runs.get(run_id, caller.tenant)
        if run is None:
            raise ApiError(404, "run_not_found", f"No run {run_id!r}.")
        return schemas.CancelResponse(run_id=run_id, cancelled=run.cancel())


# -- threads -----------------------------------------------------------------------------------
def _thread_routes(app: FastAPI) -> None:
    not_found: dict[int | str, dict[str, Any]] = {404: {"model": schemas.ErrorResponse}}

    @app.post("/v1/threads", tags=["threads"], status_code=201, response_model=schemas.ThreadModel)
    async def create_thread(
        state: State, caller: Caller, body: schemas.CreateThreadRequest | None = None
    ) -> schemas.ThreadModel:
        record = await state.persistence.threads.create(
            uuid.uuid4().hex, caller.tenant, (body.title if body else "").strip()
        )
        return schemas.ThreadModel(**record)

    @app.get("/v1/threads", tags=["threads"], response_model=schemas.ThreadList)
    async def list_threads(state: State, caller: Caller, limit: int = 100) -> schemas.ThreadList:
        records = await state.persistence.threads.list(caller.tenant, max(1, min(limit, 1000)))
        return schemas.ThreadList(threads=[schemas.ThreadModel(**r) for r in records])

    @app.get(
        "/v1/threads/{thread_id}",
        tags=["threads"],
        response_model=schemas.ThreadHistory,
        responses=not_found,
    )
    async def get_thread(thread_id: str, state: State, caller: Caller) -> schemas.ThreadHistory:
        record = await state.persistence.threads.get(thread_id, caller.tenant)
        if record is None and state.runs.thread_starting(thread_id, caller.tenant):
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

    @app.delete("/v1/threads/{thread_id}", tags=["threads"], status_code=204, responses=not_found)
    async def delete_thread(thread_id: str, state: State, caller: Caller) -> Response:
        if state.runs.thread_busy(thread_id):
            raise ApiError(409, "thread_busy", f"Thread {thread_id!r} has a run in progress.")
        if not await state.persistence.threads.delete(thread_id, caller.tenant):
            raise ApiError(404, "thread_not_found", f"No thread {thread_id!r}.")
        await state.persistence.checkpointer.adelete_thread(thread_id)
        return Response(status_code=204)


# -- collections -------------------------------------------------------------------------------
def _collection_routes(app: FastAPI) -> None:
    errors: dict[int | str, dict[str, Any]] = {
        403: {"model": schemas.ErrorResponse},
        404: {"model": schemas.ErrorResponse},
        413: {"model": schemas.ErrorResponse},
        415: {"model": schemas.ErrorResponse},
    }

    @app.get("/v1/collections", tags=["collections"], response_model=schemas.CollectionList)
    async def list_collections(state: State, caller: Caller) -> schemas.CollectionList:
        infos = await asyncio.to_thread(state.services.stack.store.list_collections)
        return schemas.CollectionList(
            collections=[
                schemas.CollectionModel(
                    name=i.name,
                    description=i.description,
                    points=i.points if state.keys.open else None,
                )
                for i in infos
                if caller.allows(i.name)
            ]
        )

    @app.post(
        "/v1/collections/{name}/documents",
        tags=["collections"],
        summary="Upload documents (md, txt, html, pdf, docx, jsonl); unchanged files embed nothing",
        response_model=schemas.UploadReport,
        responses=errors,
    )
    async def upload_documents(
        name: str,
        state: State,
        caller: Caller,
        files: Annotated[list[UploadFile], File(description="One or more documents.")],
        description: Annotated[str | None, Form()] = None,
    ) -> schemas.UploadReport:
        _check_collection_name(name)
        if not caller.allows(name):
            raise ApiError(
                403, "forbidden_collection", f"This key may not use collection {name!r}."
            )
        unsupported = [
            f.filename or "?"
            for f in files
            if Path(f.filename or "").suffix.lower() not in SUPPORTED_SUFFIXES
        ]
        if len(unsupported) == len(files):
            raise ApiError(
                415,
                "unsupported_file_type",
                f"Unsupported file type: {', '.join(unsupported)}. Supported: "
                f"{', '.join(sorted(SUPPORTED_SUFFIXES))}.",
            )
        return await asyncio.to_thread(
            _ingest_uploads, state, caller, name, files, description, unsupported
        )

    @app.delete(
        "/v1/collections/{name}/documents/{doc_id:path}",
        tags=["collections"],
        status_code=204,
        responses=errors,
    )
    async def delete_document(name: str, doc_id: str, state: State, caller: Caller) -> Response:
        _check_collection_name(name)
        if not caller.allows(name):
            raise ApiError(
                403, "forbidden_collection", f"This key may not use collection {name!r}."
            )
        try:
            removed = await asyncio.to_thread(
                state.services.stack.ingestor.delete_documents,
                name,
                doc_ids=[doc_id],
                tenant=caller.tenant,
            )
        except AgentragError as exc:
            raise ApiError(404, "collection_not_found", str(exc)) from None
        if not removed:
            raise ApiError(404, "document_not_found", f"No document {doc_id!r} in {name!r}.")
        return Response(status_code=204)


def _check_collection_name(name: str) -> None:
    try:
        validate_collection_name(name)
    except ConfigError as exc:
        raise ApiError(422, "invalid_collection_name", str(exc)) from None


UPLOAD_PREFIX = "upload:"


def _ingest_uploads(
    state: AppState,
    caller: Principal,
    collection: str,
    files: list[UploadFile],
    description: str | None,
    unsupported: list[str],
) -> schemas.UploadReport:
    """Uploaded files get ids from their names (`upload:<name>`), so uploading the same file
    again replaces it, and an unchanged one embeds nothing, as with `agentrag ingest`."""
    with tempfile.TemporaryDirectory(prefix="agentrag-upload-") as tmp:
        paths: list[Path] = []
        names: dict[str, str] = {}
        for upload in files:
            filename = Path(upload.filename or "").name
            if not filename or filename in unsupported:
                continue
            path = Path(tmp) / f"{len(paths)}-{filename}"
            with path.open("wb") as out:
                while chunk := upload.file.read(1 << 20):
                    out.write(chunk)
            paths.append(path)
            names[str(path.resolve())] = filename
        documents, skipped = load_paths(paths)
        renamed = [
            replace(
                doc,
                doc_id=_renamed(doc.doc_id, names, UPLOAD_PREFIX),
                source=_renamed(doc.source, names, UPLOAD_PREFIX),
            )
            for doc in documents
        ]
        report = state.services.stack.ingestor.ingest_documents(
            renamed, collection, description=description, tenant=caller.tenant
        )
        state.services.catalog.forget()
    reasons = [
        {"file": _renamed(s.path, names), "reason": s.reason} for s in [*skipped, *report.skipped]
    ]
    reasons += [{"file": f, "reason": "unsupported file type"} for f in unsupported]
    return schemas.UploadReport(
        collection=collection,
        files=sorted(set(names.values())),
        documents=report.documents,
        chunks_added=report.chunks_added,
        unchanged=report.documents_unchanged,
        skipped=reasons,
    )


def _renamed(value: str, names: dict[str, str], prefix: str = "") -> str:
    """A temporary upload path (at the start of an id, source or report path) replaced by the
    file's own name; JSONL records' ids are their own and stay."""
    for tmp_path, name in names.items():
        if value.startswith(tmp_path):
            return prefix + name + value[len(tmp_path) :]
    return value


# -- operations --------------------------------------------------------------------------------
def _operation_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        response_model=schemas.ReadyReport,
        responses={503: {"model": schemas.ReadyReport}},
    )
    async def readyz(request: Request) -> JSONResponse:
        state: AppState | None = getattr(request.app.state, "agentrag", None)
        if state is None:
            report = schemas.ReadyReport(ready=False, checks={"server": "starting"})
            return JSONResponse(report.model_dump(), status_code=503)
        checks = {
            "store": await _check(
                lambda: asyncio.to_thread(state.services.stack.store.list_collections)
            ),
            "threads": await _check(lambda: state.persistence.threads.list("-", 1)),
            "embeddings": state.warmup["embeddings"],
            "llm": state.warmup["llm"],
        }
        if state.settings.llm_base_url and checks["llm"] == "ok":
            checks["llm"] = await _check(lambda: _ping_llm(state.settings))
        ready = all(v == "ok" for v in checks.values())
        report = schemas.ReadyReport(ready=ready, checks=checks)
        return JSONResponse(report.model_dump(), status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics(state: State) -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False, response_model=None)
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return JSONResponse({"name": "agentrag", "docs": "/docs"})
        return FileResponse(page, media_type="text/html")


async def _check(probe: Callable[[], Awaitable[Any]]) -> str:
    try:
        await asyncio.wait_for(probe(), timeout=5)
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


async def _ping_llm(settings: Settings) -> None:
    assert settings.llm_base_url
    headers = {}
    if settings.llm_api_key:
        headers["Authorization"] = f"Bearer {settings.llm_api_key.get_secret_value()}"
    async with httpx.AsyncClient(timeout=3) as client:
        started = time.perf_counter()
        reply = await client.get(settings.llm_base_url.rstrip("/") + "/models", headers=headers)
        reply.raise_for_status()
        log(logging.DEBUG, "llm ping", ms=round((time.perf_counter() - started) * 1000, 1))


app = create_app()
