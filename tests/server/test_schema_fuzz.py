"""Every endpoint of the chat API under generated requests (schemathesis over its own OpenAPI
schema): valid and invalid bodies, parameters and headers, with a key and without. No request
may get a 5xx, and every answer must be one the schema documents or the one error shape.

Bounded: `EXAMPLES` per operation (a chat turn runs the scripted model, so each costs a turn).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from agent.services import Services
from agent.settings import ApiKeySettings
from server.app import create_app
from server.auth import hash_key
from tests.server.conftest import looping

EXAMPLES = 12
KEY = "ar-fuzz-key"
OPEN = ("/healthz", "/readyz", "/metrics", "/")
"""Paths that need no key."""


@pytest.fixture
def app(make_services: Callable[..., Services]) -> Iterator[Any]:
    services = make_services(supports_tools=False, default=looping())
    config = services.settings.model_copy(
        update={"api_keys": [ApiKeySettings(sha256=hash_key(KEY), tenant="fuzz")]}
    )
    app = create_app(config, services)
    with TestClient(app):  # runs the app's lifespan: thread store, graph, runs
        yield app


def test_no_request_gets_a_server_error(app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            _check(case)

        check()


def _check(case: Any) -> None:
    authorized = case.call(headers={"Authorization": f"Bearer {KEY}"})
    where = f"{case.method} {case.formatted_path}"
    documented = case.path == "/readyz" and authorized.status_code == 503  # the LLM is down
    assert authorized.status_code < 500 or documented, (where, authorized.text[:300])
    kind = str(authorized.headers.get("content-type") or "")  # a list of values here
    if authorized.status_code >= 400 and "application/json" in kind and not documented:
        error = authorized.json().get("error")
        assert isinstance(error, dict) and error.get("code") and error.get("message"), (
            where,
            authorized.text[:300],
        )
    anonymous = case.call()
    assert anonymous.status_code < 500 or case.path == "/readyz", (where, anonymous.text[:300])
    if case.path not in OPEN:
        assert anonymous.status_code == 401, (where, anonymous.status_code)
