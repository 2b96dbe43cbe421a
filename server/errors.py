"""How the chat API answers when something goes wrong: always `{"error": {"code", "message"}}`,
whatever failed (a route's own check, request validation, an unknown path, a bug), so clients
parse one shape."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

ERROR_STATUS = {
    "cancelled": 409,
    "llm_unavailable": 503,
    "llm_failed": 502,
    "collection_not_found": 404,
    "dependency_unavailable": 503,
    "thread_store_unavailable": 503,
    "agent_error": 500,
    "internal_error": 500,
}
"""The HTTP status of a run's `error` event, for replies that are not streamed."""


class ApiError(Exception):
    """Every 4xx/5xx the API answers: `{"error": {"code", "message"}}`."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def run_error_response(
    event: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    """A run that ended with an `error` event, as the reply to a request that waited for it
    (with the turn's trace headers: a failed turn is the one most worth opening)."""
    code = event["code"]
    return error_response(ERROR_STATUS.get(code, 500), code, event["message"], headers)


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's validation errors in our shape, one line a person can act on."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_json", "The request body is not valid JSON.")
    parts = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return error_response(422, "invalid_request", "; ".join(parts) or "Invalid request.")


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    logging.getLogger("agentrag.server").exception("request failed")
    return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")


EXCEPTION_HANDLERS: dict[
    int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]
] = {
    ApiError: api_error,
    RequestValidationError: invalid_request,
    StarletteHTTPException: http_error,
    Exception: unexpected,
}
"""For `FastAPI(exception_handlers=...)`."""
