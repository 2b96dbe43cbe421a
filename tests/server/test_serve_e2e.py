"""`agentrag serve` as a user runs it: a real process, configured by environment, talking to an
OpenAI-compatible LLM over HTTP (a scripted one on loopback, so the answer is predictable)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent.ports import free_port
from agent.settings import load_settings
from eval.scripted_llm import ScriptedLLM
from retrievers.embeddings import LocalEmbeddings
from retrievers.stack import RetrievalStack
from server.auth import hash_key
from tests.conftest import REPO, SAMPLES
from tests.server.conftest import QUESTION_HOT, sse_events

pytestmark = pytest.mark.integration

AGENTRAG = [sys.executable, "-m", "cli"]
"""The `agentrag` command of this checkout, whichever entry point the environment installed."""
KEY = "ar-e2e-secret"


@pytest.fixture
def served(tmp_path: Path, minilm: LocalEmbeddings) -> Iterator[tuple[str, ScriptedLLM]]:
    data_dir = tmp_path / "data"
    stack = RetrievalStack(load_settings(data_dir=data_dir))
    stack.__dict__["embeddings"] = minilm
    try:
        stack.ingestor.ingest_paths([SAMPLES / "astronomy"], "astronomy", description="Astronomy")
    finally:
        stack.close()
    port = free_port()
    log_path = tmp_path / "serve.log"
    with ScriptedLLM() as llm:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "AGENTRAG_DATA_DIR": str(data_dir),
            "AGENTRAG_LLM_BASE_URL": llm.base_url,
            "AGENTRAG_LLM_MODEL": "scripted",
            "AGENTRAG_LLM_SUPPORTS_TOOLS": "false",
            "AGENTRAG_API_KEYS": json.dumps([{"sha256": hash_key(KEY), "tenant": "public"}]),
            "AGENTRAG_CORS_ORIGINS": '["http://chat.example"]',
        }
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*AGENTRAG, "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            last = ""
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    ready = httpx.get(url + "/readyz", timeout=2)
                    if ready.status_code == 200:
                        break
                    last = ready.text
                except httpx.HTTPError as exc:
                    last = repr(exc)
                assert time.monotonic() < deadline, f"not ready: {last}"
                time.sleep(0.2)
            yield url, llm
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)  # uvicorn re-raises the signal after a graceful shutdown
            assert "Application shutdown complete" in log_path.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        logged = [json.loads(line) for line in log_path.read_text().splitlines() if line[:1] == "{"]
        runs = [entry for entry in logged if entry.get("message") == "run finished"]
        assert runs and runs[0]["run_id"] and runs[0]["thread_id"], "no structured run log"


def test_agentrag_serve_end_to_end(served: tuple[str, ScriptedLLM]) -> None:
    url, llm = served
    ready = httpx.get(url + "/readyz").json()
    assert ready == {
        "ready": True,
        "checks": {"store": "ok", "threads": "ok", "embeddings": "ok", "llm": "ok"},
        "circuits": {"llm": "closed"},
    }
    assert httpx.post(url + "/v1/chat", json={"message": QUESTION_HOT}).status_code == 401

    headers = {"Authorization": f"Bearer {KEY}"}
    before = llm.stats.requests_total
    with httpx.stream(
        "POST", url + "/v1/chat", json={"message": QUESTION_HOT}, headers=headers, timeout=60
    ) as resp:
        events = sse_events(resp.iter_lines())
    done = events[-1]
    assert done["type"] == "done", events[-1]
    assert "".join(e["text"] for e in events if e["type"] == "token") == done["answer"]
    assert done["citations"] and done["citations"][0]["source"].endswith(".md")
    assert done["usage"]["llm_calls"] == llm.stats.requests_total - before >= 1

    preflight = httpx.options(
        url + "/v1/chat",
        headers={
            "Origin": "http://chat.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.headers["access-control-allow-origin"] == "http://chat.example"
    other = httpx.options(
        url + "/v1/chat",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers
    assert "agentrag_turns_total" in httpx.get(url + "/metrics", headers=headers).text
