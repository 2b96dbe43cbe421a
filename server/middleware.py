"""What runs around every request: the body-size limit and, when configured, CORS."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.errors import ConfigError
from agent.settings import Settings, get_settings
from server.deps import AppState
from server.errors import error_response

DEFAULT_LIMITS = (
    Settings.model_fields["max_request_bytes"].default,
    Settings.model_fields["max_upload_bytes"].default,
)
RECEIVED_AT = "agentrag.received_at"
MAX_HEADER_BYTES = 32_768
"""All request headers together; browsers and HTTP clients send a few KB (a bearer key, a
cookie). The HTTP parser takes more before the app sees the request."""
"""ASGI scope key: when the request reached the server (for the first-event metric)."""


class BodyLimit:
    """Rejects bodies over the limit before the app reads them (413), also when a client sends
    no Content-Length. Uploads (multipart) have their own, larger limit.

    The limits are the running app's settings; before its lifespan has started, those given to
    `create_app`, else the defaults."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings | None = None,
        fixed: int | None = None,
        reply: Callable[[int], Response] | None = None,
        headers_reply: Callable[[int], Response] | None = None,
    ) -> None:
        """`fixed`: one limit for every body instead of the settings' (the model server);
        `reply`, `headers_reply`: the responses to a body over `limit` and to headers over
        `MAX_HEADER_BYTES`, in the app's error shape."""
        self.app = app
        self.settings = settings
        self.fixed = fixed
        self.reply = reply or _too_large
        self.headers_reply = headers_reply or _headers_too_large

    def limits(self, scope: Scope) -> tuple[int, int]:
        if self.fixed is not None:
            return self.fixed, self.fixed
        owner = scope.get("app")
        state: AppState | None = getattr(getattr(owner, "state", None), "agentrag", None)
        cfg = state.settings if state else self.settings
        if cfg is None:
            return DEFAULT_LIMITS
        return cfg.max_request_bytes, cfg.max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[RECEIVED_AT] = time.perf_counter()
        raw_headers = scope.get("headers") or []
        header_bytes = sum(len(k) + len(v) for k, v in raw_headers)
        if header_bytes > MAX_HEADER_BYTES:
            await self.headers_reply(header_bytes)(scope, receive, send)
            return
        headers = dict(raw_headers)
        json_limit, upload_limit = self.limits(scope)
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        limit = upload_limit if multipart else json_limit
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self.reply(limit)(scope, receive, send)
            return
        seen = 0
        started = False
        refused = False

        async def counting_receive() -> Message:
            # Over the limit: the 413 goes out here, and the app is told the client left, so
            # whatever it makes of that (a body-parsing 400) is never sent.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not started:
                    refused = True
                    await self.reply(limit)(scope, _no_body, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counting_receive, tracking_send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _headers_too_large(size: int) -> Response:
    return error_response(
        431,
        "headers_too_large",
        f"The request headers take {size} bytes; the limit is {MAX_HEADER_BYTES}.",
    )


def _too_large(limit: int) -> Response:
    return error_response(
        413, "request_too_large", f"The request body is larger than {limit} bytes."
    )


def add_cors(app: FastAPI, settings: Settings | None) -> None:
    """CORS for the configured origins. Middleware cannot be added once the app runs, so the
    origins are read when the app is built: from `settings`, else the process's settings."""
    origins = (settings.cors_origins if settings else None) or _env_cors()
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["*"],
        allow_headers=["*"],
    )


def _env_cors() -> list[str]:
    try:
        return get_settings().cors_origins
    except ConfigError:
        return []
