"""The LLM factory: role endpoints, the embedded SmolLM2 server, and errors from a dead endpoint."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from pydantic import BaseModel, SecretStr

from agent import llm
from agent.llm import (
    EmbeddedLLMServer,
    LLMError,
    chat_endpoint,
    get_embedded_server,
    llm_endpoint_error,
    make_chat_model,
    supports_tools,
)
from agent.resilience import ResilientAsyncTransport, ResilientTransport
from agent.settings import Settings, load_settings

DEAD_URL = "http://127.0.0.1:9/v1"
"""The discard port: nothing listens there, so connections are refused at once."""

llama_cpp_missing = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (make setup installs it)",
)


# -- which endpoint serves which role ------------------------------------------------------


def test_planner_and_judge_fall_back_to_the_generator_endpoint() -> None:
    settings = load_settings(llm_base_url="http://gen:8000/v1", llm_model="big")

    for role in ("generator", "planner", "judge"):
        model = make_chat_model(settings, role)
        assert (model.openai_api_base, model.model_name) == ("http://gen:8000/v1", "big")


def test_role_settings_override_model_and_endpoint_separately() -> None:
    settings = load_settings(
        llm_base_url="http://gen:8000/v1",
        llm_model="big",
        llm_api_key="sk-test",
        planner_model="small",
        judge_base_url="http://judge:9000/v1",
        judge_model="strict",
    )

    planner = make_chat_model(settings, "planner")
    judge = make_chat_model(settings, "judge")
    explicit = make_chat_model(settings, "planner", model="chosen")

    assert (planner.openai_api_base, planner.model_name) == ("http://gen:8000/v1", "small")
    assert (judge.openai_api_base, judge.model_name) == ("http://judge:9000/v1", "strict")
    assert explicit.model_name == "chosen"
    assert planner.openai_api_key == SecretStr("sk-test")


def test_a_role_without_any_endpoint_is_left_to_the_embedded_server() -> None:
    settings = load_settings(planner_base_url="http://planner:8000/v1", llm_api_key="sk-test")

    assert chat_endpoint(settings, "generator").base_url is None
    assert chat_endpoint(settings, "generator").api_key is None
    assert chat_endpoint(settings, "judge").base_url is None
    assert chat_endpoint(settings, "planner").base_url == "http://planner:8000/v1"
    assert chat_endpoint(settings, "planner").api_key == SecretStr("sk-test")


def test_chat_model_reports_usage_and_fails_fast() -> None:
    settings = load_settings(llm_base_url="http://gen:8000/v1", llm_timeout_s=7)

    model = make_chat_model(settings, max_tokens=50, temperature=0.3, streaming=False)

    assert model.stream_usage is True
    # retries and the circuit breaker are the transport's, one policy for every dependency
    assert model.max_retries == 0
    for client in (model.http_client, model.http_async_client):
        transport = client._transport  # type: ignore[union-attr]
        assert isinstance(transport, ResilientTransport | ResilientAsyncTransport)
        assert transport.policy.retries == settings.dependency_retries
        assert transport.circuit.endpoint == "http://gen:8000"
    assert model.request_timeout == 7
    assert (model.max_tokens, model.temperature, model.streaming) == (50, 0.3, False)
    assert model.openai_api_key == SecretStr("not-needed")


def test_tool_support_is_assumed_only_for_a_configured_endpoint() -> None:
    assert supports_tools(load_settings()) is False
    assert supports_tools(load_settings(llm_base_url="http://gen:8000/v1")) is True
    assert supports_tools(load_settings(llm_supports_tools=True)) is True
    assert supports_tools(
        load_settings(llm_base_url="http://gen/v1", llm_supports_tools=False)
    ) is (False)


# -- an endpoint that is down or refuses ---------------------------------------------------


def test_unreachable_endpoint_becomes_an_error_naming_it() -> None:
    model = make_chat_model(load_settings(llm_base_url=DEAD_URL, llm_timeout_s=5))

    with pytest.raises(openai.APIConnectionError) as caught:
        model.invoke("Say hello")
    error = llm_endpoint_error(caught.value)

    assert isinstance(error, LLMError)
    assert DEAD_URL in str(error)
    assert error.url is not None and error.url.startswith(DEAD_URL)
    assert "AGENTRAG_LLM_BASE_URL" in str(error)


async def test_unreachable_endpoint_is_explained_when_wrapped_in_another_error() -> None:
    model = make_chat_model(load_settings(llm_base_url=DEAD_URL, llm_timeout_s=5))

    with pytest.raises(RuntimeError) as caught:
        try:
            await model.ainvoke("Say hello")
        except openai.APIConnectionError as exc:
            raise RuntimeError("node failed") from exc

    error = llm_endpoint_error(caught.value)
    assert error is not None and DEAD_URL in str(error)


def test_errors_that_are_not_from_the_endpoint_are_left_alone() -> None:
    assert llm_endpoint_error(ValueError("bad input")) is None


class _Unauthorized(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.dumps({"error": {"message": "bad key", "type": "invalid_request_error"}})
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def refusing_endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_rejected_api_key_is_explained(refusing_endpoint: str) -> None:
    model = make_chat_model(load_settings(llm_base_url=refusing_endpoint, llm_api_key="sk-bad"))

    with pytest.raises(openai.AuthenticationError) as caught:
        model.invoke("Say hello")
    error = llm_endpoint_error(caught.value)

    assert error is not None
    assert refusing_endpoint in str(error)
    assert "401" in str(error) and "AGENTRAG_LLM_API_KEY" in str(error)


def test_missing_llama_cpp_is_explained(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llm, "SERVER_MODULES", ("llama_cpp_not_installed_here",))

    with pytest.raises(LLMError, match="make setup"):
        EmbeddedLLMServer(settings).start()


# -- the embedded SmolLM2 server, for real -------------------------------------------------


class Capital(BaseModel):
    city: str
    country: str


@pytest.fixture(scope="module")
def embedded_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Module-scoped, so it cannot rely on the per-test environment isolation of conftest."""
    data_dir = tmp_path_factory.mktemp("embedded-llm")
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith("AGENTRAG_") and key != "AGENTRAG_SHARED_DATA":
                patch.delenv(key)
        patch.setenv("AGENTRAG_CONFIG", str(data_dir / "no-agentrag.toml"))
        patch.chdir(data_dir)
        yield load_settings(data_dir=data_dir, embedded_llm_ctx=2048, llm_timeout_s=60)


@pytest.fixture(scope="module")
def embedded(embedded_settings: Settings) -> Iterator[EmbeddedLLMServer]:
    """The shared server, started once for the module, the way make_chat_model starts it."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (make setup installs it)")
    started = time.monotonic()
    server = get_embedded_server(embedded_settings)
    print(f"\nembedded server ready in {time.monotonic() - started:.1f} s at {server.base_url}")
    yield server
    server.stop()


@pytest.mark.integration
def test_embedded_model_answers_with_token_usage(
    embedded: EmbeddedLLMServer, embedded_settings: Settings
) -> None:
    model = make_chat_model(embedded_settings, max_tokens=24, streaming=False)

    started = time.monotonic()
    reply = model.invoke("Say hello")
    elapsed = time.monotonic() - started

    assert model.openai_api_base == embedded.base_url
    assert reply.text.strip()
    usage = reply.usage_metadata
    assert usage is not None
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["output_tokens"] <= 24
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    print(f"\n{usage['output_tokens']} tokens in {elapsed:.2f} s: {reply.text!r}")


@pytest.mark.integration
def test_embedded_model_streams_token_by_token(
    embedded: EmbeddedLLMServer, embedded_settings: Settings
) -> None:
    """llama-cpp-python's server sends no usage in streams (it ignores `stream_options`), so
    callers count streamed replies themselves; the answer itself must arrive in pieces."""
    model = make_chat_model(embedded_settings, max_tokens=48)

    started = time.monotonic()
    chunks = list(model.stream("Write three sentences about the Moon."))
    elapsed = time.monotonic() - started
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk

    assert len(chunks) > 3
    assert isinstance(merged, AIMessageChunk) and merged.text.strip()
    assert len(chunks) <= 48 + 3, "max_tokens must reach llama-cpp-python as max_tokens"
    print(f"\nstreamed {len(chunks)} chunks in {elapsed:.2f} s, usage {merged.usage_metadata}")


@pytest.mark.integration
async def test_embedded_model_streams_asynchronously(
    embedded: EmbeddedLLMServer, embedded_settings: Settings
) -> None:
    model = make_chat_model(embedded_settings, max_tokens=16)

    chunks = [chunk async for chunk in model.astream("Name a colour.")]

    assert len(chunks) > 3
    assert "".join(chunk.text for chunk in chunks).strip()


@pytest.mark.integration
def test_every_role_shares_the_one_embedded_server(
    embedded: EmbeddedLLMServer, embedded_settings: Settings
) -> None:
    bases = {make_chat_model(embedded_settings, role).openai_api_base for role in llm.ROLES}

    assert bases == {embedded.base_url}
    assert get_embedded_server(embedded_settings) is embedded


@pytest.mark.integration
def test_structured_output_is_a_forced_tool_call_answered_in_time(
    embedded: EmbeddedLLMServer, embedded_settings: Settings
) -> None:
    """SmolLM2-135M is too small to trust with a schema: llama-cpp-python forces the tool call,
    but the arguments are sometimes broken JSON (then `parsed` is None). The call must still be
    taken (no HTTP error, no timeout: the client gives up after `llm_timeout_s`), so the agent
    can fall back on its heuristics."""
    model = make_chat_model(embedded_settings, max_tokens=96, streaming=False)
    structured = model.with_structured_output(Capital, method="function_calling", include_raw=True)

    started = time.monotonic()
    outcome = structured.invoke("What is the capital of France?")
    elapsed = time.monotonic() - started

    raw = outcome["raw"]
    assert isinstance(raw, AIMessage)
    called = [call["name"] for call in [*raw.tool_calls, *raw.invalid_tool_calls]]
    assert called == ["Capital"]
    assert outcome["parsed"] is None or isinstance(outcome["parsed"], Capital)
    print(f"\nstructured output in {elapsed:.2f} s: {outcome['parsed']!r}")


@pytest.mark.integration
def test_crashed_embedded_server_is_explained_and_restarted(
    embedded: EmbeddedLLMServer, embedded_settings: Settings
) -> None:
    model = make_chat_model(embedded_settings, max_tokens=8, streaming=False)
    assert embedded.pid is not None
    os.kill(embedded.pid, signal.SIGKILL)
    while embedded.running:
        time.sleep(0.05)

    with pytest.raises(openai.APIConnectionError) as caught:
        model.invoke("Say hello")
    error = llm_endpoint_error(caught.value)
    restarted = make_chat_model(embedded_settings, max_tokens=8, streaming=False)

    assert error is not None and str(embedded.log_path) in str(error)
    assert restarted.invoke("Say hello").text.strip()


@pytest.mark.integration
@llama_cpp_missing
def test_stopped_server_leaves_no_process(settings: Settings) -> None:
    with EmbeddedLLMServer(settings) as server:
        pid = server.pid
        assert pid is not None and server.running

    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(LLMError, match="not running"):
        _ = server.base_url


@pytest.mark.integration
@llama_cpp_missing
def test_server_that_dies_at_start_is_explained_with_its_log(
    tmp_path: Path, settings: Settings
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a GGUF file")
    server = EmbeddedLLMServer(load_settings(data_dir=settings.data_dir, embedded_llm_path=broken))

    with pytest.raises(LLMError, match="exited with status") as caught:
        server.start()

    assert str(server.log_path) in str(caught.value)
    assert str(broken) in str(caught.value), "the log lines that explain the failure are quoted"
    assert not server.running
