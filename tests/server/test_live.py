"""The API under a real uvicorn on loopback: cancellation, disconnects, the OpenAI client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest

from agent.services import Services
from server.app import create_app
from tests.server.conftest import (
    ANSWER,
    KEYS,
    QUESTION_HOT,
    LiveServer,
    LoopingChatModel,
    looping,
    sse_events,
)

pytestmark = pytest.mark.integration


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def metrics_show(server: LiveServer, *lines: str) -> bool:
    text = httpx.get(server.url + "/metrics").text.splitlines()
    return all(line in text for line in lines)


@pytest.fixture
def held_model() -> Iterator[LoopingChatModel]:
    """A long answer that stops after three chunks until the test sets `resume`."""
    model = looping(" ".join(["word"] * 200) + " [1].", pause_after=3)
    yield model
    model.resume.set()


@pytest.fixture
def held_server(
    make_services: Callable[..., Services], held_model: LoopingChatModel
) -> Iterator[LiveServer]:
    services = make_services(supports_tools=False, default=held_model)
    with LiveServer(create_app(services.settings, services)) as server:
        yield server


def test_cancel_endpoint_stops_the_run(
    held_server: LiveServer, held_model: LoopingChatModel
) -> None:
    events = []
    with (
        httpx.Client(base_url=held_server.url, timeout=30) as client,
        client.stream("POST", "/v1/chat", json={"message": QUESTION_HOT}) as resp,
    ):
        name = None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                event = json.loads(line[5:])
                events.append(event)
                if name == "token" and len([e for e in events if e["type"] == "token"]) == 3:
                    run_id = events[0]["run_id"]
                    cancelled = client.post(f"/v1/runs/{run_id}/cancel").json()
                    assert cancelled == {"run_id": run_id, "cancelled": True}
    assert events[-1]["type"] == "error" and events[-1]["code"] == "cancelled"
    tokens = [e for e in events if e["type"] == "token"]
    assert len(tokens) < 100, "the answer kept streaming after the cancel"
    # The stream ended after the run's task: the graph, and every LLM call it could start, is
    # over. Letting the model go on now must change nothing.
    held_model.resume.set()
    assert metrics_show(
        held_server, 'agentrag_turns_total{outcome="cancelled"} 1.0', "agentrag_runs_in_flight 0.0"
    )
    assert held_model.calls == 1
    assert held_model.finished == 0, "the cancelled answer was written to its end"


def test_client_disconnect_stops_the_run(
    held_server: LiveServer, held_model: LoopingChatModel
) -> None:
    with (
        httpx.Client(base_url=held_server.url, timeout=30) as client,
        client.stream("POST", "/v1/chat", json={"message": QUESTION_HOT}) as resp,
    ):
        for line in resp.iter_lines():
            if line.startswith("event: token"):
                break  # leave: closes the connection mid-answer

    # counted once the run's task has ended: no LLM call of it can start after that
    wait_until(lambda: metrics_show(held_server, 'agentrag_turns_total{outcome="cancelled"} 1.0'))
    held_model.resume.set()
    assert held_model.calls == 1, "an LLM call started after the client left"
    assert held_model.finished == 0
    # the thread is free again: a new turn on it runs
    threads = httpx.get(held_server.url + "/v1/threads").json()["threads"]
    resp = httpx.post(
        held_server.url + "/v1/chat",
        json={"message": "hello there", "thread_id": threads[0]["thread_id"], "stream": False},
        timeout=60,
    )
    assert resp.status_code == 200


def test_busy_thread_is_409_to_its_tenant_and_unknown_to_others(
    make_services: Callable[..., Services], held_model: LoopingChatModel
) -> None:
    services = make_services(supports_tools=False, default=held_model)
    settings = services.settings.model_copy(update={"api_keys": list(KEYS.values())})
    owner = {"Authorization": "Bearer ar-public-key"}
    other = {"Authorization": "Bearer ar-alpha-key"}
    with (
        LiveServer(create_app(settings, services)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/v1/chat", json={"message": QUESTION_HOT}, headers=owner) as resp,
    ):
        lines = resp.iter_lines()  # held open: dropping the iterator closes the connection
        first = next(line for line in lines if line.startswith("data:"))
        thread = json.loads(first[5:])["thread_id"]
        next(line for line in lines if line.startswith("event: token"))  # held mid-answer
        more = {"message": "more", "thread_id": thread}
        busy = client.post("/v1/chat", json=more, headers=owner)
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "thread_busy"
        # another tenant cannot tell the thread exists, busy or not
        for reply in (
            client.post("/v1/chat", json=more, headers=other),
            client.delete(f"/v1/threads/{thread}", headers=other),
            client.get(f"/v1/threads/{thread}", headers=other),
        ):
            assert reply.status_code == 404, reply.text
            assert reply.json()["error"]["code"] == "thread_not_found"
        client.post(f"/v1/runs/{json.loads(first[5:])['run_id']}/cancel", headers=owner)


def test_openai_client_non_streaming(live: LiveServer) -> None:
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused")
    assert {m.id for m in client.models.list()} == {
        "agentrag",
        "agentrag-low",
        "agentrag-medium",
        "agentrag-high",
    }
    reply = client.chat.completions.create(
        model="agentrag", messages=[{"role": "user", "content": QUESTION_HOT}]
    )
    assert reply.choices[0].message.content == ANSWER
    assert reply.choices[0].finish_reason == "stop"
    extra = reply.model_extra or {}
    assert extra["citations"][0]["title"] == "The Solar System"
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_openai_client_streaming(live: LiveServer) -> None:
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused")
    stream = client.chat.completions.create(
        model="agentrag-low",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": QUESTION_HOT},
        ],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ANSWER
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finals) == 1
    assert (finals[0].model_extra or {})["citations"][0]["n"] == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_openai_conversation_history_is_used(live: LiveServer) -> None:
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="agentrag",
        messages=[
            {"role": "user", "content": QUESTION_HOT},
            {"role": "assistant", "content": ANSWER},
            {"role": "user", "content": "Why?"},
        ],
    )
    thread = (reply.model_extra or {})["thread_id"]
    history = httpx.get(f"{live.url}/v1/threads/{thread}").json()["messages"]
    assert [m["content"] for m in history[:3]] == [QUESTION_HOT, ANSWER, "Why?"]


def test_openai_errors(live: LiveServer) -> None:
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(
            model="agentrag", messages=[{"role": "assistant", "content": "hi"}]
        )


def test_turns_over_the_limit_wait_in_line(
    make_services: Callable[..., Services], held_model: LoopingChatModel
) -> None:
    """With one turn at a time, a second caller gets its `run` event at once and its answer
    only after the first turn is done."""
    services = make_services(supports_tools=False, default=held_model)
    settings = services.settings.model_copy(
        update={"max_concurrent_turns": 1, "max_queued_turns": 1}
    )
    with (
        LiveServer(create_app(settings, services)) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
        client.stream("POST", "/v1/chat", json={"message": QUESTION_HOT}) as first,
    ):
        first_lines = first.iter_lines()
        next(line for line in first_lines if line.startswith("event: token"))
        # the first turn holds the only slot, stopped in the middle of its answer
        with client.stream("POST", "/v1/chat", json={"message": QUESTION_HOT}) as second:
            second_events = second.iter_lines()
            assert next(second_events) == "event: run"
            next(line for line in second_events if line == "event: queued")
            queued = json.loads(next(second_events)[5:])
            assert queued == {"type": "queued", "position": 1, "running": 1}
            wait_until(lambda: metrics_show(server, "agentrag_runs_waiting 1.0"))
            # the line is full: a third caller is told to come back later, not queued
            third = client.post("/v1/chat", json={"message": QUESTION_HOT, "stream": False})
            assert third.status_code == 429
            assert third.json()["error"]["code"] == "overloaded"
            assert int(third.headers["Retry-After"]) >= 1
            assert held_model.calls == 1
            held_model.resume.set()
            first_events = sse_events(first_lines)
            assert first_events[-1]["type"] == "done"
            done = sse_events(second_events)[-1]
        assert metrics_show(server, "agentrag_runs_waiting 0.0")
    assert done["type"] == "done"
    # every LLM call started after the one before it had finished: the turns never overlapped
    assert held_model.finished_before_start == list(range(held_model.calls))
    assert held_model.calls >= 2
