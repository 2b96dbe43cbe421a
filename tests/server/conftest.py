"""Chat API fixtures: the real app over a real embedded store with the sample collections; the
only fake is the chat model's words (a scripted model, or a scripted OpenAI-compatible server)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from agent.ports import free_port
from agent.services import Services
from agent.settings import ApiKeySettings
from eval.scripted_llm import ScriptedChatModel
from server.app import create_app
from server.auth import hash_key
from tests.agent.conftest import agent_settings, corpus_dir, make_services  # noqa: F401

ANSWER = "Venus has the hottest surface of any planet [1]."
QUESTION_HOT = "Which planet has the hottest surface?"


class LoopingChatModel(ScriptedChatModel):
    """The scripted model answering every call with the same text; counts calls so tests can
    see when the agent stops calling it.

    With `pause_after=n`, a streamed answer stops after its first n chunks until the test sets
    `resume`: a turn a test can hold in the middle of its answer for as long as it needs."""

    pause_after: int | None = None
    resume: threading.Event = Field(default_factory=threading.Event, exclude=True)
    finished_before_start: list[int] = Field(default_factory=list)
    """For each call, how many calls had finished when it started."""
    finished: int = 0

    async def _astream(
        self, messages: list[BaseMessage], *args: Any, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.finished_before_start.append(self.finished)
        sent = 0
        async for chunk in super()._astream(messages, *args, **kwargs):
            if sent == self.pause_after:
                while not self.resume.is_set():  # a cancelled turn ends here, mid-answer
                    await asyncio.sleep(0.01)
            yield chunk
            sent += 1
        self.finished += 1

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.finished_before_start.append(self.finished)
        result = await super()._agenerate(messages, *args, **kwargs)
        self.finished += 1
        return result


def looping(
    text: str = ANSWER, delay_s: float = 0.0, pause_after: int | None = None
) -> LoopingChatModel:
    return LoopingChatModel(
        replies=[text], repeat=True, token_delay_s=delay_s, pause_after=pause_after
    )


@pytest.fixture
def chat_model() -> LoopingChatModel:
    return looping()


@pytest.fixture
def services(make_services: Callable[..., Services], chat_model: LoopingChatModel) -> Services:
    return make_services(supports_tools=False, default=chat_model)


@pytest.fixture
def app(services: Services) -> FastAPI:
    return create_app(services.settings, services)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


KEYS = {
    "ar-alpha-key": ApiKeySettings(sha256=hash_key("ar-alpha-key"), tenant="alpha", name="alpha"),
    "ar-astro-key": ApiKeySettings(
        sha256=hash_key("ar-astro-key"), tenant="public", collections=["astronomy"]
    ),
    "ar-public-key": ApiKeySettings(sha256=hash_key("ar-public-key"), tenant="public"),
}


@pytest.fixture
def keyed_client(services: Services) -> Iterator[TestClient]:
    settings = services.settings.model_copy(update={"api_keys": list(KEYS.values())})
    with TestClient(create_app(settings, services)) as c:
        yield c


def sse_events(lines: Iterator[str]) -> list[dict[str, Any]]:
    """Parse an SSE body into its events (event name checked against the JSON's type)."""
    events: list[dict[str, Any]] = []
    name: str | None = None
    data: list[str] = []
    for line in lines:
        line = line.rstrip("\r")
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            payload = json.loads("\n".join(data))
            if name is not None:
                assert payload.get("type") == name
            events.append(payload)
            name, data = None, []
    return events


class LiveServer:
    """The app under a real uvicorn on a loopback port, in a thread."""

    def __init__(self, app: FastAPI, health: str = "/healthz") -> None:
        self.health = health
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + self.health, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def live(app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server
