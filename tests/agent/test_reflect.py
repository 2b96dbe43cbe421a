"""Sentence support in reflection: what it decides, and what it spends deciding it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.outputs import ChatGenerationChunk

from agent.context import AgentContext
from agent.coverage import question_parts
from agent.nodes.generate import attach_citations
from agent.nodes.reflect import (
    PIECES_PER_SENTENCE,
    _closest_pieces,
    _stops_short,
    honest_answer,
    judge_sentences,
)
from agent.state import Evidence
from agent.text import split_sentences, without_citations
from eval.scripted_llm import ScriptedChatModel
from retrievers.embeddings import LocalEmbeddings
from retrievers.similarity import cosine
from tests.agent.conftest import run_turn
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


def counting_vectors(make_services: Any, minilm: LocalEmbeddings) -> tuple[Any, Any]:
    counting = CountingEmbeddings(minilm)
    return make_services(embeddings=counting).vectors, counting


async def test_cited_sentence_is_held_to_the_sentences_of_its_chunk(
    make_services: Any, minilm: LocalEmbeddings
) -> None:
    vectors, counting = counting_vectors(make_services, minilm)
    chunks = evidence(ORBITS, VOLCANOES)
    answer = (
        "A year on Mercury lasts eighty-eight days [1]. "
        "Olympus Mons is a famous mountain that many tourists climb every summer."
    )
    verdicts, _ = await judge_sentences(answer, chunks, AgentContext(), vectors)
    assert [v["supported"] for v in verdicts] == [True, False]
    assert verdicts[0]["cited"] == [1] and verdicts[1]["cited"] == []
    # only the cited chunk's sentences were embedded: the uncited sentence is unsupported
    # whatever it resembles, so no chunk is split for it
    assert "Its base is about the size of Arizona." not in counting.encoded


async def test_only_chunk_sentences_sharing_words_are_compared(
    make_services: Any, minilm: LocalEmbeddings
) -> None:
    vectors, counting = counting_vectors(make_services, minilm)
    chunks = evidence(MERCURY, VOLCANOES)
    # neither the whole chunk (cosine 0.35) nor its words (3 of 7) support the sentence: only
    # the one sentence of the chunk it paraphrases does
    answer = "A full Mercurian year lasts eighty-eight Earth days [1]."
    verdicts, _ = await judge_sentences(answer, chunks, AgentContext(), vectors)
    assert verdicts[0]["support"] >= AgentContext().support_threshold, verdicts
    # close in meaning, but the chunk never names Earth: the claim check holds that against it
    assert [p["claim"] for p in verdicts[0].get("problems", [])] == ["Earth"]
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
    vectors, counting = counting_vectors(make_services, minilm)
    chunks = evidence(ORBITS, VOLCANOES)
    await vectors.chunk_vectors([(e["id"], e["text"]) for e in chunks])
    answer = "Mercury has no moons. Olympus Mons on Mars is the tallest volcano."
    seen = len(counting.encoded)
    cited = await attach_citations(answer, chunks, vectors)
    assert cited == "Mercury has no moons [1]. Olympus Mons on Mars is the tallest volcano [2]."
    # the sentences only: the answer's direction is their mean, not one more encode
    assert counting.encoded[seen:] == [
        "Mercury has no moons.",
        "Olympus Mons on Mars is the tallest volcano.",
    ]
    seen = len(counting.encoded)
    verdicts, answer_vector = await judge_sentences(cited, chunks, AgentContext(), vectors)
    assert all(v["supported"] for v in verdicts)
    assert counting.encoded[seen:] == []  # the sentences' vectors came with the citations
    whole = (await vectors.embed([answer]))[0]
    assert cosine(answer_vector, whole) > 0.8


GATE_TIMEOUT_S = 60.0
"""How long a gated model waits for the work it expects to see start before its last token.
The wait ends at once when that work starts; the limit only stops a broken build hanging."""


class GatedModel(ScriptedChatModel):
    """Streams its reply a word at a time and, before its last word, waits until `gate` is set
    by the work the test expects the agent to do while the model is still writing. `log`
    records the order of words and of that work, whatever the machine's speed."""

    gate: Any = None
    log: Any = None
    """The test's own list (typed `Any`: pydantic would copy a `list[str]`)."""
    opened: bool | None = None

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        chunks = list(self._stream(*args, **kwargs))
        for n, chunk in enumerate(chunks):
            if n == len(chunks) - 1:
                self.opened = await asyncio.to_thread(self.gate.wait, GATE_TIMEOUT_S)
            self.log.append(f"token {n}")
            yield chunk


def gated(answer: str, gate: threading.Event, log: list[str]) -> GatedModel:
    return GatedModel(replies=[answer], gate=gate, log=log)


class LoggedEmbeddings(CountingEmbeddings):
    """Logs each text it encodes and sets `gate` once it has encoded `awaited`."""

    def __init__(
        self, model: LocalEmbeddings, log: list[str], gate: threading.Event, awaited: str
    ) -> None:
        super().__init__(model)
        self.log, self.gate, self.awaited = log, gate, awaited

    def embed_for_comparison(self, texts: list[str]) -> list[list[float]]:
        vectors = super().embed_for_comparison(texts)
        self.log.extend(f"encoded {text}" for text in texts)
        if self.awaited in texts:
            self.gate.set()
        return vectors


async def test_answer_sentences_are_embedded_while_the_model_still_writes(
    make_services: Any, minilm: LocalEmbeddings
) -> None:
    answer = (
        "Venus has the hottest surface of any planet, about 465 degrees Celsius [1]. "
        "Its thick carbon dioxide atmosphere traps heat [1]."
    )
    first, second = (without_citations(s) for s in split_sentences(answer))
    log: list[str] = []
    gate = threading.Event()
    model = gated(answer, gate, log)
    embeddings = LoggedEmbeddings(minilm, log, gate, awaited=first)
    services = make_services(default=model, embeddings=embeddings)
    result = await run_turn(services, "Which planet has the hottest surface?")
    assert result["answer"] == answer, result.get("error")
    assert result["verdict"]["action"] == "accept"
    assert model.opened, "the first sentence was not encoded while the model still wrote"
    last_token = max(i for i, entry in enumerate(log) if entry.startswith("token"))
    assert log.index(f"encoded {first}") < last_token
    assert log.index(f"encoded {second}") > last_token  # the last one is known only at the end
    assert embeddings.encoded.count(first) == 1 and embeddings.encoded.count(second) == 1


async def test_the_prompt_is_counted_while_the_model_writes(make_services: Any) -> None:
    """A model that reports no usage (the bundled one, when streaming) has its prompt counted
    alongside its stream, not after it."""
    answer = "Venus has the hottest surface of any planet, about 465 degrees Celsius [1]."
    log: list[str] = []
    gate = threading.Event()
    model = gated(answer, gate, log)
    services = make_services(default=model)
    count = services.usage.count_tokens
    counted: list[int] = []

    def logged_count(texts: list[str]) -> int:
        tokens = count(texts)
        counted.append(tokens)
        gate.set()
        return tokens

    services.usage.count_tokens = logged_count
    result = await run_turn(services, "Which planet has the hottest surface?")
    assert result["answer"] == answer, result.get("error")
    assert model.opened, "the prompt was not counted while the model still wrote"
    usage = next(u for u in result["usage"] if u["node"] == "generate_answer")
    assert usage["input_tokens"] > counted[0] > 0  # the prompt and the question


def test_the_honest_answer_removes_wrong_claims_marks_the_rest_and_names_missing_parts() -> None:
    chunks = evidence(MERCURY, "Proxima Centauri is the nearest star to the Sun.")
    question = "How long is a year on Mercury, and what is the nearest star to the Sun?"
    parts = question_parts(question)
    wrong = {"kind": "number", "claim": "99", "detail": "99 is not in the cited evidence"}
    verdicts: list[Any] = [
        {
            "sentence": "Its year lasts 88 days [1].",
            "cited": [1],
            "support": 0.9,
            "supported": True,
        },
        {
            "sentence": "It has 99 moons [1].",
            "cited": [1],
            "support": 0.8,
            "supported": False,
            "problems": [wrong],
        },
        {"sentence": "It is pleasant [1].", "cited": [1], "support": 0.1, "supported": False},
    ]
    answer = " ".join(v["sentence"] for v in verdicts)
    honest, notes = honest_answer(answer, verdicts, parts[1:], chunks, question)
    assert honest == (
        "Its year lasts 88 days [1]. It is pleasant [1] (unverified). "
        "No supported answer was found to: what is the nearest star to the Sun."
    )
    assert [n for n, _ in notes] == ["claims_removed", "unverified", "partial"]
    # nothing holds: the evidence is quoted, and a part the quote answers is not called missing
    only_wrong = [verdicts[1]]
    quoted, notes = honest_answer(
        only_wrong[0]["sentence"], only_wrong, parts[1:], chunks, question
    )
    assert quoted.startswith("From the documents:") and "Proxima Centauri" in quoted
    assert "No supported answer" not in quoted
    assert [n for n, _ in notes] == ["claims_removed", "quoted_evidence"]


async def test_an_answer_that_stops_at_the_bridge_is_caught_by_meaning_too(
    make_services: Any, minilm: LocalEmbeddings
) -> None:
    """The focus is compared in meaning without the question's names: with them, any sentence
    about Johnnycake came close to "county shares a border with ... Johnnycake"."""
    vectors = make_services().vectors
    question = (
        "What county shares a border with the county in which Johnnycake, West Virginia is located?"
    )
    stopped = ["Johnnycake is an unincorporated community in McDowell County, West Virginia."]
    assert await _stops_short(question, stopped, vectors) is not None
    whole = [*stopped, "McDowell County is bordered by Buchanan County to the north."]
    assert await _stops_short(question, whole, vectors) is None
    question = "Who was the first president of Damerjog's country?"
    village = ["Damerjog is a small village located in eastern Djibouti."]
    assert await _stops_short(question, village, vectors) is not None
    led = ["Damerjog is in Djibouti, whose first president was Hassan Gouled Aptidon."]
    assert await _stops_short(question, led, vectors) is None


async def test_an_answer_that_never_comes_to_the_rest_of_the_question_is_partial(
    make_services: Any, minilm: LocalEmbeddings
) -> None:
    """The song the question names is never spoken of, and the answer's sentence is close in
    meaning to "write" (the title holds "Wrote"): the unreached name decides."""
    vectors = make_services().vectors
    question = 'Who did the producer of Songs I Wrote with Amy write "Thinking Out Loud" for?'
    stopped = ["Songs I Wrote with Amy is an EP independently released by Ed Sheeran in 2010."]
    part = await _stops_short(question, stopped, vectors)
    assert part is not None and part.kind == "focus"
    whole = [*stopped, "Sheeran wrote Thinking Out Loud for his girlfriend Athina Andrelos."]
    assert await _stops_short(question, whole, vectors) is None


async def test_evidence_the_answer_left_out_raises_what_counts_as_close(
    make_services: Any, minilm: LocalEmbeddings
) -> None:
    """A river is near a waterfall in meaning: the stopped answer passes the plain bar, but the
    uncited chunk about the waterfall is closer still."""
    vectors = make_services().vectors
    question = "What is the name of the waterfall in the country where the Bubye River is found?"
    stopped = ["The Bubye River is a tributary of the Limpopo River in Zimbabwe."]
    assert await _stops_short(question, stopped, vectors) is None
    falls = evidence("Victoria Falls is a waterfall on the Zambezi River in Zimbabwe.")
    assert await _stops_short(question, stopped, vectors, falls) is not None
