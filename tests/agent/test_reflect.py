"""Sentence support in reflection: what it decides, and what it spends deciding it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGenerationChunk

from agent.context import AgentContext
from agent.nodes.generate import attach_citations
from agent.nodes.reflect import PIECES_PER_SENTENCE, _closest_pieces, judge_sentences
from agent.services import count_tokens
from agent.state import Evidence
from agent.text import split_sentences, without_citations
from retrievers.embeddings import LocalEmbeddings
from retrievers.similarity import cosine
from tests.agent.conftest import ScriptedChatModel, run_turn
from tests.agent.test_services import CountingEmbeddings

ORBITS = (
    "Mercury is the smallest planet and the closest to the Sun. It has no moons. "
    "Its year lasts 88 days. Temperatures on its surface swing by hundreds of degrees."
)
VOLCANOES = (
    "Olympus Mons on Mars is the tallest volcano in the Solar System. Its base is about the "
    "size of Arizona. Mars also has the deepest canyon, Valles Marineris."
)

MERCURY = (
    "Mercury is the smallest planet and the closest to the Sun. It has no moons. "
    "Its year lasts 88 days. Temperatures on its surface swing by hundreds of degrees. "
    "Its orbit is the most eccentric of any planet. A probe named MESSENGER mapped it "
    "from 2011 to 2015. Ice may hide in craters near its poles."
)


def evidence(*texts: str) -> list[Evidence]:
    return [
        {
            "id": f"chunk-{n}",
            "collection": "astronomy",
            "doc_id": f"doc-{n}",
            "title": f"Doc {n}",
            "source": f"doc-{n}.md",
            "heading_path": [],
            "chunk_index": 0,
            "text": text,
            "retrieval_score": 0.5,
            "relevance": 0.5,
            "rank": n,
        }
        for n, text in enumerate(texts)
    ]


def counting_services(make_services: Any, minilm: LocalEmbeddings) -> tuple[Any, Any]:
    services = make_services()
    counting = CountingEmbeddings(minilm)
    services.stack.__dict__["embeddings"] = counting
    return services, counting


async def test_cited_sentence_is_held_to_the_sentences_of_its_chunk(
    make_services: Any, minilm: LocalEmbeddings
) -> None:
    services, counting = counting_services(make_services, minilm)
    chunks = evidence(ORBITS, VOLCANOES)
    answer = (
        "A year on Mercury lasts eighty-eight days [1]. "
        "Olympus Mons is a famous mountain that many tourists climb every summer."
    )
    verdicts, _ = await judge_sentences(answer, chunks, AgentContext(), services)
    assert [v["supported"] for v in verdicts] == [True, False]
    assert verdicts[0]["cited"] == [1] and verdicts[1]["cited"] == []
    # only the cited chunk's sentences were embedded: the uncited sentence is unsupported
    # whatever it resembles, so no chunk is split for it
    assert "Its base is about the size of Arizona." not in counting.encoded


async def test_only_chunk_sentences_sharing_words_are_compared(
    make_services: Any, minilm: LocalEmbeddings
) -> None:
    services, counting = counting_services(make_services, minilm)
    chunks = evidence(MERCURY, VOLCANOES)
    # neither the whole chunk (cosine 0.35) nor its words (3 of 7) support the sentence: only
    # the one sentence of the chunk it paraphrases does
    answer = "A full Mercurian year lasts eighty-eight Earth days [1]."
    verdicts, _ = await judge_sentences(answer, chunks, AgentContext(), services)
    assert verdicts[0]["supported"], verdicts
    pieces = [p for p in split_sentences(MERCURY) if p in counting.encoded]
    assert pieces == ["Its year lasts 88 days."]  # the six sharing no word were never encoded


def test_closest_pieces_are_few_and_ranked_by_shared_words() -> None:
    chunk = evidence(
        "Saturn has rings. Saturn has rings of ice. Saturn has rings of ice and rock. "
        "Saturn is large. Jupiter is larger. Saturn has rings of ice and rock and dust."
    )
    picked = _closest_pieces("Saturn's rings are ice, rock and dust.", {1}, chunk)
    assert len(picked) == PIECES_PER_SENTENCE
    assert picked[0] == "Saturn has rings of ice and rock and dust."
    assert "Jupiter is larger." not in picked
    assert _closest_pieces("Pluto was reclassified.", {1}, chunk) == []


async def test_reflection_reuses_the_vectors_citations_were_attached_with(
    make_services: Any, minilm: LocalEmbeddings
) -> None:
    services, counting = counting_services(make_services, minilm)
    chunks = evidence(ORBITS, VOLCANOES)
    await services.chunk_vectors([(e["id"], e["text"]) for e in chunks])
    answer = "Mercury has no moons. Olympus Mons on Mars is the tallest volcano."
    seen = len(counting.encoded)
    cited = await attach_citations(answer, chunks, services)
    assert cited == "Mercury has no moons [1]. Olympus Mons on Mars is the tallest volcano [2]."
    # the sentences only: the answer's direction is their mean, not one more encode
    assert counting.encoded[seen:] == [
        "Mercury has no moons.",
        "Olympus Mons on Mars is the tallest volcano.",
    ]
    seen = len(counting.encoded)
    verdicts, answer_vector = await judge_sentences(cited, chunks, AgentContext(), services)
    assert all(v["supported"] for v in verdicts)
    assert counting.encoded[seen:] == []  # the sentences' vectors came with the citations
    whole = (await services.embed([answer]))[0]
    assert cosine(answer_vector, whole) > 0.8


class PacedModel(ScriptedChatModel):
    """Streams its reply a word at a time with a pause, as a hosted model does."""

    token_times: list[float] = []  # noqa: RUF012 - a pydantic field, copied per instance

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._stream(*args, **kwargs):
            await asyncio.sleep(0.02)
            self.token_times.append(time.monotonic())
            yield chunk


async def test_answer_sentences_are_embedded_while_the_model_still_writes(
    make_services: Any, minilm: LocalEmbeddings
) -> None:
    answer = (
        "Venus has the hottest surface of any planet, about 465 degrees Celsius [1]. "
        "Its thick carbon dioxide atmosphere traps heat [1]."
    )
    model = PacedModel(messages=iter([AIMessage(answer)]), seen=[], token_times=[])
    services = make_services(default=model)
    counting = TimedEmbeddings(minilm)
    services.stack.__dict__["embeddings"] = counting
    result = await run_turn(services, "Which planet has the hottest surface?")
    assert result["answer"] == answer, result.get("error")
    assert result["verdict"]["action"] == "accept"
    first, second = (without_citations(s) for s in split_sentences(answer))
    encoded = dict(counting.times)
    assert encoded[first] < model.token_times[-1], "the first sentence waited for the stream"
    assert encoded[second] > model.token_times[-1]  # the last one is known only at the end
    texts = [text for text, _ in counting.times]
    assert texts.count(first) == 1 and texts.count(second) == 1  # reflection found both cached


async def test_the_prompt_is_counted_while_the_model_writes(
    make_services: Any, monkeypatch: Any
) -> None:
    """A model that reports no usage (the bundled one, when streaming) has its prompt counted
    alongside its stream, not after it."""
    import agent.nodes.generate as generate

    counted: list[tuple[int, float]] = []

    def timed_count(texts: list[str]) -> int:
        tokens = count_tokens(texts)
        counted.append((tokens, time.monotonic()))
        return tokens

    monkeypatch.setattr(generate, "count_tokens", timed_count)
    answer = "Venus has the hottest surface of any planet, about 465 degrees Celsius [1]."
    model = PacedModel(messages=iter([AIMessage(answer)]), seen=[], token_times=[])
    result = await run_turn(make_services(default=model), "Which planet has the hottest surface?")
    assert result["answer"] == answer, result.get("error")
    (prompt_tokens, when), *_ = counted
    assert when < model.token_times[-1]
    usage = next(u for u in result["usage"] if u["node"] == "generate_answer")
    assert usage["input_tokens"] > prompt_tokens > 0  # the prompt and the question


class TimedEmbeddings(CountingEmbeddings):
    def __init__(self, model: LocalEmbeddings) -> None:
        super().__init__(model)
        self.times: list[tuple[str, float]] = []

    def embed_for_comparison(self, texts: list[str]) -> list[list[float]]:
        vectors = super().embed_for_comparison(texts)
        self.times.extend((text, time.monotonic()) for text in texts)
        return vectors
