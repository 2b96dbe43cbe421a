"""The chat API: FastAPI app that streams agent turns as Server-Sent Events.

`create_app()` builds the app; its lifespan opens the thread store, builds the graph once and
warms the models in the background (`/readyz` says when). `app` is the same, built lazily from
the process settings: `langgraph.json` mounts it next to LangGraph's own API, and both share one
`Services` (the embedded store has one owner per process).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from agent.context import AgentContext
from agent.services import Services
from agent.settings import Settings, get_settings
from graphs.rag import build_graph, shared_services
from server import schemas
from server.auth import KeyRing
from server.deps import AppState
from server.errors import EXCEPTION_HANDLERS
from server.logs import configure_logging, log
from server.metrics import Metrics
from server.middleware import BodyLimit, add_cors
from server.persistence import open_persistence
from server.routes import chat, collections, feedback, openai, operations, threads
from server.runs import RunManager

OPENAPI_TAGS = [
    {"name": "chat", "description": "Ask questions; answers stream as SSE events."},
    {"name": "openai", "description": "OpenAI-compatible chat completions."},
    {"name": "threads", "description": "Conversations kept by the server."},
    {"name": "collections", "description": "Document collections."},
    {"name": "feedback", "description": "People's ratings of answers, on the turns' traces."},
    {"name": "operations", "description": "Health, readiness and metrics."},
]


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """`settings`/`services` default to the process's own (read at start, not at import)."""
    app = FastAPI(
        title="agentrag",
        version="0.1.0",
        summary="Grounded, cited answers from your documents, streamed as the agent works.",
        lifespan=partial(lifespan, settings=settings, services=services),
        openapi_tags=OPENAPI_TAGS,
        exception_handlers=EXCEPTION_HANDLERS,
    )
    add_cors(app, settings)
    app.add_middleware(BodyLimit, settings=settings)
    for router in (
        chat.router,
        openai.router,
        threads.router,
        collections.router,
        feedback.router,
    ):
        app.include_router(router)
    app.include_router(operations.router)
    if operations.STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=operations.STATIC_DIR), name="static")
    app.openapi = partial(openapi_with_stream_events, app)  # type: ignore[method-assign]
    return app


@asynccontextmanager
async def lifespan(
    app: FastAPI, *, settings: Settings | None, services: Services | None
) -> AsyncIterator[None]:
    """The app's running state (`app.state.agentrag`) exists while this runs."""
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
        svc.tracing.start()
        runs = RunManager(
            graph,
            persistence.threads,
            metrics,
            cfg.turn_slots,
            svc.tracing,
            cfg.max_queued_turns,
            cfg.max_queue_wait_s,
        )
        warmup: dict[str, str] = {"embeddings": "loading", "llm": "loading"}
        app.state.agentrag = AppState(cfg, svc, persistence, runs, keys, metrics, warmup)
        warm_task = asyncio.create_task(_warm_up(svc, warmup))
        log(logging.INFO, "server started", threads=persistence.backend)
        try:
            yield
        finally:
            warm_task.cancel()
            await runs.shutdown()
            await svc.catalog.aclose()
            # what the last turns traced leaves now, within a time limit, off the event loop
            await asyncio.to_thread(svc.tracing.flush)
            app.state.agentrag = None


def openapi_with_stream_events(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the SSE event models, in the components where `/v1/chat` refers
    to them (no route returns them as a body, so FastAPI alone would leave them out)."""
    if app.openapi_schema is None:
        spec = FastAPI.openapi(app)
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in schemas.STREAM_EVENTS:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        app.openapi_schema = spec
    return app.openapi_schema


async def _warm_up(services: Services, status: dict[str, str]) -> None:
    """Load the embedding model and start the LLM before the first question needs them."""
    result: dict[str, str] = {}
    try:
        await services.vectors.embed_query("warm up")
        # the copy that answer sentences use, when separate
        await services.vectors.embed(["warm up"])
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


app = create_app()
