"""`/v1/chat`, threads and runs, through the real app, graph, embedded store and SQLite."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agent.services import Services
from server import schemas
from server.app import create_app
from tests.server.conftest import ANSWER, QUESTION_HOT, LoopingChatModel, looping, sse_events

QUESTION = "Which planet has the hottest surface?"
EVENT_MODELS = {m.model_fields["type"].default: m for m in schemas.STREAM_EVENTS}


def chat_stream(client: TestClient, **body: Any) -> list[dict[str, Any]]:
    with client.stream("POST", "/v1/chat", json={"message": QUESTION, **body}) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        return sse_events(resp.iter_lines())


def test_stream_carries_every_step_then_done(client: TestClient) -> None:
    events = chat_stream(client)
    types = [e["type"] for e in events]
    assert types[0] == "run"
    assert types[-1] == "done"
    assert types.count("done") == 1 and "error" not in types
    for expected in ("route", "retrieval", "grade", "token", "citation", "verdict"):
        assert expected in types, f"no {expected} event in {types}"
    # events come in the order the agent works
    assert types.index("route") < types.index("retrieval") < types.index("grade")
    assert types.index("grade") < types.index("token") < types.index("done")
    for event in events:
        EVENT_MODELS[event["type"]].model_validate(event)

    done = events[-1]
    tokens = "".join(e["text"] for e in events if e["type"] == "token")
    assert tokens == done["answer"] == ANSWER
    assert done["run_id"] == events[0]["run_id"] and done["thread_id"] == events[0]["thread_id"]
    cited = [e for e in events if e["type"] == "citation"]
    assert [c["id"] for c in cited] == [c["id"] for c in done["citations"]]
    assert cited[0]["n"] == 1 and "Venus" in cited[0]["text"]
    retrieved = {c["id"] for e in events if e["type"] == "retrieval" for c in e["chunks"]}
    assert cited[0]["id"] in retrieved
    assert done["usage"]["llm_calls"] == 1
    assert done["timings"]["first_token_ms"] is not None
    assert done["timings"]["total_ms"] >= done["timings"]["first_token_ms"]


def test_non_streaming_reply_is_the_done_payload(client: TestClient) -> None:
    resp = client.post("/v1/chat", json={"message": QUESTION, "stream": False})
    assert resp.status_code == 200
    done = resp.json()
    assert done["type"] == "done" and done["answer"] == ANSWER
    assert done["citations"][0]["title"] == "The Solar System"
    schemas.DoneEvent.model_validate(done)


def test_follow_up_in_a_thread_keeps_history_and_hides_the_planner(
    make_services: Callable[..., Services],
) -> None:
    planner = looping("PLANNER-ONLY: What is the surface temperature of Venus?")
    generator = looping(ANSWER)
    services = make_services(supports_tools=False, planner=planner, generator=generator)
    with TestClient(create_app(services.settings, services)) as client:
        first = chat_stream(client)
        thread = first[-1]["thread_id"]
        second = chat_stream(client, message="And how hot is it?", thread_id=thread)
        assert planner.calls == 1, "the follow-up was not contextualised by the planner"
        tokens = "".join(e["text"] for e in second if e["type"] == "token")
        assert "PLANNER-ONLY" not in tokens and tokens == second[-1]["answer"]

        history = client.get(f"/v1/threads/{thread}").json()
        assert [m["role"] for m in history["messages"]] == [
            "user",
            "assistant",
            "user",
            "assistant",
        ]
        assert history["messages"][2]["content"] == "And how hot is it?"
        assert history["messages"][3]["citations"][0]["n"] == 1
        assert history["title"] == QUESTION


def test_thread_lifecycle(client: TestClient) -> None:
    created = client.post("/v1/threads", json={"title": "Planets"})
    assert created.status_code == 201
    thread = created.json()["thread_id"]
    listed = client.get("/v1/threads").json()["threads"]
    assert [t["thread_id"] for t in listed] == [thread]
    assert client.get(f"/v1/threads/{thread}").json()["messages"] == []

    done = client.post("/v1/chat", json={"message": QUESTION, "thread_id": thread, "stream": False})
    assert done.json()["thread_id"] == thread
    assert len(client.get(f"/v1/threads/{thread}").json()["messages"]) == 2
    assert client.get("/v1/threads").json()["threads"][0]["title"] == "Planets"

    assert client.delete(f"/v1/threads/{thread}").status_code == 204
    assert client.get(f"/v1/threads/{thread}").status_code == 404
    assert client.get("/v1/threads").json()["threads"] == []
    gone = client.post("/v1/chat", json={"message": QUESTION, "thread_id": thread})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "thread_not_found"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ('{"message": ', 400, "invalid_json"),
        ("{}", 422, "invalid_request"),
        ('{"message": "   \\n "}', 422, "invalid_request"),
        ('{"message": 5}', 422, "invalid_request"),
        ('{"message": "hi", "effort": "max"}', 422, "invalid_request"),
        ('{"message": "hi", "surprise": 1}', 422, "invalid_request"),
        ('{"message": "hi", "collections": ["nope"]}', 404, "collection_not_found"),
        ('{"message": "hi", "thread_id": "nope"}', 404, "thread_not_found"),
        ('{"message": "' + "x" * 9000 + '"}', 413, "message_too_long"),
        ('{"message": "' + "x" * 1_100_000 + '"}', 413, "request_too_large"),
        ('{"message": "hi \\ud800 there"}', 422, "invalid_request"),
        ('{"message": "hi", "thread_id": "\\udfff"}', 422, "invalid_request"),
        ('{"message": "hi", "collections": []}', 422, "invalid_request"),
    ],
)
def test_bad_requests_get_a_clear_json_error(
    client: TestClient, body: str, status: int, code: str
) -> None:
    resp = client.post("/v1/chat", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["message"]


def test_a_chunked_body_over_the_limit_is_413_not_a_parse_error(client: TestClient) -> None:
    """No Content-Length: the limit is found while the body streams in."""
    body = ('{"message": "' + "x" * 1_100_000 + '"}').encode()
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    resp = client.post("/v1/chat", content=chunks, headers={"content-type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["code"] == "request_too_large"


def test_a_valid_surrogate_pair_is_a_character_not_an_error(client: TestClient) -> None:
    body = '{"message": "Which planet is hottest? \\ud83d\\ude80", "stream": false}'
    resp = client.post("/v1/chat", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        ([{"role": "user", "content": "a\udc00b"}], "invalid_request"),
        (
            [{"role": "system", "content": "x" * 9000}, {"role": "user", "content": "hi"}],
            "message_too_long",
        ),
        (
            [{"role": "user", "content": "earlier"}] * 41 + [{"role": "user", "content": "hi"}],
            "too_many_messages",
        ),
        ([{"role": "user", "content": "hi"}], None),
    ],
)
def test_openai_messages_of_every_role_are_checked(
    client: TestClient, messages: list[dict[str, str]], code: str | None
) -> None:
    body = {"model": "agentrag", "messages": messages, "collections": ["astronomy"]}
    # ensure_ascii: a lone surrogate travels as the escape "\udc00", as JSON allows
    content = json.dumps(body).encode()
    resp = client.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    if code is None:
        assert resp.status_code == 200, resp.text
        return
    assert resp.status_code in (413, 422), resp.text
    assert resp.json()["error"]["code"] == code


def test_a_turn_whose_model_failed_ends_with_an_error_after_the_quoted_evidence(
    make_services: Any,
) -> None:
    services = make_services(supports_tools=False)  # the LLM endpoint, 127.0.0.1:9, is down
    with TestClient(create_app(services.settings, services)) as down:
        body = {"message": QUESTION_HOT, "effort": "low"}
        streamed = down.post("/v1/chat", json=body)
        events = sse_events(streamed.iter_lines())
        assert events[-1]["type"] == "error" and events[-1]["code"] == "llm_unavailable"
        assert "not the model's answer" in events[-1]["message"]
        assert "done" not in {e["type"] for e in events}
        assert any(e["type"] == "token" for e in events)  # the evidence, quoted and cited
        assert any(e["type"] == "citation" for e in events)
        whole = down.post("/v1/chat", json={**body, "stream": False})
        assert whole.status_code == 503
        assert whole.json()["error"]["code"] == "llm_unavailable"


def test_oversized_headers_are_431(client: TestClient) -> None:
    resp = client.post("/v1/chat", json={"message": "hi"}, headers={"X-Padding": "x" * 40_000})
    assert resp.status_code == 431
    assert resp.json()["error"]["code"] == "headers_too_large"


def test_whitespace_message_names_the_problem(client: TestClient) -> None:
    resp = client.post("/v1/chat", json={"message": "  "})
    assert "message is empty" in resp.json()["error"]["message"]


def test_unknown_ids_are_404(client: TestClient) -> None:
    for method, path in [
        ("post", "/v1/runs/nope/cancel"),
        ("get", "/v1/threads/nope"),
        ("delete", "/v1/threads/nope"),
        ("get", "/v1/no-such-endpoint"),
    ]:
        resp = getattr(client, method)(path)
        assert resp.status_code == 404, path
        assert resp.json()["error"]["code"]


def test_exception_inside_the_graph_ends_the_stream_with_an_error(
    client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services.catalog, "asearches", broken)
    events = chat_stream(client)
    assert events[0]["type"] == "run"
    assert events[-1]["type"] == "error"
    assert events[-1]["code"] == "internal_error" and "disk on fire" in events[-1]["message"]
    assert not [e for e in events if e["type"] == "done"]
    # the server keeps serving
    monkeypatch.undo()
    assert chat_stream(client)[-1]["type"] == "done"
    resp = client.post("/v1/chat", json={"message": QUESTION, "stream": False})
    assert resp.status_code == 200


def test_metrics_count_turns_calls_and_errors(client: TestClient) -> None:
    chat_stream(client)
    client.post("/v1/chat", json={"message": QUESTION, "stream": False})
    text = client.get("/metrics").text
    assert 'agentrag_turns_total{outcome="ok"} 2.0' in text
    assert "agentrag_llm_calls_total 2.0" in text
    assert 'agentrag_turn_seconds_count{effort="medium"} 2.0' in text
    assert 'agentrag_time_to_first_token_seconds_count{effort="medium"} 2.0' in text
    assert "agentrag_first_event_seconds_count 1.0" in text  # the streamed turn only
    assert 'agentrag_llm_tokens_total{direction="output"}' in text


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    deadline = time.monotonic() + 60
    while "loading" in (ready := client.get("/readyz")).json()["checks"].values():
        assert time.monotonic() < deadline, "warm-up never finished"
        time.sleep(0.1)
    # the settings point the LLM at a closed port: not ready, and it says which check failed
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["store"] == "ok" and checks["threads"] == "ok"
    assert checks["llm"].startswith("error")


def test_openapi_documents_the_stream_events(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    names = set(spec["components"]["schemas"])
    assert {m.__name__ for m in schemas.STREAM_EVENTS} <= names
    chat = spec["paths"]["/v1/chat"]["post"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert "`done`" in chat["description"]


def test_low_effort_answers_too(client: TestClient, chat_model: LoopingChatModel) -> None:
    events = chat_stream(client, effort="low", collections=["astronomy"])
    route = next(e for e in events if e["type"] == "route")
    assert route["collections"] == ["astronomy"]
    assert events[-1]["answer"] == ANSWER


def test_judge_output_never_reaches_the_token_stream(
    make_services: Callable[..., Services],
) -> None:
    judge = looping("yes JUDGE-ONLY")
    generator = looping(ANSWER)
    services = make_services(
        supports_tools=False,
        generator=generator,
        judge=judge,
        planner=looping("PLANNER-ONLY what is the hottest planet"),
    )
    with TestClient(create_app(services.settings, services)) as client:
        events = chat_stream(client, effort="high")
    assert judge.calls >= 1, "the judge was not asked at effort high"
    done = events[-1]
    assert done["type"] == "done" and done["verdict"]["method"] == "llm"
    tokens = "".join(e["text"] for e in events if e["type"] == "token")
    assert tokens == done["answer"] == ANSWER
    assert "JUDGE-ONLY" not in tokens and "PLANNER-ONLY" not in tokens


def test_a_finished_run_answers_a_late_cancel_only_to_its_tenant(
    keyed_client: TestClient,
) -> None:
    owner = {"Authorization": "Bearer ar-public-key"}
    reply = keyed_client.post(
        "/v1/chat", json={"message": QUESTION, "stream": False}, headers=owner
    )
    run_id = reply.json()["run_id"]
    late = keyed_client.post(f"/v1/runs/{run_id}/cancel", headers=owner)
    assert late.status_code == 200 and late.json() == {"run_id": run_id, "cancelled": False}
    other = keyed_client.post(
        f"/v1/runs/{run_id}/cancel", headers={"Authorization": "Bearer ar-alpha-key"}
    )
    assert other.status_code == 404


def test_metrics_count_the_event_loop_tasks(client: TestClient) -> None:
    chat_stream(client)
    lines = client.get("/metrics").text.splitlines()
    tasks = [
        float(line.split()[1]) for line in lines if line.startswith("agentrag_event_loop_tasks ")
    ]
    assert tasks and tasks[0] >= 1
