"""What routes receive besides the request body: the app's running state and the caller.

The state exists only while the lifespan runs (it opens the thread store and builds the graph);
a request that arrives before it is answered 503, not with a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from agent.services import Services
from agent.settings import Settings
from server.auth import AuthError, KeyRing, Principal
from server.errors import ApiError
from server.metrics import Metrics
from server.persistence import Persistence
from server.runs import RunManager


@dataclass
class AppState:
    settings: Settings
    services: Services
    persistence: Persistence
    runs: RunManager
    keys: KeyRing
    metrics: Metrics
    warmup: dict[str, str]
    """Each model's warm-up status: `loading`, `ok` or `error: ...` (for `/readyz`)."""


def starting_app_state(request: Request) -> AppState | None:
    """The state, or None while the server starts (for probes that report that themselves)."""
    state: AppState | None = getattr(request.app.state, "agentrag", None)
    return state


def app_state(state: Annotated[AppState | None, Depends(starting_app_state)]) -> AppState:
    if state is None:
        raise ApiError(503, "starting", "The server is starting; try again in a moment.")
    return state


def principal(request: Request, state: Annotated[AppState, Depends(app_state)]) -> Principal:
    try:
        return state.keys.authenticate(request.headers.get("authorization"))
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


MaybeState = Annotated[AppState | None, Depends(starting_app_state)]
State = Annotated[AppState, Depends(app_state)]
Caller = Annotated[Principal, Depends(principal)]
