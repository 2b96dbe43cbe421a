"""End to end with the real bundled LLM (SmolLM2 via llama.cpp) and the real embedded store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.context import AgentContext
from agent.services import Services
from agent.settings import load_settings
from graphs.rag import build_graph, recursion_limit
from retrievers.embeddings import LocalEmbeddings
from retrievers.rerank import EmbeddingReranker
from retrievers.stack import RetrievalStack
from tests.conftest import copy_store


@pytest.mark.integration
async def test_real_llm_answers_with_a_citation_to_a_retrieved_chunk(
    corpus_dir: Path, tmp_path: Path, minilm: LocalEmbeddings
) -> None:
    data = tmp_path / "data"
    copy_store(corpus_dir, data)
    settings = load_settings(data_dir=data)  # no LLM URL: agentrag serves the bundled SmolLM2
    stack = RetrievalStack(settings, embeddings=minilm)
    services = Services(settings, stack=stack, reranker=EmbeddingReranker(minilm))
    try:
        graph = build_graph(services)
        ctx = AgentContext(effort="medium")
        tokens: list[str] = []
        final: dict[str, Any] = {}
        config: Any = {"recursion_limit": recursion_limit(ctx)}
        async for mode, payload in graph.astream(
            {"messages": [("user", "Which planet has the hottest surface?")]},
            config,
            context=ctx,
            stream_mode=["messages", "values"],
        ):
            if mode == "messages" and payload[1].get("langgraph_node") == "generate_answer":
                tokens.append(str(payload[0].content))
            elif mode == "values":
                final = payload
    finally:
        services.close()
    assert len([t for t in tokens if t]) > 1  # the answer streamed token by token
    assert final["answer"].strip()
    assert final["citations"], final["answer"]
    evidence_ids = {e["id"] for e in final["evidence"]}
    assert {c["id"] for c in final["citations"]} <= evidence_ids
    assert any("Venus" in e["text"] for e in final["evidence"])
    usage = [u for u in final["usage"] if u["turn"] == final["turn"]]
    assert usage and all(u["output_tokens"] > 0 for u in usage if u["role"] == "generator")
