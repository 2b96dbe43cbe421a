"""Conversation threads in PostgreSQL: the same behaviour as SQLite, against a real server.

Each test gets its own empty database on one PostgreSQL server started for the session
(`tests/server/postgres.py`); the app, graph and embedded vector store are the real ones, the
chat model is scripted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from agent.errors import AgentragError
from agent.services import Services
from agent.settings import Settings
from server import persistence as persistence_module
from server.app import create_app
from server.persistence import open_persistence
from tests.server.conftest import ANSWER, KEYS, QUESTION_HOT, looping, sse_events
from tests.server.postgres import postgres_server, postgres_url  # noqa: F401

pytestmark = pytest.mark.integration


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def on_postgres(services: Services, url: str, **update: Any) -> Settings:
    return services.settings.model_copy(update={"postgres_url": url, **update})


@pytest.fixture
def pg_client(services: Services, postgres_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(on_postgres(services, postgres_url), services)) as client:
        yield client


def chat(client: TestClient, message: str = QUESTION_HOT, **body: Any) -> list[dict[str, Any]]:
    headers = body.pop("headers", None)
    with client.stream(
        "POST", "/v1/chat", json={"message": message, **body}, headers=headers
    ) as resp:
        assert resp.status_code == 200, resp.read()
        events = sse_events(resp.iter_lines())
    assert events[-1]["type"] == "done", events[-1]
    return events


def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def test_chat_creates_a_thread_and_a_follow_up_keeps_history(
    make_services: Callable[..., Services], postgres_url: str
) -> None:
    planner = looping("PLANNER-ONLY: What is the surface temperature of Venus?")
    services = make_services(supports_tools=False, planner=planner, generator=looping(ANSWER))
    with TestClient(create_app(on_postgres(services, postgres_url), services)) as client:
        first = chat(client)
        thread = first[-1]["thread_id"]
        assert [t["thread_id"] for t in client.get("/v1/threads").json()["threads"]] == [thread]

        second = chat(client, "And how hot is it?", thread_id=thread)
        assert second[-1]["thread_id"] == thread
        assert planner.calls == 1, "the follow-up did not see the thread's history"

        history = client.get(f"/v1/threads/{thread}").json()
    assert history["title"] == QUESTION_HOT
    assert [m["role"] for m in history["messages"]] == ["user", "assistant", "user", "assistant"]
    assert history["messages"][0]["content"] == QUESTION_HOT
    assert history["messages"][2]["content"] == "And how hot is it?"
    for reply, events in ((history["messages"][1], first), (history["messages"][3], second)):
        assert reply["content"] == ANSWER
        assert reply["citations"], "assistant messages keep their citations"
        assert [c["id"] for c in reply["citations"]] == [c["id"] for c in events[-1]["citations"]]
    # the state really is in PostgreSQL
    (count,) = rows(postgres_url, "SELECT count(*) FROM checkpoints WHERE thread_id = %s", thread)
    assert count[0] > 0


def test_thread_lifecycle(pg_client: TestClient, postgres_url: str) -> None:
    created = pg_client.post("/v1/threads", json={"title": "Planets"})
    assert created.status_code == 201
    thread = created.json()["thread_id"]
    other = pg_client.post("/v1/threads").json()["thread_id"]
    assert pg_client.get(f"/v1/threads/{thread}").json()["messages"] == []

    done = pg_client.post(
        "/v1/chat", json={"message": QUESTION_HOT, "thread_id": thread, "stream": False}
    ).json()
    assert done["thread_id"] == thread
    listed = pg_client.get("/v1/threads").json()["threads"]
    # most recently active first; a chat does not overwrite a title the caller chose
    assert [t["thread_id"] for t in listed] == [thread, other]
    assert listed[0]["title"] == "Planets" and listed[0]["updated_at"] > listed[0]["created_at"]
    assert [m["role"] for m in pg_client.get(f"/v1/threads/{thread}").json()["messages"]] == [
        "user",
        "assistant",
    ]
    assert [t["thread_id"] for t in pg_client.get("/v1/threads?limit=1").json()["threads"]] == [
        thread
    ]

    assert pg_client.delete(f"/v1/threads/{thread}").status_code == 204
    assert pg_client.get(f"/v1/threads/{thread}").status_code == 404
    assert pg_client.delete(f"/v1/threads/{thread}").status_code == 404
    assert [t["thread_id"] for t in pg_client.get("/v1/threads").json()["threads"]] == [other]
    gone = pg_client.post("/v1/chat", json={"message": QUESTION_HOT, "thread_id": thread})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "thread_not_found"
    # deleting a thread deletes its conversation, not only its index entry
    for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
        sql = f"SELECT count(*) FROM {table} WHERE thread_id = %s"
        assert rows(postgres_url, sql, thread) == [(0,)], table


def test_tenants_see_only_their_own_threads(services: Services, postgres_url: str) -> None:
    settings = on_postgres(services, postgres_url, api_keys=list(KEYS.values()))
    public, alpha = auth("ar-public-key"), auth("ar-alpha-key")
    with TestClient(create_app(settings, services)) as client:
        assert client.get("/v1/threads").status_code == 401
        public_thread = chat(client, headers=public)[-1]["thread_id"]
        alpha_thread = chat(client, headers=alpha)[-1]["thread_id"]

        def listed(headers: dict[str, str]) -> list[str]:
            threads = client.get("/v1/threads", headers=headers).json()["threads"]
            return [t["thread_id"] for t in threads]

        assert listed(public) == [public_thread]
        assert listed(alpha) == [alpha_thread]
        assert client.get(f"/v1/threads/{public_thread}", headers=alpha).status_code == 404
        assert client.delete(f"/v1/threads/{public_thread}", headers=alpha).status_code == 404
        follow_up = client.post(
            "/v1/chat", json={"message": "and Mars?", "thread_id": public_thread}, headers=alpha
        )
        assert follow_up.status_code == 404
        # nothing alpha tried changed public's thread
        history = client.get(f"/v1/threads/{public_thread}", headers=public).json()
        assert len(history["messages"]) == 2
        assert client.delete(f"/v1/threads/{alpha_thread}", headers=alpha).status_code == 204
        assert listed(alpha) == [] and listed(public) == [public_thread]


def test_threads_survive_a_restart(services: Services, postgres_url: str) -> None:
    settings = on_postgres(services, postgres_url)
    with TestClient(create_app(settings, services)) as client:
        thread = chat(client)[-1]["thread_id"]
        before = client.get(f"/v1/threads/{thread}").json()

    with TestClient(create_app(settings, services)) as client:
        assert client.get(f"/v1/threads/{thread}").json() == before
        assert [t["thread_id"] for t in client.get("/v1/threads").json()["threads"]] == [thread]
        chat(client, "And how hot is it?", thread_id=thread)
        after = client.get(f"/v1/threads/{thread}").json()
    assert [m["role"] for m in after["messages"]] == ["user", "assistant", "user", "assistant"]
    assert after["messages"][:2] == before["messages"]


def test_readiness_reports_the_thread_store(pg_client: TestClient) -> None:
    deadline = time.monotonic() + 60
    while "loading" in (ready := pg_client.get("/readyz")).json()["checks"].values():
        assert time.monotonic() < deadline, "warm-up never finished"
        time.sleep(0.1)
    checks = ready.json()["checks"]
    assert checks["threads"] == "ok" and checks["store"] == "ok"


def test_threads_work_after_the_database_drops_connections(
    pg_client: TestClient, postgres_url: str
) -> None:
    """A database restart or failover closes the pool's connections; the next request must
    not fail because it was handed a dead one."""
    thread = chat(pg_client)[-1]["thread_id"]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    assert pg_client.get("/readyz").json()["checks"]["threads"] == "ok"
    assert pg_client.get(f"/v1/threads/{thread}").status_code == 200
    chat(pg_client, "And how hot is it?", thread_id=thread)


# -- the index itself ------------------------------------------------------------------------------
async def test_postgres_thread_index(agent_settings: Settings, postgres_url: str) -> None:
    settings = agent_settings.model_copy(update={"postgres_url": postgres_url})
    async with open_persistence(settings) as store:
        assert store.backend == "postgres"
        index = store.threads
        first = await index.create("t-1", "alpha", "First question")
        assert first["thread_id"] == "t-1" and first["created_at"] == first["updated_at"]
        await index.create("t-2", "alpha")
        await index.create("t-3", "beta", "Someone else's")

        assert await index.get("t-1", "alpha") == first
        assert await index.get("t-1", "beta") is None, "a thread belongs to one tenant"
        assert await index.get("missing", "alpha") is None
        assert [r["thread_id"] for r in await index.list("alpha")] == ["t-2", "t-1"]
        assert [r["thread_id"] for r in await index.list("beta")] == ["t-3"]
        assert await index.list("nobody") == []

        await index.touch("t-1", "alpha", "Ignored: the thread has a title")
        await index.touch("t-2", "alpha", "Given on first message")
        await index.touch("t-3", "alpha", "Not alpha's thread")
        listed = await index.list("alpha")
        assert [(r["thread_id"], r["title"]) for r in listed] == [
            ("t-2", "Given on first message"),
            ("t-1", "First question"),
        ]
        assert listed[1]["updated_at"] > first["updated_at"]
        beta = await index.get("t-3", "beta")
        assert beta is not None and beta["title"] == "Someone else's"
        assert [r["thread_id"] for r in await index.list("alpha", limit=1)] == ["t-2"]

        with pytest.raises(psycopg.errors.UniqueViolation):
            await index.create("t-1", "beta")

        assert await index.delete("t-1", "beta") is False
        assert await index.delete("t-1", "alpha") is True
        assert await index.delete("t-1", "alpha") is False
        assert [r["thread_id"] for r in await index.list("alpha")] == ["t-2"]

    # reopening runs setup again on existing tables and keeps the rows
    async with open_persistence(settings) as store:
        assert [r["thread_id"] for r in await store.threads.list("alpha")] == ["t-2"]


async def test_instances_starting_together_set_up_the_database_once(
    agent_settings: Settings, postgres_url: str
) -> None:
    """Several server instances pointed at a new database start at the same moment."""
    settings = agent_settings.model_copy(update={"postgres_url": postgres_url})

    async def start() -> str:
        async with open_persistence(settings) as store:
            return store.backend

    assert await asyncio.gather(*(start() for _ in range(4))) == ["postgres"] * 4


async def test_unreachable_database_is_a_clear_error_at_start(
    agent_settings: Settings, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No time to wait for the database: one attempt, then the error (a wait of N seconds is
    # attempts for N seconds; counting them needs no clock).
    monkeypatch.setattr(persistence_module, "CONNECT_WAIT_S", 0.0)
    connect = psycopg.AsyncConnection.connect
    attempts: list[str] = []

    async def counted_connect(url: str, *args: Any, **kwargs: Any) -> Any:
        attempts.append(url)
        return await connect(url, *args, **kwargs)

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", counted_connect)
    wrong_db = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    settings = agent_settings.model_copy(update={"postgres_url": wrong_db})
    with pytest.raises(AgentragError) as caught:
        async with open_persistence(settings):
            pass
    assert attempts == [wrong_db], "retried although no wait was allowed"
    message = str(caught.value)
    assert "no_such_database" in message and "postgres_url" in message

    secret = postgres_url.replace("postgres@", "postgres:hunter2@").rsplit(":", 1)[0] + ":9/x"
    settings = agent_settings.model_copy(update={"postgres_url": secret})
    with pytest.raises(AgentragError) as caught:
        async with open_persistence(settings):
            pass
    assert "hunter2" not in str(caught.value), "the password must not reach logs"
