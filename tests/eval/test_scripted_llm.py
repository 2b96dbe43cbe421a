"""The scripted LLM server, driven by the clients agentrag really uses: the openai SDK and
`ChatOpenAI` (through `make_chat_model`, exactly as the agent builds its models)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from agent.llm import make_chat_model
from agent.settings import load_settings
from agent.state import Evidence
from agent.text import format_evidence
from eval.scripted_llm import ScriptedLLM, evidence_reply
from prompts.loader import load_prompt
from tests.conftest import REPO

pytestmark = pytest.mark.integration

REPLY = "Paris is the capital of France [1]."


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM(reply=REPLY) as server:
        yield server


def client(llm: ScriptedLLM) -> openai.OpenAI:
    return openai.OpenAI(base_url=llm.base_url, api_key="not-needed", max_retries=0)


def stats(llm: ScriptedLLM) -> dict[str, Any]:
    response = httpx.get(llm.base_url.removesuffix("/v1") + "/stats")
    response.raise_for_status()
    payload: dict[str, Any] = response.json()
    return payload


def evidence(text: str) -> Evidence:
    """The fields `format_evidence` reads; the rest of an `Evidence` does not reach the prompt."""
    return cast(Evidence, {"title": "Ingestion", "heading_path": ["Re-ingesting"], "text": text})


def test_openai_client_non_stream_reply_and_usage(llm: ScriptedLLM) -> None:
    reply = client(llm).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == REPLY
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == len(REPLY.split())
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_openai_client_streams_token_by_token_then_usage(llm: ScriptedLLM) -> None:
    chunks = list(
        client(llm).chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "capital of France?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert "".join(d or "" for d in deltas) == REPLY
    assert len([d for d in deltas if d]) == len(REPLY.split())
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(REPLY.split())


def test_stream_without_include_usage_sends_no_usage(llm: ScriptedLLM) -> None:
    with httpx.stream(
        "POST",
        llm.base_url + "/chat/completions",
        json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all('"usage"' not in line for line in lines)


def test_default_reply_quotes_the_first_evidence_block_of_agentrag_prompt() -> None:
    system = load_prompt("generate").format(
        evidence=format_evidence(
            [
                evidence("Ingesting the same files again adds nothing. Ids derive from content."),
                evidence("A changed file replaces its old chunks."),
            ]
        )
    )
    reply = evidence_reply(
        [{"role": "system", "content": system}, {"role": "user", "content": "Re-ingest?"}]
    )
    assert reply == "According to the documents, Ingesting the same files again adds nothing [1]."


def test_default_reply_without_evidence_echoes_the_last_user_message() -> None:
    reply = evidence_reply(
        [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "How do I rotate API keys?"}]},
        ]
    )
    assert reply == "According to the documents, How do I rotate API keys [1]."


def test_chat_openai_invoke_stream_and_usage_as_the_agent_builds_it(tmp_path: Path) -> None:
    with ScriptedLLM() as server:
        settings = load_settings(
            data_dir=tmp_path / "data", llm_base_url=server.base_url, llm_model="scripted"
        )
        model = make_chat_model(settings)
        question = HumanMessage("How are chunk ids chosen?")
        system = SystemMessage(
            load_prompt("generate").format(
                evidence=format_evidence([evidence("Chunk ids derive from the content.")])
            )
        )
        answer = model.invoke([system, question])
        assert answer.text == "According to the documents, Chunk ids derive from the content [1]."
        assert answer.usage_metadata is not None
        assert answer.usage_metadata["output_tokens"] == len(answer.text.split())

        chunks = [c for c in model.stream([question]) if isinstance(c, AIMessageChunk)]
        assert len([c for c in chunks if c.text]) > 5
        merged = chunks[0]
        for c in chunks[1:]:
            merged += c
        assert merged.text == "According to the documents, How are chunk ids chosen [1]."
        assert merged.usage_metadata is not None
        assert merged.usage_metadata["output_tokens"] == len(merged.text.split())
        assert merged.usage_metadata["input_tokens"] > 0
        assert server.stats.requests_total == 2


async def test_chat_openai_async_stream_with_token_delay(llm: ScriptedLLM) -> None:
    llm.token_delay_s = 0.01
    model = ChatOpenAI(
        model="scripted", base_url=llm.base_url, api_key=SecretStr("x"), stream_usage=True
    )
    started = time.perf_counter()
    texts = [c.text async for c in model.astream("hi")]
    assert "".join(texts) == REPLY
    assert time.perf_counter() - started >= 0.01 * len(REPLY.split())


def test_stats_count_requests_in_flight_and_disconnects(llm: ScriptedLLM) -> None:
    llm.reply, llm.token_delay_s = "word " * 200, 0.05  # 10 s unless the client goes away
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", llm.base_url + "/chat/completions", json=body) as response:
        lines = response.iter_lines()  # kept: dropping the iterator closes the response
        assert next(lines).startswith("data: ")
        during = stats(llm)
    assert during["requests_total"] == 1
    assert during["in_flight"] == 1

    deadline = time.monotonic() + 5
    while stats(llm)["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    after = stats(llm)
    assert after["in_flight"] == 0
    assert after["disconnected"] == 1
    assert after["completed"] == 0
    time.sleep(0.2)
    assert stats(llm)["requests_total"] == 1


def test_max_tokens_cuts_the_reply_with_finish_reason_length(llm: ScriptedLLM) -> None:
    reply = client(llm).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert reply.choices[0].message.content == "Paris is"
    assert reply.choices[0].finish_reason == "length"


def test_models_list_and_bad_requests(llm: ScriptedLLM) -> None:
    assert [m.id for m in client(llm).models.list()] == ["scripted"]
    with pytest.raises(openai.BadRequestError, match="messages"):
        client(llm).chat.completions.create(model="scripted", messages=[])
    response = httpx.post(llm.base_url + "/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]
    assert stats(llm)["requests_total"] == 0


def test_reply_can_be_changed_while_running(llm: ScriptedLLM) -> None:
    llm.reply = lambda messages: f"{len(messages)} messages"
    reply = client(llm).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "1 messages"


def test_command_line_serves_on_a_free_port() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "eval.scripted_llm", "--port", "0", "--reply", "Hello there."],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().split()[-1]
        assert base_url.endswith("/v1")
        openai_client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        reply = openai_client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Hello there."
    finally:
        process.terminate()
        process.wait(timeout=10)
