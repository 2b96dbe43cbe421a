"""Operations: liveness (`/healthz`), readiness (`/readyz`), Prometheus metrics (`/metrics`),
and the web chat page at `/`.

Ready means the vector store and the thread store answer, the models are warm and a remote LLM
answers: a load balancer then sends no chat to an instance that would fail it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.resilience import dependency_states
from agent.settings import Settings
from server import schemas
from server.deps import MaybeState, State
from server.logs import log

router = APIRouter(tags=["operations"])

BLOCKING_DEPENDENCIES = ("llm", "qdrant", "embeddings")
"""Without these no turn completes; a reranker or web search down only degrades turns."""

STATIC_DIR = Path(__file__).parent.parent / "static"
"""The web chat page and its assets (`index.html` is served at `/`, the rest under `/static`)."""


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=schemas.ReadyReport,
    responses={503: {"model": schemas.ReadyReport}},
)
async def readyz(state: MaybeState) -> JSONResponse:
    if state is None:
        report = schemas.ReadyReport(ready=False, checks={"server": "starting"})
        return JSONResponse(report.model_dump(), status_code=503)
    services, threads = state.services, state.persistence.threads
    checks = {
        "store": await _check(lambda: asyncio.to_thread(services.stack.store.list_collections)),
        "threads": await _check(lambda: threads.list("-", 1)),
        "embeddings": state.warmup["embeddings"],
        "llm": state.warmup["llm"],
    }
    settings = state.settings
    if settings.llm_base_url and checks["llm"] == "ok":
        checks["llm"] = await _check(lambda: _ping_llm(settings))
    circuits = {name: snap.describe() for name, snap in sorted(dependency_states().items())}
    # half open is ready: the trial call that can close the circuit has to come from a turn
    ready = all(v == "ok" for v in checks.values()) and not any(
        circuits.get(name, "").startswith("open") for name in BLOCKING_DEPENDENCIES
    )
    report = schemas.ReadyReport(ready=ready, checks=checks, circuits=circuits)
    return JSONResponse(report.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", include_in_schema=False, response_model=None)
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
