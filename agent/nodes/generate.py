"""generate_answer: write the answer from the final evidence only, streaming tokens.

Evidence is numbered and fenced as data in the system prompt; the model cites with `[n]`.
No LLM call is spent when there is no evidence (the answer says so plainly) or when a budget
is out (the best evidence sentences are quoted with their citations instead). A model that
cites nothing gets citations attached by similarity, and reflection checks them either way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from agent.budget import exhausted, flag, incomplete
from agent.chat_models import ChatModels
from agent.context import AgentContext
from agent.injection import instruction_like
from agent.nodes.common import step
from agent.prompt_source import PromptSource
from agent.state import AgentState, Evidence
from agent.text import (
    CITATION,
    NO_EVIDENCE,
    SENTENCE_BOUNDARY,
    before_end,
    citations_for,
    cited_numbers,
    extractive_answer,
    format_evidence,
    message_text,
    split_sentences,
    verdict_problems,
    without_citations,
)
from agent.usage import UsageMeter
from agent.vectors import Vectors
from retrievers.similarity import cosine_matrix

POST_HOC_MIN_SIMILARITY = 0.35


class SentencePrefetch:
    """Embeds each sentence of the answer as soon as the next one begins, while the model is
    still writing: citation attachment and reflection then find its vector cached, and only
    the last sentence is encoded after the stream. With a model that writes slower than the
    encoder reads (any real one), that hides most of the answer's encoding behind model time.
    """

    def __init__(self, vectors: Vectors) -> None:
        self._vectors = vectors
        self._pending = ""
        self._tasks: list[asyncio.Task[list[list[float]]]] = []

    def feed(self, delta: str) -> None:
        """Only the unfinished tail is kept and searched for a sentence boundary: a boundary
        depends on the characters either side of it alone, so the sentences found are those
        `split_sentences` finds in the whole answer."""
        self._pending += delta
        last = next(reversed(list(SENTENCE_BOUNDARY.finditer(self._pending))), None)
        if last is None:
            return
        self._embed(split_sentences(self._pending[: last.start()]))
        self._pending = self._pending[last.end() :]

    def finish(self) -> None:
        """The stream ended: the last sentence is complete too. Its encode starts now, alongside
        the token count, instead of after it in citation attachment or reflection."""
        self._embed(split_sentences(self._pending))
        self._pending = ""

    def _embed(self, sentences: list[str]) -> None:
        for sentence in sentences:
            self._tasks.append(
                asyncio.create_task(self._vectors.embed([without_citations(sentence)]))
            )

    async def settle(self) -> None:
        """Wait for the encodes under way; a failed one is encoded again where it is needed."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


async def attach_citations(answer: str, evidence: list[Evidence], vectors: Vectors) -> str:
    """Cite each sentence with its most similar chunk, when similar enough.

    Reflection embeds the same sentences once the citations are stripped again, so it finds
    their vectors cached and runs no model of its own."""
    sentences = split_sentences(answer)
    if not sentences or not evidence:
        return answer
    sent_vecs = await vectors.embed(sentences)
    ev_vecs = await vectors.chunk_vectors([(e["id"], e["text"]) for e in evidence])
    out = []
    for sentence, scores in zip(sentences, cosine_matrix(sent_vecs, ev_vecs), strict=True):
        best = max(range(len(scores)), key=lambda i: scores[i])
        if scores[best] >= POST_HOC_MIN_SIMILARITY and not CITATION.search(sentence):
            sentence = before_end(sentence, f"[{best + 1}]")
        out.append(sentence)
    return " ".join(out)


def _instructions_flags(turn: str, evidence: list[Evidence]) -> list[dict[str, str]]:
    """`instructions_in_evidence` naming each block whose text tries to instruct the model, so
    a person reviewing the turn sees it (the fence keeps it data either way)."""
    found = [
        f"[{n}] {e['title']}: {', '.join(kinds)}"
        for n, e in enumerate(evidence, 1)
        if (kinds := instruction_like(e["text"]))
    ]
    return [flag(turn, "instructions_in_evidence", "; ".join(found))] if found else []


async def generate_answer(
    state: AgentState,
    runtime: Runtime[AgentContext],
    *,
    models: ChatModels,
    prompts: PromptSource,
    vectors: Vectors,
    usage: UsageMeter,
) -> dict[str, Any]:
    started = time.perf_counter()
    ctx = runtime.context
    turn = state["turn"]
    route = state.get("route") or {"kind": "direct"}
    evidence = list(state.get("evidence") or [])
    attempts = state.get("attempts", 0)
    update: dict[str, Any] = {"attempts": attempts + 1}
    flags: list[dict[str, str]] = []

    if route["kind"] != "direct" and not evidence:
        flags.append(flag(turn, "no_evidence", "nothing relevant was retrieved"))
        update.update({"answer": NO_EVIDENCE, "citations": [], "flags": flags})
        update["steps"] = [step(turn, "generate_answer", started, "no evidence: no LLM call")]
        return update
    budget = exhausted(state, ctx, llm_calls=1)
    if budget:
        answer = (
            extractive_answer(evidence, state["question"])
            if evidence
            else state.get("answer") or NO_EVIDENCE
        )
        flags.append(incomplete(turn, budget, "generate_answer"))
        update.update(
            {"answer": answer, "citations": citations_for(answer, evidence), "flags": flags}
        )
        update["steps"] = [step(turn, "generate_answer", started, f"{budget}: extractive answer")]
        return update

    if route["kind"] == "direct":
        template = prompts.get("direct")
        system = template.format()
    else:
        if attempts:
            template = prompts.get("generate_strict")
            problems = verdict_problems(state.get("verdict")) or ["- unsupported sentences"]
            system = template.format(
                evidence=format_evidence(evidence), problems="\n".join(problems)
            )
        else:
            template = prompts.get("generate")
            system = template.format(evidence=format_evidence(evidence))
            flags += _instructions_flags(turn, evidence)
    messages: list[BaseMessage] = [SystemMessage(system), HumanMessage(state["question"])]
    model = (await models.aget("generator", ctx)).bind(max_tokens=ctx.answer_max_tokens)
    full: AIMessageChunk | None = None
    prefetch = SentencePrefetch(vectors) if route["kind"] != "direct" else None
    # the prompt's token count, in case the model reports none, is taken while the model reads
    counting = asyncio.create_task(asyncio.to_thread(usage.count_tokens, [system]))
    call_started = time.perf_counter()
    try:
        config = template.call_config()
        config["tags"] = ["answer"]
        async for chunk in model.astream(messages, config=config):
            full = chunk if full is None else full + chunk  # type: ignore[assignment]
            if prefetch is not None:
                prefetch.feed(message_text(chunk))
    except asyncio.CancelledError:
        if prefetch is not None:
            prefetch.cancel()
        counting.cancel()
        raise
    except Exception as exc:
        if prefetch is not None:
            prefetch.cancel()
        counting.cancel()
        from agent.llm import llm_endpoint_error

        error = llm_endpoint_error(exc)
        message = str(error or exc)
        update["error"] = {"code": "llm_unavailable" if error else "llm_failed", "message": message}
        answer = extractive_answer(evidence, state["question"]) if evidence else NO_EVIDENCE
        flags.append(flag(turn, "llm_error", message))
        update.update(
            {"answer": answer, "citations": citations_for(answer, evidence), "flags": flags}
        )
        update["steps"] = [step(turn, "generate_answer", started, "LLM failed: extractive answer")]
        return update
    answer = message_text(full).strip() if full is not None else ""
    finished = time.perf_counter()
    ended = full.response_metadata.get("finish_reason") if full is not None else None
    if answer and ended not in ("stop", "tool_calls"):
        # a stream cut short reads like an answer: say that it is not a whole one
        why = (
            f"the answer reached answer_max_tokens ({ctx.answer_max_tokens})"
            if ended == "length"
            else f"the model's reply ended without finishing ({ended or 'stream cut'})"
        )
        flags.append(flag(turn, "truncated", why))
    if prefetch is not None:
        prefetch.finish()
    await asyncio.gather(counting, return_exceptions=True)
    update["usage"] = [
        await usage.aentry(
            turn, "generate_answer", "generator", messages, full, call_started, finished
        )
    ]
    if prefetch is not None:
        await prefetch.settle()
    if route["kind"] != "direct" and evidence:
        if not answer:
            answer = extractive_answer(evidence, state["question"])
            flags.append(flag(turn, "empty_answer", "the model wrote nothing"))
        elif not cited_numbers(answer, len(evidence)):
            answer = await attach_citations(answer, evidence, vectors)
            flags.append(
                flag(turn, "citations_added", "the model cited nothing; cited by similarity")
            )
    update.update({"answer": answer, "citations": citations_for(answer, evidence)})
    if flags:
        update["flags"] = flags
    update["steps"] = [step(turn, "generate_answer", started, f"attempt {attempts + 1}")]
    return update
