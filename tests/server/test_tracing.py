"""Langfuse tracing through the chat API, with the real Langfuse SDK sending to a recorder on
loopback: one trace per turn, its shape, its attributes, its scores, feedback, secrets, and a
Langfuse that is down or hangs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field, SecretStr

from agent.services import Services
from agent.settings import Settings
from agent.tracing import TURN_NAME, package_version
from eval.langfuse_recorder import LangfuseRecorder, RecordedSpan
from prompts.loader import load_prompt
from server.app import create_app
from tests.conftest import traced_settings
from tests.server.conftest import (
    KEYS,
    QUESTION_HOT,
    LiveServer,
    LoopingChatModel,
    looping,
    sse_events,
)

pytestmark = pytest.mark.integration

LLM_KEY = "sk-llm-secret-0123456789abcdef"
NODES = [
    "contextualize_query",
    "route_query",
    "research",
    "collect_evidence",
    "generate_answer",
    "reflect_answer",
]
TURN_SCORES = {
    "grounded",
    "answers_question",
    "supported_sentences",
    "llm_calls",
    "evidence_chunks",
}


@pytest.fixture
def traced(
    make_services: Callable[..., Services], agent_settings: Settings, langfuse: LangfuseRecorder
) -> Iterator[Services]:
    settings = traced_settings(
        agent_settings, langfuse, llm_api_key=SecretStr(LLM_KEY), trace_flush_timeout_s=1.0
    )
    services = make_services(supports_tools=False, settings=settings, default=looping())
    yield services
    services.tracing.shutdown(timeout_s=1)


def chat(client: TestClient, **body: Any) -> tuple[httpx.Headers, list[dict[str, Any]]]:
    with client.stream("POST", "/v1/chat", json={"effort": "low", **body}) as response:
        assert response.status_code == 200, response.read()
        return response.headers, sse_events(response.iter_lines())


def names(spans: list[RecordedSpan]) -> list[str]:
    return [s.name for s in spans]


def child(recorder: LangfuseRecorder, span: RecordedSpan, name: str) -> RecordedSpan:
    (found,) = [s for s in recorder.children(span) if s.name == name]
    return found


def test_a_streamed_turn_is_one_trace_with_each_decision_under_it(
    traced: Services, langfuse: LangfuseRecorder
) -> None:
    with TestClient(create_app(traced.settings, traced)) as client:
        headers, events = chat(client, message=QUESTION_HOT, user="ada")
    assert traced.tracing.flush(timeout_s=10)
    done = events[-1]
    trace_id = headers["x-trace-id"]
    assert done["type"] == "done"
    assert done["trace_id"] == trace_id == done["run_id"]
    assert done["trace_url"] == headers["x-trace-url"] == f"{langfuse.base_url}/trace/{trace_id}"
    assert langfuse.trace_ids() == [trace_id]

    root = langfuse.root(trace_id)
    assert (root.name, root.observation_type) == (TURN_NAME, "agent")
    assert root.input == {"message": QUESTION_HOT}
    assert root.output["answer"] == done["answer"]
    assert root.output["verdict"]["grounded"] is True
    assert root.attributes["langfuse.trace.name"] == TURN_NAME
    assert "effort:low" in root.attributes["langfuse.trace.tags"]
    assert root.attributes["langfuse.version"] == package_version()
    assert root.resource["langfuse.release"] == package_version()
    assert root.metadata["run_id"] == done["run_id"]
    for span in langfuse.spans(trace_id):
        assert span.attributes["session.id"] == done["thread_id"], span.name
        assert span.attributes["user.id"] == "ada", span.name

    (graph,) = langfuse.children(root)
    assert graph.name == "agentrag"
    assert names(langfuse.children(graph)) == NODES

    research = child(langfuse, child(langfuse, graph, "research"), "research")
    assert names(langfuse.children(research)) == [
        "retrieve_chunks",
        "grade_evidence",
        "finish_research",
    ]
    (search,) = langfuse.children(child(langfuse, research, "retrieve_chunks"))
    assert (search.name, search.observation_type) == ("search astronomy", "retriever")
    assert search.input == QUESTION_HOT
    assert search.metadata["collection"] == "astronomy"
    (retrieval_event,) = [e for e in events if e["type"] == "retrieval"]
    found = {d["metadata"]["id"]: d for d in search.output}
    assert set(found) == {c["id"] for c in retrieval_event["chunks"]}
    for chunk in retrieval_event["chunks"]:
        meta = found[chunk["id"]]["metadata"]
        assert meta["title"] == chunk["title"]
        assert meta["relevance"] == pytest.approx(chunk["relevance"])
        assert found[chunk["id"]]["page_content"]
    graded = child(langfuse, research, "grade_evidence").output
    assert graded["update"]["grade"] in ("correct", "ambiguous", "incorrect")
    assert "dropped" in graded["update"]

    (generation,) = langfuse.children(child(langfuse, graph, "generate_answer"))
    assert generation.observation_type == "generation"
    assert generation.usage_details["input"] > 100  # the evidence, counted by the tokenizer
    assert generation.usage_details["output"] > 0
    assert generation.metadata["prompt_name"] == "generate"
    assert generation.metadata["prompt_version"] == load_prompt("generate").version == 2
    assert generation.metadata["usage_source"]
    assert "langfuse.observation.completion_start_time" in generation.attributes
    assert QUESTION_HOT in str(generation.input)
    assert done["answer"] in str(generation.output)

    verdict = child(langfuse, graph, "reflect_answer").output
    assert verdict["update"]["verdict"]["grounded"] is True

    assert langfuse.wait_for(lambda r: {s["name"] for s in r.scores(trace_id)} >= TURN_SCORES), (
        langfuse.scores()
    )
    scores = {s["name"]: s for s in langfuse.scores(trace_id)}
    assert (scores["grounded"]["value"], scores["grounded"]["dataType"]) == (1.0, "BOOLEAN")
    assert scores["llm_calls"]["value"] == done["usage"]["llm_calls"] == 1
    assert scores["evidence_chunks"]["value"] >= 1


def test_flags_become_scores_with_their_reasons(
    make_services: Callable[..., Services], agent_settings: Settings, langfuse: LangfuseRecorder
) -> None:
    services = make_services(
        supports_tools=False,
        settings=traced_settings(agent_settings, langfuse),
        default=looping("Venus is hot."),  # cites nothing: citations are added by similarity
    )
    with TestClient(create_app(services.settings, services)) as client:
        _, events = chat(client, message=QUESTION_HOT)
    done = events[-1]
    assert "citations_added" in {f["flag"] for f in done["flags"]}
    assert langfuse.wait_for(
        lambda r: any(s["name"] == "flag_citations_added" for s in r.scores(done["trace_id"]))
    )
    (score,) = [s for s in langfuse.scores(done["trace_id"]) if s["name"] == "flag_citations_added"]
    assert score["value"] == 1.0
    assert "cited nothing" in score["comment"]
    services.tracing.shutdown(timeout_s=1)


def test_openai_endpoint_turns_are_traced_and_name_their_trace(
    traced: Services, langfuse: LangfuseRecorder
) -> None:
    with TestClient(create_app(traced.settings, traced)) as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": "agentrag-low", "messages": [{"role": "user", "content": QUESTION_HOT}]},
        )
        assert reply.status_code == 200
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "agentrag-low",
                "stream": True,
                "messages": [{"role": "user", "content": QUESTION_HOT}],
            },
        ) as streamed:
            streamed_id = streamed.headers["x-trace-id"]
            streamed.read()
    traced.tracing.flush(timeout_s=10)
    body = reply.json()
    assert body["agentrag"]["trace_id"] == reply.headers["x-trace-id"]
    assert sorted(langfuse.trace_ids()) == sorted([reply.headers["x-trace-id"], streamed_id])
    for trace_id in langfuse.trace_ids():
        assert names(langfuse.spans(trace_id)).count(TURN_NAME) == 1


def test_a_turn_can_opt_out_and_sampling_leaves_turns_untraced(
    make_services: Callable[..., Services], agent_settings: Settings, langfuse: LangfuseRecorder
) -> None:
    services = make_services(
        supports_tools=False, settings=traced_settings(agent_settings, langfuse), default=looping()
    )
    with TestClient(create_app(services.settings, services)) as client:
        headers, events = chat(client, message=QUESTION_HOT, trace=False)
        assert "x-trace-id" not in headers
        assert events[-1]["trace_id"] is None
        services.tracing.sample_rate = 0.0
        headers, events = chat(client, message=QUESTION_HOT)
        assert "x-trace-id" not in headers and events[-1]["trace_id"] is None
    services.tracing.flush(timeout_s=10)
    assert langfuse.trace_ids() == []
    services.tracing.shutdown(timeout_s=1)


def test_tracing_is_off_without_keys(services: Services, client: TestClient) -> None:
    headers, events = chat(client, message=QUESTION_HOT)
    assert "x-trace-id" not in headers
    assert events[-1]["trace_id"] is None
    assert not services.tracing.enabled
    assert services.tracing._client is None  # the SDK is never set up
    reply = client.post("/v1/feedback", json={"run_id": events[-1]["run_id"], "thumbs": "up"})
    assert reply.status_code == 409
    assert "LANGFUSE_PUBLIC_KEY" in reply.json()["error"]["message"]


class RendezvousModel(LoopingChatModel):
    """Each answer waits until the other turn's answer has started too: the two turns are
    inside their traces at the same time, whatever the scheduling."""

    started: int = 0
    both: Any = Field(default=None, exclude=True)

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        if self.both is None:
            self.both = asyncio.Event()
        self.started += 1
        if self.started == 2:
            self.both.set()
        await self.both.wait()
        async for chunk in super()._astream(messages, *args, **kwargs):
            yield chunk


async def test_concurrent_turns_never_share_a_trace(
    make_services: Callable[..., Services], agent_settings: Settings, langfuse: LangfuseRecorder
) -> None:
    model = RendezvousModel(replies=["Venus is the hottest planet [1]."], repeat=True)
    services = make_services(
        supports_tools=False, settings=traced_settings(agent_settings, langfuse), default=model
    )
    questions = [QUESTION_HOT, "Which star is nearest to the Sun?"]
    with LiveServer(create_app(services.settings, services)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            replies = await asyncio.gather(
                *(
                    http.post("/v1/chat", json={"message": q, "effort": "low", "stream": False})
                    for q in questions
                )
            )
    assert model.started >= 2  # a turn whose answer is rejected writes it again
    services.tracing.flush(timeout_s=10)
    done = [r.json() for r in replies]
    assert sorted(langfuse.trace_ids()) == sorted(d["trace_id"] for d in done)
    for question, turn in zip(questions, done, strict=True):
        spans = langfuse.spans(turn["trace_id"])
        assert names(spans).count(TURN_NAME) == 1
        assert names(spans).count("agentrag") == 1
        assert langfuse.root(turn["trace_id"]).input == {"message": question}
        generations = [s for s in spans if s.observation_type == "generation"]
        assert generations
        assert all(question in str(g.input) for g in generations)
        assert {s.attributes["session.id"] for s in spans} == {turn["thread_id"]}
        ids = {s.span_id for s in spans}
        assert all(s.parent_span_id in ids for s in spans if not s.is_root)
    services.tracing.shutdown(timeout_s=1)


def test_feedback_is_a_score_on_the_trace_for_its_own_tenant_only(
    traced: Services, langfuse: LangfuseRecorder
) -> None:
    settings = traced.settings.model_copy(update={"api_keys": list(KEYS.values())})
    alpha = {"Authorization": "Bearer ar-alpha-key"}
    public = {"Authorization": "Bearer ar-public-key"}
    with TestClient(create_app(settings, traced)) as client:
        with client.stream(
            "POST", "/v1/chat", json={"message": QUESTION_HOT, "effort": "low"}, headers=alpha
        ) as response:
            done = sse_events(response.iter_lines())[-1]
        trace_id = done["trace_id"]
        ok = client.post(
            "/v1/feedback",
            json={"trace_id": trace_id, "thumbs": "down", "comment": "wrong planet"},
            headers=alpha,
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["url"] == done["trace_url"]
        rated = client.post(
            "/v1/feedback",
            json={"run_id": done["run_id"], "score": 4, "name": "stars"},
            headers=alpha,
        )
        assert rated.status_code == 200
        other = client.post(
            "/v1/feedback", json={"trace_id": trace_id, "thumbs": "up"}, headers=public
        )
        assert other.status_code == 404
        unknown = client.post(
            "/v1/feedback", json={"trace_id": "0" * 32, "thumbs": "up"}, headers=alpha
        )
        assert unknown.status_code == 404
        both = client.post(
            "/v1/feedback", json={"trace_id": trace_id, "thumbs": "up", "score": 1}, headers=alpha
        )
        assert both.status_code == 422
        neither = client.post("/v1/feedback", json={"thumbs": "up"}, headers=alpha)
        assert neither.status_code == 422
    assert langfuse.wait_for(
        lambda r: {"user_feedback", "stars"} <= {s["name"] for s in r.scores(trace_id)}
    )
    scores = {s["name"]: s for s in langfuse.scores(trace_id)}
    assert scores["user_feedback"]["value"] == 0.0
    assert scores["user_feedback"]["dataType"] == "BOOLEAN"
    assert scores["user_feedback"]["comment"] == "wrong planet"
    assert (scores["stars"]["value"], scores["stars"]["dataType"]) == (4.0, "NUMERIC")


def test_no_secret_reaches_langfuse(traced: Services, langfuse: LangfuseRecorder) -> None:
    settings = traced.settings.model_copy(update={"api_keys": list(KEYS.values())})
    secret_question = f"{QUESTION_HOT} My key is Bearer ar-alpha-key and {LLM_KEY}."
    with TestClient(create_app(settings, traced)) as client:
        with client.stream(
            "POST",
            "/v1/chat",
            json={"message": secret_question, "effort": "low"},
            headers={"Authorization": "Bearer ar-alpha-key"},
        ) as response:
            done = sse_events(response.iter_lines())[-1]
        client.post(
            "/v1/feedback",
            json={"trace_id": done["trace_id"], "thumbs": "up", "comment": f"key {LLM_KEY}"},
            headers={"Authorization": "Bearer ar-alpha-key"},
        )
    traced.tracing.flush(timeout_s=10)
    assert langfuse.wait_for(lambda r: any(s["name"] == "user_feedback" for s in r.scores()))
    sent = langfuse.all_sent_text()
    assert done["answer"] in sent
    for secret in (LLM_KEY, "ar-alpha-key", langfuse.secret_key):
        assert secret not in sent
    assert "[redacted]" in sent


@pytest.mark.parametrize("mode", ["hang", "error", "down"])
def test_a_broken_langfuse_leaves_turns_as_they_were(
    traced: Services, langfuse: LangfuseRecorder, mode: str
) -> None:
    """A turn never waits on Langfuse: with every Langfuse reply held back, turns still finish
    (a turn that waited would never end), and with the same answer as untraced."""
    if mode == "down":
        langfuse.close()
    else:
        langfuse.mode = mode  # type: ignore[assignment]
    with TestClient(create_app(traced.settings, traced)) as client:
        for _ in range(3):
            _, traced_events = chat(client, message=QUESTION_HOT)
            _, plain_events = chat(client, message=QUESTION_HOT, trace=False)
            traced_done, plain_done = traced_events[-1], plain_events[-1]
            assert traced_done["trace_id"] and plain_done["trace_id"] is None
            for key in ("answer", "citations", "verdict", "flags", "usage"):
                if key == "usage":
                    traced_done[key].pop("model_ms"), plain_done[key].pop("model_ms")
                assert traced_done[key] == plain_done[key], key
        assert (
            client.post(
                "/v1/feedback", json={"trace_id": traced_done["trace_id"], "thumbs": "up"}
            ).status_code
            == 200
        )
    if mode == "hang":
        assert langfuse.held_requests >= 1  # the exports are still waiting on Langfuse
        assert not traced.tracing.flush(timeout_s=0.2)
