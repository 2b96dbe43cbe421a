"""Vector caches, usage accounting (model time excludes the agent's own counting), similarities."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agent.usage import UsageMeter
from retrievers.embeddings import LocalEmbeddings
from retrievers.similarity import cosine, cosine_matrix


class CountingEmbeddings(LocalEmbeddings):
    """The bundled model, counting the texts it is asked to encode."""

    def __init__(self, model: LocalEmbeddings) -> None:
        self.__dict__.update(model.__dict__)
        self.encoded: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.encoded.extend(texts)
        return super().embed_documents(texts)

    def embed_for_comparison(self, texts: list[str]) -> list[list[float]]:
        self.encoded.extend(texts)
        return super().embed_for_comparison(texts)


async def test_texts_are_embedded_once(make_services: Any, minilm: LocalEmbeddings) -> None:
    counting = CountingEmbeddings(minilm)
    vectors = make_services(embeddings=counting).vectors
    first = await vectors.embed(["Venus is hot.", "Mars is red.", "Venus is hot."])
    again = await vectors.embed(["Mars is red.", "Jupiter is large."])
    assert counting.encoded == ["Venus is hot.", "Mars is red.", "Jupiter is large."]
    assert first[0] == first[2] and again[0] == first[1]
    assert await vectors.embed([]) == []


def test_model_time_stops_when_the_reply_is_complete() -> None:
    """Counting tokens for a model that reports none is the agent's work, not the model's."""
    started = time.perf_counter()
    finished = started + 0.25
    messages = [HumanMessage("word " * 5000)]
    entry = UsageMeter().entry(
        "t", "generate_answer", "generator", messages, AIMessage("ok"), started, finished
    )
    assert entry["model_ms"] == pytest.approx(250.0)
    assert entry["input_tokens"] >= 5000 and entry["output_tokens"] >= 1


def test_cosine_matrix_matches_pairwise_cosine() -> None:
    rows = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]]
    columns = [[0.0, 1.0, 1.0], [2.0, 0.0, 4.0], [0.0, 0.0, 0.0]]
    matrix = cosine_matrix(rows, columns)
    for row, sims in zip(rows, matrix, strict=True):
        for column, sim in zip(columns, sims, strict=True):
            assert math.isclose(sim, cosine(row, column), abs_tol=1e-12)
    assert cosine_matrix([], columns) == []
    assert cosine_matrix(rows, []) == [[], []]


async def test_reported_usage_is_taken_as_reported() -> None:
    reply = AIMessage(
        "ok", usage_metadata={"input_tokens": 1200, "output_tokens": 7, "total_tokens": 1207}
    )
    entry = await UsageMeter().aentry(
        "t", "generate_answer", "generator", [], reply, time.perf_counter()
    )
    assert (entry["input_tokens"], entry["output_tokens"]) == (1200, 7)
    assert entry["model_ms"] >= 0


def test_tokens_are_counted_per_paragraph_and_each_paragraph_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A regenerated answer's prompt repeats the evidence: only its new paragraphs are
    tokenized, and the sum equals the count of the whole text."""
    from retrievers.chunking import bundled_token_counter

    counter = bundled_token_counter()
    evidence = "[1] Mercury\nMercury has no moons.\n\n[2] Mars\nOlympus Mons, on Mars, is tall."
    first = f"Answer from the evidence.\n\n{evidence}"
    second = f"Answer strictly from the evidence, citing each sentence.\n\n{evidence}"
    meter = UsageMeter()
    assert meter.count_tokens([first]) == counter.count([first])[0]
    expected = sum(counter.count([second, "Question?"]))
    seen: list[str] = []
    count = counter.count

    def spy(texts: list[str]) -> list[int]:
        seen.extend(texts)
        return count(texts)

    monkeypatch.setattr(counter, "count", spy)
    assert meter.count_tokens([second, "Question?"]) == expected
    assert seen == ["Answer strictly from the evidence, citing each sentence.", "Question?"]
