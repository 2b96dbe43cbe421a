"""Fixtures for graph tests: a real embedded store with two sample collections, the bundled
embedding model, and scripted chat models (the one edge we fake: a model's exact words)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from agent.context import AgentContext
from agent.services import Services
from agent.settings import Settings, load_settings
from eval.scripted_llm import ScriptedChatModel
from graphs.rag import build_graph, recursion_limit
from retrievers.embeddings import LocalEmbeddings
from retrievers.rerank import EmbeddingReranker
from retrievers.stack import RetrievalStack
from tests.conftest import SAMPLES, copy_store


def scripted(*replies: str | AIMessage) -> ScriptedChatModel:
    """A model that answers its calls with `replies`, in order, and fails on one more call."""
    return ScriptedChatModel(replies=list(replies))


def plan_call(mode: str, subquestions: list[str]) -> AIMessage:
    return AIMessage(
        content="",
        tool_calls=[
            {
                "name": "Decomposition",
                "args": {"mode": mode, "subquestions": subquestions},
                "id": "call-1",
            }
        ],
    )


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory, minilm: LocalEmbeddings) -> Path:
    """One ingested data dir for the whole session; tests copy it so none sees another's writes."""
    root = tmp_path_factory.mktemp("agent-corpus")
    stack = RetrievalStack(load_settings(data_dir=root / "data"), embeddings=minilm)
    stack.ingestor.ingest_paths(
        [SAMPLES / "astronomy"], "astronomy", description="Astronomy: planets, stars, the Sun"
    )
    stack.ingestor.ingest_paths(
        [SAMPLES / "handbook"], "handbook", description="agentrag documentation and configuration"
    )
    stack.close()
    return root / "data"


@pytest.fixture
def agent_settings(corpus_dir: Path, tmp_path: Path) -> Settings:
    data = tmp_path / "data"
    copy_store(corpus_dir, data)
    return load_settings(data_dir=data, llm_base_url="http://127.0.0.1:9/v1")


@pytest.fixture
def make_services(agent_settings: Settings, minilm: LocalEmbeddings) -> Iterator[Any]:
    made: list[Services] = []

    def factory(
        supports_tools: bool = True,
        embeddings: LocalEmbeddings | None = None,
        settings: Settings | None = None,
        **chat_models: Any,
    ) -> Services:
        settings = settings or agent_settings
        stack = RetrievalStack(settings, embeddings=embeddings or minilm)
        services = Services(
            settings,
            stack=stack,
            reranker=EmbeddingReranker(minilm),
            chat_models=chat_models,
            supports_tools=supports_tools,
        )
        made.append(services)
        return services

    yield factory
    for services in made:
        services.close()


async def run_turn(
    services: Services, question: str, ctx: AgentContext | None = None, **kwargs: Any
) -> dict[str, Any]:
    ctx = ctx or AgentContext()
    graph = build_graph(services, **kwargs)
    config: Any = {"recursion_limit": recursion_limit(ctx)}
    if "checkpointer" in kwargs:
        config["configurable"] = {"thread_id": "t1"}
    result: dict[str, Any] = await graph.ainvoke(
        {"messages": [("user", question)]}, config=config, context=ctx
    )
    return result
