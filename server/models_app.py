"""The model server (`agentrag serve-models`): embeddings and reranking over the protocols their
clients already speak, so the agent, or any other client, uses it by URL alone.

- OpenAI: `POST /v1/embeddings` (also `/embeddings`), float or base64 vectors.
- Hugging Face TEI: `POST /embed`, `POST /rerank`, `GET /info`, `GET /health`.
- Cohere: `POST /v2/rerank` and `POST /v1/rerank` (`cohere.ClientV2(base_url=...)` works as is).
- Prometheus: `GET /metrics` (queue depth, batch sizes, tokens, latency).

Errors use TEI's shape, `{"error": "...", "error_type": "..."}`: 422 for a request the model
cannot take (too many inputs, an empty one, one too long without `truncate`), 413 for a body
over the limit, 429 with `Retry-After` when the queue is full, 503 while shutting down, 401
for a wrong key. With a key configured every route but `/health` and `/metrics` needs
`Authorization: Bearer KEY`.
"""

from __future__ import annotations

import base64
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retrievers.model_engine import (
    Direction,
    EngineError,
    Kind,
    ModelEngine,
    Overloaded,
    ShuttingDown,
    normalized,
    retry_after,
    sigmoid,
)
from server.middleware import MAX_HEADER_BYTES, BodyLimit

__all__ = ["ModelServer", "create_models_app"]

VERSION = "1"
DEFAULT_MAX_BODY_BYTES = 2_000_000
"""TEI's default payload limit."""

_STATUS = {"Validation": 422, "Tokenizer": 422, "Empty": 400, "Overloaded": 429}
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ModelsError(Exception):
    def __init__(
        self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers


def _error(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": message, "error_type": error_type}, status_code=status, headers=headers
    )


def _engine_error(exc: EngineError) -> ModelsError:
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": retry_after(exc.retry_after_s)}
        return ModelsError(429, exc.error_type, str(exc), headers)
    if isinstance(exc, ShuttingDown):
        return ModelsError(503, exc.error_type, str(exc))
    return ModelsError(_STATUS.get(exc.error_type, 424), exc.error_type, str(exc))


# -- metrics ---------------------------------------------------------------------------------


class ModelMetrics:
    """One registry per app, so tests (and two apps in one process) see only their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "agentrag_models_requests_total",
            "Requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "agentrag_models_request_seconds",
            "Request latency, body read to reply.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "agentrag_models_batch_size",
            "Inputs per forward pass (requests batched together).",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_tokens = Histogram(
            "agentrag_models_batch_tokens",
            "Padded tokens per forward pass.",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.forward_seconds = Histogram(
            "agentrag_models_forward_seconds",
            "Time of one forward pass, collate to result on the host.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "agentrag_models_tokens_total",
            "Tokens run through the model (padding not counted).",
            ["model"],
            registry=self.registry,
        )
        self.padding = Counter(
            "agentrag_models_padding_tokens_total",
            "Padding tokens run through the model.",
            ["model"],
            registry=self.registry,
        )
        self.batches = Counter(
            "agentrag_models_batches_total", "Forward passes.", ["model"], registry=self.registry
        )
        self.queue_depth = Gauge(
            "agentrag_models_queue_depth",
            "Inputs waiting for a forward pass.",
            ["model"],
            registry=self.registry,
        )
        self.queue_tokens = Gauge(
            "agentrag_models_queue_tokens",
            "Tokens waiting for a forward pass.",
            ["model"],
            registry=self.registry,
        )
        self.tokens_per_second = Gauge(
            "agentrag_models_tokens_per_second",
            "Recent forward-pass throughput (moving average).",
            ["model"],
            registry=self.registry,
        )

    def batch_done(self, kind: Kind, items: int, tokens: int, padded: int, seconds: float) -> None:
        self.batch_size.labels(kind).observe(items)
        self.batch_tokens.labels(kind).observe(padded)
        self.forward_seconds.labels(kind).observe(seconds)
        self.tokens.labels(kind).inc(tokens)
        self.padding.labels(kind).inc(max(0, padded - tokens))
        self.batches.labels(kind).inc()

    def watch(self, engine: ModelEngine) -> None:
        engine.observer = self
        kind = engine.info.kind
        self.queue_depth.labels(kind).set_function(lambda: engine.queue_depth)
        self.queue_tokens.labels(kind).set_function(lambda: engine.queued_tokens)
        self.tokens_per_second.labels(kind).set_function(lambda: engine.tokens_per_second)


# -- requests --------------------------------------------------------------------------------


class OpenAIEmbeddingRequest(BaseModel):
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class TeiEmbedRequest(BaseModel):
    inputs: str | list[str]
    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    prompt_name: str | None = None
    dimensions: int | None = None


class TeiRerankRequest(BaseModel):
    query: str
    texts: list[str]
    truncate: bool | None = None
    truncation_direction: Literal["Right", "Left", "right", "left"] = "Right"
    raw_scores: bool = False
    return_text: bool = False


class CohereDocument(BaseModel):
    text: str


class CohereRerankRequest(BaseModel):
    query: str
    documents: list[str | CohereDocument]
    model: str | None = None
    top_n: int | None = Field(default=None, ge=1)
    max_tokens_per_doc: int | None = Field(default=None, ge=1)
    return_documents: bool = False
    rank_fields: list[str] | None = None
    max_chunks_per_doc: int | None = None
    priority: int | None = None


def _direction(value: str) -> Direction:
    return "left" if value.lower() == "left" else "right"


@dataclass
class ModelServer:
    """What the app serves: an embedding engine, a reranking engine, or both."""

    embed: ModelEngine | None = None
    rerank: ModelEngine | None = None
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    auto_truncate: bool = False
    """What a request that does not say `truncate` gets (TEI's `--auto-truncate`)."""
    drain_timeout_s: float = 30.0
    owns_engines: bool = True
    """Whether the app's shutdown closes the engines (not when they outlive it)."""

    def engine(self, kind: Kind) -> ModelEngine:
        engine = self.embed if kind == "embed" else self.rerank
        if engine is None:
            what = "embedding" if kind == "embed" else "reranking"
            flag = "--embed" if kind == "embed" else "--rerank"
            raise ModelsError(
                404, "Validation", f"this server runs no {what} model (start it with {flag} MODEL)"
            )
        return engine

    @property
    def engines(self) -> list[ModelEngine]:
        return [e for e in (self.embed, self.rerank) if e is not None]


def create_models_app(server: ModelServer) -> FastAPI:
    metrics = ModelMetrics()
    for engine in server.engines:
        metrics.watch(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn has stopped accepting and waited for open requests; anything still queued
        # (a request whose client went away) runs to the end before the models go
        for engine in server.engines if server.owns_engines else []:
            engine.close(server.drain_timeout_s)

    app = FastAPI(
        title="agentrag model server",
        version=VERSION,
        lifespan=lifespan,
        description=__doc__,
    )
    app.state.models = server
    app.state.metrics = metrics

    @app.exception_handler(ModelsError)
    async def models_error(request: Request, exc: ModelsError) -> JSONResponse:
        return _error(exc.status, exc.error_type, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(422, "Validation", "the request body is not valid JSON")
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, "Validation", f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "Validation", str(exc.detail))

    app.add_middleware(_Guard, server=server, metrics=metrics)
    app.add_middleware(
        BodyLimit,
        fixed=server.max_body_bytes,
        reply=lambda limit: _error(
            413, "Validation", f"the request body is larger than {limit} bytes"
        ),
        headers_reply=lambda size: _error(
            431,
            "Validation",
            f"the request headers take {size} bytes; the limit is {MAX_HEADER_BYTES}",
        ),
    )

    def truncating(value: bool | None) -> bool:
        return server.auto_truncate if value is None else value

    async def score(
        query: str,
        texts: list[str],
        truncate: bool,
        direction: Direction,
        max_tokens: int | None = None,
    ) -> np.ndarray:
        engine = server.engine("rerank")
        try:
            logits, _ = await engine.score(query, texts, truncate, direction, max_tokens)
        except EngineError as exc:
            raise _engine_error(exc) from exc
        return logits

    @app.post("/v1/embeddings")
    @app.post("/embeddings", include_in_schema=False)
    async def openai_embeddings(body: OpenAIEmbeddingRequest) -> Response:
        return await _openai_embeddings(server, body)

    @app.post("/embed")
    async def tei_embed(body: TeiEmbedRequest) -> Response:
        return await _tei_embed(server, body)

    @app.post("/rerank")
    async def tei_rerank(body: TeiRerankRequest) -> Response:
        logits = await score(
            body.query,
            body.texts,
            truncating(body.truncate),
            _direction(body.truncation_direction),
        )
        scores = logits if body.raw_scores else sigmoid(logits)
        order = np.argsort(-scores, kind="stable")
        return JSONResponse(
            [
                {"index": int(i), "score": float(scores[i])}
                | ({"text": body.texts[i]} if body.return_text else {})
                for i in order
            ]
        )

    async def cohere_rerank(body: CohereRerankRequest, version: str) -> Response:
        texts = [d if isinstance(d, str) else d.text for d in body.documents]
        logits = await score(body.query, texts, True, "right", body.max_tokens_per_doc)
        scores = sigmoid(logits)
        order = np.argsort(-scores, kind="stable")[: body.top_n or len(texts)]
        results = []
        for i in order:
            item: dict[str, Any] = {"index": int(i), "relevance_score": float(scores[i])}
            if version == "1" and body.return_documents:
                item["document"] = {"text": texts[i]}
            results.append(item)
        return JSONResponse(
            {
                "id": str(uuid.uuid4()),
                "results": results,
                "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}},
            }
        )

    @app.post("/v2/rerank")
    async def cohere_v2_rerank(body: CohereRerankRequest) -> Response:
        return await cohere_rerank(body, "2")

    @app.post("/v1/rerank")
    async def cohere_v1_rerank(body: CohereRerankRequest) -> Response:
        return await cohere_rerank(body, "1")

    @app.get("/info")
    async def info() -> dict[str, Any]:
        models = {e.info.kind: _describe(e, server.auto_truncate) for e in server.engines}
        first = server.engines[0]
        return {**_describe(first, server.auto_truncate), "models": models, "version": VERSION}

    @app.get("/health")
    async def health() -> Response:
        if server.engines and all(e.ready for e in server.engines):
            return Response(status_code=200)
        return _error(503, "Unhealthy", "the model server is not ready")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


_ROUTES = frozenset(
    {"/v1/embeddings", "/embeddings", "/embed", "/rerank", "/v1/rerank", "/v2/rerank", "/info"}
    | {"/health", "/metrics"}
)


# -- embedding replies (the FastAPI routes and `_Guard`'s fast path share them) -------------


async def _embed(
    server: ModelServer, texts: list[str], truncate: bool, direction: Direction
) -> tuple[np.ndarray, int, ModelEngine]:
    engine = server.engine("embed")
    try:
        rows, tokens = await engine.embed(texts, truncate, direction)
    except EngineError as exc:
        raise _engine_error(exc) from exc
    return rows, tokens, engine


def _check_dimensions(engine: ModelEngine, dimensions: int | None) -> None:
    if dimensions is not None and dimensions != engine.info.dimension:
        raise ModelsError(
            422,
            "Validation",
            f"`dimensions` must be the model's {engine.info.dimension} (it is not a "
            "Matryoshka model)",
        )


async def _openai_embeddings(server: ModelServer, body: OpenAIEmbeddingRequest) -> Response:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if texts and not all(isinstance(t, str) for t in texts):
        raise ModelsError(422, "Validation", "token arrays are not accepted: send text")
    rows, tokens, engine = await _embed(
        server, list(map(str, texts)), server.auto_truncate, "right"
    )
    _check_dimensions(engine, body.dimensions)
    vectors = normalized(rows)
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode()
            if body.encoding_format == "base64"
            else v,
        }
        for i, v in enumerate(vectors)
    ]
    return _json(
        {
            "object": "list",
            "data": data,
            "model": body.model or engine.info.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def _tei_embed(server: ModelServer, body: TeiEmbedRequest) -> Response:
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    truncate = server.auto_truncate if body.truncate is None else body.truncate
    rows, _, engine = await _embed(server, texts, truncate, _direction(body.truncation_direction))
    _check_dimensions(engine, body.dimensions)
    return _json(normalized(rows) if body.normalize else rows)


_Reply = Callable[[ModelServer, Any], Awaitable[Response]]
_FAST_ROUTES: dict[str, tuple[type[BaseModel], _Reply]] = {
    "/embed": (TeiEmbedRequest, _tei_embed),
    "/v1/embeddings": (OpenAIEmbeddingRequest, _openai_embeddings),
    "/embeddings": (OpenAIEmbeddingRequest, _openai_embeddings),
}
"""The routes a single query comes by, answered by `_Guard` without FastAPI's request
machinery when their body is valid; anything else takes the FastAPI route, which holds the
same reply and every error."""


def _json(content: Any) -> Response:
    """numpy arrays written straight to JSON (orjson), several times faster than lists of
    Python floats for a 384-d vector."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


def _describe(engine: ModelEngine, auto_truncate: bool) -> dict[str, Any]:
    """TEI's `/info` fields, and the device, backend and dimension."""
    info = engine.info
    model_type: dict[str, Any] = (
        {"embedding": {"pooling": info.pooling}}
        if info.kind == "embed"
        else {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}
    )
    return {
        "model_id": info.model_id,
        "model_sha": None,
        "model_dtype": info.dtype,
        "model_type": model_type,
        "max_concurrent_requests": None,
        "max_input_length": info.max_input_length,
        "max_batch_tokens": engine.limits.max_batch_tokens,
        "max_batch_requests": None,
        "max_client_batch_size": engine.limits.max_client_batch_size,
        "auto_truncate": auto_truncate,
        "tokenization_workers": engine.limits.tokenization_workers,
        "device": info.device,
        "backend": info.backend,
        "dim": info.dimension,
    }


class _Guard:
    """The key check, the request metrics and the embedding routes' fast path, as plain ASGI
    (no per-request task or body wrapping: it runs on every call, and a query's round trip is
    a few milliseconds).

    A valid JSON body to `/embed` or `/v1/embeddings` is answered here by the same reply
    function as the FastAPI route, skipping FastAPI's dozen ASGI layers, its content-type
    parsing and its two-step body decoding (JSON, then validation): a query's serving work
    outside the model went from 0.28 to 0.16 ms in-process on a 2-core CPU, and its loopback
    round trip got 0.2-0.4 ms shorter with the cores half busy, more when they are full. A
    body that does not validate (or is not JSON, or never fully arrived) is replayed to the
    FastAPI route, so every error reads exactly as before."""

    def __init__(self, app: ASGIApp, server: ModelServer, metrics: ModelMetrics) -> None:
        self.app = app
        self.server = server
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = scope.get("path", "")
        label = route if route in _ROUTES else "other"
        status = 500

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            key = self.server.api_key
            if key and route not in ("/health", "/metrics"):
                headers = dict(scope.get("headers") or [])
                given = headers.get(b"authorization", b"").decode("latin-1")
                if not _authorized(given, key):
                    reply = _error(
                        401, "Unauthorized", "a valid `Authorization: Bearer` key is needed"
                    )
                    await reply(scope, receive, recording)
                    return
            fast = _FAST_ROUTES.get(route) if scope.get("method") == "POST" else None
            if fast is not None and _sends_json(scope):
                unanswered = await self._answer(fast, scope, receive, recording)
                if unanswered is None:
                    return
                receive = unanswered
            await self.app(scope, receive, recording)
        finally:
            self.metrics.requests.labels(label, str(status)).inc()
            if label != "other":
                self.metrics.request_seconds.labels(label).observe(time.perf_counter() - started)

    async def _answer(
        self, route: tuple[type[BaseModel], _Reply], scope: Scope, receive: Receive, send: Send
    ) -> Receive | None:
        """Reads the body and answers it; None when answered, else a `receive` that replays
        what was read, for the FastAPI route to answer."""
        model, reply = route
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        if messages[-1]["type"] == "http.request":
            try:
                body = model.model_validate_json(b"".join(m.get("body", b"") for m in messages))
            except ValidationError:
                body = None
            if body is not None:
                try:
                    response = await reply(self.server, body)
                except ModelsError as exc:
                    response = _error(exc.status, exc.error_type, exc.message, exc.headers)
                await response(scope, receive, send)
                return None
        replay = iter(messages)

        async def replaying() -> Message:
            return next(replay, None) or await receive()

        return replaying


def _sends_json(scope: Scope) -> bool:
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            return bool(value.split(b";", 1)[0].strip().lower() == b"application/json")
    return False


def _authorized(header: str | None, key: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())
