"""Dependencies that fail on purpose, served for real on loopback: the LLM (errors, garbage,
hung replies, stalled and truncated streams), the rerank and embedding services, a Qdrant
server behind a proxy that drops connections. Every turn either completes with a flag saying
what it skipped, or ends with a clear `error` event; none hangs, and `/readyz` and `/metrics`
show each dependency's circuit."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent.ports import free_port
from agent.services import Services
from agent.settings import Settings
from eval.scripted_llm import Fault, ScriptedLLM
from retrievers.embeddings import LocalEmbeddings, make_embeddings
from retrievers.qdrant_server import QdrantServerStore
from retrievers.rerank import make_reranker
from retrievers.stack import RetrievalStack
from server.app import create_app
from tests.server.conftest import QUESTION_HOT, sse_events

TURN = {"message": QUESTION_HOT, "effort": "low"}


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


def fault_settings(agent_settings: Settings, **update: Any) -> Settings:
    """Fast failure: one retry with no real wait, two failures open a circuit, a 2 s timeout."""
    return agent_settings.model_copy(
        update={
            "llm_model": "scripted",
            "llm_timeout_s": 2.0,
            "dependency_retries": 1,
            "circuit_failures": 2,
            **update,
        }
    )


def served(settings: Settings, minilm: LocalEmbeddings, **parts: Any) -> Services:
    stack = RetrievalStack(settings, embeddings=parts.pop("embeddings", minilm))
    return Services(
        settings,
        stack=stack,
        reranker=parts.pop("reranker", None),
        supports_tools=False,
    )


def turn(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    with client.stream("POST", "/v1/chat", json={**TURN, **body}) as resp:
        assert resp.status_code == 200, resp.read()
        return sse_events(resp.iter_lines())


def metric(client: TestClient, name: str, dependency: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and f'dependency="{dependency}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for {dependency}")


@pytest.fixture
def llm_client(
    llm: ScriptedLLM, agent_settings: Settings, minilm: LocalEmbeddings
) -> Iterator[TestClient]:
    settings = fault_settings(agent_settings, llm_base_url=llm.base_url)
    services = served(settings, minilm)
    with TestClient(create_app(settings, services)) as client:
        yield client
    services.close()


def test_a_503_is_retried_and_the_turn_completes(llm: ScriptedLLM, llm_client: TestClient) -> None:
    llm.script.fault, llm.script.fault_status, llm.script.faults = "error", 503, 1
    events = turn(llm_client)
    assert events[-1]["type"] == "done", events[-1]
    assert llm.stats.faults == 1 and llm.stats.completed == 1
    assert metric(llm_client, "agentrag_dependency_retries_total", "llm") == 1
    assert metric(llm_client, "agentrag_dependency_circuit_state", "llm") == 0


def test_a_failing_llm_opens_its_circuit_and_later_turns_fail_fast(
    llm: ScriptedLLM, llm_client: TestClient
) -> None:
    llm.script.fault, llm.script.fault_status = "error", 500
    for _ in range(2):
        events = turn(llm_client)
        assert events[-1]["type"] == "error" and events[-1]["code"] == "llm_unavailable"
        assert "HTTP 500" in events[-1]["message"]
    ready = llm_client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["circuits"]["llm"].startswith("open: 2 failed calls in a row")
    assert metric(llm_client, "agentrag_dependency_circuit_state", "llm") == 2

    sent = llm.stats.requests_total
    events = turn(llm_client)
    assert events[-1]["type"] == "error" and events[-1]["code"] == "llm_unavailable"
    assert "circuit open" in events[-1]["message"]
    assert llm.stats.requests_total == sent, "an open circuit sends nothing"
    assert metric(llm_client, "agentrag_dependency_rejected_total", "llm") >= 1
    assert any(e["type"] == "token" for e in events), "the evidence is still quoted"


@pytest.mark.parametrize("fault", ["hang", "stall", "garbage"])
def test_a_broken_llm_reply_ends_the_turn_with_an_error_not_a_hung_stream(
    fault: Fault, llm: ScriptedLLM, llm_client: TestClient
) -> None:
    llm.script.fault = fault
    events = turn(llm_client)
    assert events[-1]["type"] == "error", events[-1]
    assert events[-1]["code"] in ("llm_unavailable", "llm_failed")
    assert "done" not in {e["type"] for e in events}
    assert llm.stats.faults >= 1


def test_a_truncated_stream_is_not_presented_as_a_whole_answer(
    llm: ScriptedLLM, llm_client: TestClient
) -> None:
    llm.script.fault = "truncate"
    events = turn(llm_client)
    done = events[-1]
    assert done["type"] == "done", done
    cut = [f for f in done["flags"] if f["flag"] == "truncated"]
    assert cut and "stream cut" in cut[0]["reason"], done["flags"]
    assert {"type": "flag", "flag": "truncated", "reason": cut[0]["reason"]} in events

    llm.script.fault = None  # a whole reply is not flagged
    assert "truncated" not in {f["flag"] for f in turn(llm_client)[-1]["flags"]}


class _Reranks:
    """A Cohere-shaped rerank service that answers 503 until told otherwise."""

    def __init__(self) -> None:
        self.status = 503
        self.calls = 0

    def app(self) -> Starlette:
        async def rerank(request: Request) -> JSONResponse:
            self.calls += 1
            body = await request.json()
            if self.status != 200:
                return JSONResponse({"message": "overloaded"}, status_code=self.status)
            results = [
                {"index": i, "relevance_score": 1.0 - i / 100}
                for i in range(len(body["documents"]))
            ]
            return JSONResponse({"id": "r", "results": results[: body.get("top_n")]})

        return Starlette(routes=[Route("/v2/rerank", rerank, methods=["POST"])])


def test_a_rerank_service_down_degrades_the_turn_with_a_flag(
    llm: ScriptedLLM, agent_settings: Settings, minilm: LocalEmbeddings
) -> None:
    reranks = _Reranks()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(reranks.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            threading.Event().wait(0.01)
        settings = fault_settings(
            agent_settings,
            llm_base_url=llm.base_url,
            reranker_backend="cohere",
            reranker_url=f"http://127.0.0.1:{port}",
        )
        services = served(settings, minilm, reranker=make_reranker(settings, minilm))
        with TestClient(create_app(settings, services)) as client:
            events = turn(client)
            done = events[-1]
            assert done["type"] == "done", done
            skipped = [f for f in done["flags"] if f["flag"] == "rerank_skipped"]
            assert skipped and "127.0.0.1" not in skipped[0]["reason"], done["flags"]
            assert done["citations"], "the fused order still finds the evidence"
            assert reranks.calls >= 2, "retried before giving up"
            ready = client.get("/readyz").json()
            assert ready["ready"] is True, "a reranker down degrades turns, it does not stop them"
            reranks.status = 200
            reranks.calls = 0
            events = turn(client)
            assert events[-1]["type"] == "done"
            assert "rerank_skipped" not in {f["flag"] for f in events[-1]["flags"]}
        services.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_an_embedding_service_down_ends_the_turn_with_a_clear_error(
    llm: ScriptedLLM, agent_settings: Settings, minilm: LocalEmbeddings
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = fault_settings(
        agent_settings, llm_base_url=llm.base_url, embedding_backend="remote", embedding_url=dead
    )
    services = served(settings, minilm, embeddings=make_embeddings(settings))
    with TestClient(create_app(settings, services)) as client:
        events = turn(client)
        assert events[-1]["type"] == "error", events[-1]
        assert events[-1]["code"] == "dependency_unavailable"
        assert "embedding service is unavailable" in events[-1]["message"]
        assert "127.0.0.1" not in events[-1]["message"], "internal addresses stay in the log"
        assert llm.stats.requests_total == 0
        whole = client.post("/v1/chat", json={**TURN, "stream": False})
        assert whole.status_code == 503
        assert client.get("/readyz").json()["circuits"]["embeddings"].startswith("open")
    services.close()


class DroppingProxy:
    """A TCP listener that accepts each connection and closes it at once, as a proxy in front
    of a Qdrant server does when the server behind it is gone."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_a_qdrant_server_that_drops_connections_is_a_store_error_after_retries(
    agent_settings: Settings,
) -> None:
    from agent.errors import StoreError

    proxy = DroppingProxy()
    try:
        settings = fault_settings(agent_settings, vector_store="qdrant", qdrant_url=proxy.url)
        with pytest.raises(StoreError, match="Cannot reach the Qdrant server"):
            QdrantServerStore.from_settings(settings)
        from agent.resilience import dependency_states

        qdrant = dependency_states()["qdrant"]
        # one call, retried once (dependency_retries=1), then one failure for the breaker
        assert (qdrant.retries_total, qdrant.failures_total) == (1, 1)
        assert proxy.accepted >= 2
    finally:
        proxy.close()


def test_langfuse_down_costs_a_turn_nothing(
    llm: ScriptedLLM, agent_settings: Settings, minilm: LocalEmbeddings
) -> None:
    settings = fault_settings(
        agent_settings,
        llm_base_url=llm.base_url,
        langfuse_public_key="pk-lf-test",
        langfuse_secret_key=SecretStr("sk-lf-test"),
        langfuse_base_url=f"http://127.0.0.1:{free_port()}",  # nobody listens
        trace_flush_timeout_s=0.5,
    )
    services = served(settings, minilm)
    assert services.tracing.enabled
    with TestClient(create_app(settings, services)) as client:
        for _ in range(2):
            events = turn(client, trace=True)
            assert events[-1]["type"] == "done", events[-1]
            assert events[-1]["trace_id"]
        assert client.get("/readyz").json()["ready"] is True
    services.tracing.shutdown(timeout_s=0.5)  # bounded: it returns with nobody listening
    services.close()


@pytest.mark.parametrize("database", ["threads.sqlite", "thread-index.sqlite"])
def test_a_locked_thread_database_ends_the_turn_with_a_clear_error(
    database: str, llm: ScriptedLLM, agent_settings: Settings, minilm: LocalEmbeddings
) -> None:
    settings = fault_settings(
        agent_settings, llm_base_url=llm.base_url, thread_db_busy_timeout_s=0.2
    )
    services = served(settings, minilm)
    with TestClient(create_app(settings, services)) as client:
        assert turn(client)[-1]["type"] == "done"
        holder = sqlite3.connect(settings.data_dir / database, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process writing, and not letting go
        try:
            events = turn(client)
            assert events[-1]["type"] == "error", events[-1]
            assert events[-1]["code"] == "thread_store_unavailable"
            assert "database is locked" not in events[-1]["message"]
            whole = client.post("/v1/chat", json={**TURN, "stream": False})
            assert whole.status_code == 503
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert turn(client)[-1]["type"] == "done", "once the lock goes, turns are kept again"
    services.close()


def _immutable(root: Path, on: bool) -> bool:
    """Make every directory under `root` immutable (`chattr +i`: even root cannot create files
    there), or undo it; False where the file system or the user cannot."""
    flag = "+i" if on else "-i"
    dirs = [root, *(p for p in root.rglob("*") if p.is_dir())]
    done = subprocess.run(["chattr", flag, *map(str, dirs)], capture_output=True)
    return done.returncode == 0


def test_a_store_directory_that_became_unwritable_refuses_uploads_and_still_answers(
    llm: ScriptedLLM, agent_settings: Settings, minilm: LocalEmbeddings
) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed")
    settings = fault_settings(agent_settings, llm_base_url=llm.base_url)
    services = served(settings, minilm)
    store_root = settings.data_dir / "qdrant"
    assert store_root.is_dir()
    with TestClient(create_app(settings, services)) as client:
        assert turn(client)[-1]["type"] == "done"  # the collections are open
        if not _immutable(store_root, True):
            pytest.skip("this file system or user cannot make directories immutable")
        try:
            upload = client.post(
                "/v1/collections/fresh/documents",
                files=[("files", ("mars.md", b"# Mars\n\nMars is red.\n", "text/markdown"))],
            )
            assert upload.status_code == 503, upload.text
            assert upload.json()["error"]["code"] == "store_unavailable"
            assert str(store_root) not in upload.text
            last = turn(client)[-1]
            assert last["type"] == "done", last
        finally:
            _immutable(store_root, False)
    services.close()


def test_a_qdrant_server_that_starts_dropping_connections_fails_searches_as_store_errors(
    agent_settings: Settings,
) -> None:
    """Reached once, then gone: every later call is a `StoreError` (the turn's
    `dependency_unavailable`), and after `circuit_failures` the circuit stops trying."""
    from qdrant_client import QdrantClient

    from agent.errors import StoreError
    from agent.resilience import dependency_states, transports_for
    from retrievers.qdrant_server import _Guarded

    proxy = DroppingProxy()
    try:
        settings = fault_settings(agent_settings, vector_store="server", qdrant_url=proxy.url)
        client = QdrantClient(
            url=proxy.url,
            timeout=2,
            transport=transports_for(settings, "qdrant", proxy.url)[0],
            check_compatibility=False,
        )
        store = QdrantServerStore(_Guarded(client, proxy.url), is_local=False)  # type: ignore[arg-type]
        for _ in range(2):
            with pytest.raises(StoreError, match="failed"):
                store.query("docs", dense=[1.0, 0.0], limit=3)
        accepted = proxy.accepted
        with pytest.raises(StoreError):
            store.query("docs", dense=[1.0, 0.0], limit=3)
        assert proxy.accepted == accepted, "an open circuit does not call"
        assert dependency_states()["qdrant"].state == "open"
    finally:
        proxy.close()
