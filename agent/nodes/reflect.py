"""reflect_answer: is every sentence supported by the evidence it cites, and is the question
answered? If not, regenerate once within budget; the verdicts travel with the answer.

Support is measured without an LLM: a sentence is supported when it is close in meaning to a
sentence of a chunk it cites (embedding similarity) or most of its content words appear there
(lexical support). At effort `high` an LLM judge also reads the answer against the evidence.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from langchain_core.messages import AIMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.budget import exhausted, flag
from agent.chat_models import ChatModels
from agent.context import AgentContext
from agent.edges import after_reflect
from agent.nodes.common import step
from agent.prompt_source import PromptSource
from agent.state import AgentState, Evidence, SentenceVerdict, Verdict
from agent.text import (
    CITATION,
    NO_EVIDENCE,
    cited_numbers,
    format_evidence,
    keywords,
    message_text,
    split_sentences,
    without_citations,
)
from agent.usage import UsageMeter
from agent.vectors import Vectors
from retrievers.similarity import cosine, cosine_matrix, mean_vector

LEXICAL_SUPPORT = 0.7
MIN_WORDS = 4
ANSWERS_SIMILARITY = 0.2
MAX_ATTEMPTS = 2
PIECES_PER_SENTENCE = 3
_REFUSAL = re.compile(
    r"(could not find|do(es)? not (say|contain|mention)|no information|"
    r"not in the documents|I don't know)",
    re.IGNORECASE,
)


def lexical_support(sentence: str, texts: list[str]) -> float:
    words = [w.lower() for w in keywords(sentence)]
    if not words:
        return 1.0
    haystack = " ".join(texts).lower()
    return sum(1 for w in words if w in haystack) / len(words)


async def judge_sentences(
    answer: str, evidence: list[Evidence], ctx: AgentContext, vectors: Vectors
) -> tuple[list[SentenceVerdict], list[float]]:
    """Chunk-level similarity and word overlap first (stored vectors: cheap); the answer's
    direction, for `answers_question`, is the mean of its sentences'. Only sentences
    still unsupported, and whose verdict a closer look can still change (cited, not short), are
    compared with the sentences of the chunks they cite that share most words with them."""
    sentences = split_sentences(answer) or [answer]
    texts = [CITATION.sub("", s).strip() for s in sentences]
    # the very strings `attach_citations` embedded before it added the citations, and those
    # `SentencePrefetch` embedded while the answer streamed: found cached
    plain = [without_citations(s) for s in sentences]
    sent_vecs = await vectors.embed(plain)
    answer_vec = mean_vector(sent_vecs)
    chunk_vecs = await vectors.chunk_vectors([(e["id"], e["text"]) for e in evidence])
    scopes: list[set[int]] = []
    semantic: list[float] = []
    lexical: list[float] = []
    to_chunks = cosine_matrix(sent_vecs, chunk_vecs)
    for sentence, text, sims in zip(sentences, texts, to_chunks, strict=True):
        scope = set(cited_numbers(sentence, len(evidence))) or set(range(1, len(evidence) + 1))
        scopes.append(scope)
        semantic.append(max(sims[n - 1] for n in scope))
        lexical.append(lexical_support(text, [evidence[n - 1]["text"] for n in scope]))
    unresolved = [
        i
        for i in range(len(sentences))
        if semantic[i] < ctx.support_threshold
        and lexical[i] < LEXICAL_SUPPORT
        and _verdict_open(sentences[i], texts[i], len(evidence))
    ]
    if unresolved:
        chosen = {i: _closest_pieces(texts[i], scopes[i], evidence) for i in unresolved}
        pieces = list(dict.fromkeys(p for i in unresolved for p in chosen[i]))
        piece_vecs = dict(zip(pieces, await vectors.embed(pieces), strict=True))
        for i in unresolved:
            if chosen[i]:
                sims = cosine_matrix([sent_vecs[i]], [piece_vecs[p] for p in chosen[i]])[0]
                semantic[i] = max(semantic[i], *sims)
    out: list[SentenceVerdict] = []
    for i, (sentence, text) in enumerate(zip(sentences, texts, strict=True)):
        cited = cited_numbers(sentence, len(evidence))
        short = _is_short(text)
        supported = short or semantic[i] >= ctx.support_threshold or lexical[i] >= LEXICAL_SUPPORT
        out.append(
            {
                "sentence": sentence,
                "cited": cited,
                "support": round(max(semantic[i], lexical[i]), 3),
                "supported": bool(supported and (cited or short)),
            }
        )
    return out, answer_vec


def _closest_pieces(text: str, scope: set[int], evidence: list[Evidence]) -> list[str]:
    """The sentences of the cited chunks that share most content words with `text`, at most
    `PIECES_PER_SENTENCE`, none that shares no word. Each is an encode (4-7 ms on a 2-core
    CPU); a sentence that supports another in meaning shares its names and numbers. Measured
    on 343 unresolved answer sentences (HotpotQA dev, scripted and bundled-model answers):
    1,241 chunk sentences encoded before, 457 after, the same verdict for every sentence; with
    only the best one, 2 verdicts changed."""
    words = [w.lower() for w in keywords(text)]
    pieces = [p for n in sorted(scope) for p in split_sentences(evidence[n - 1]["text"])[:30]]
    overlap = {p: sum(1 for w in words if w in p.lower()) for p in dict.fromkeys(pieces)}
    ranked = sorted((p for p, k in overlap.items() if k), key=lambda p: -overlap[p])
    return ranked[:PIECES_PER_SENTENCE]


def _is_short(text: str) -> bool:
    """Too few words to check: accepted as supported (a connective, "Yes.", a name)."""
    return len(text.split()) < MIN_WORDS


def _verdict_open(sentence: str, text: str, evidence_count: int) -> bool:
    """Whether more similarity can change this sentence's verdict: a short sentence is supported
    and an uncited one unsupported whatever its similarity."""
    return not _is_short(text) and bool(cited_numbers(sentence, evidence_count))


async def reflect_answer(
    state: AgentState,
    runtime: Runtime[AgentContext],
    *,
    models: ChatModels,
    prompts: PromptSource,
    vectors: Vectors,
    usage: UsageMeter,
) -> Command[Literal["generate_answer", "__end__"]]:
    """Records the verdict; its action (`regenerate` or not) is what `after_reflect` follows.
    A verdict that ends the turn also adds the answer to the conversation."""
    started = time.perf_counter()
    ctx = runtime.context
    turn = state["turn"]
    answer = state.get("answer", "")
    evidence = list(state.get("evidence") or [])
    route = state.get("route") or {"kind": "direct"}
    update: dict[str, Any] = {}
    if route["kind"] == "direct" or not evidence or answer == NO_EVIDENCE:
        verdict: Verdict = {
            "grounded": True,
            "answers_question": route["kind"] == "direct",
            "sentences": [],
            "method": "similarity",
            "action": "accept",
        }
        return _route(_finish(state, update, verdict, started, "nothing to check"))

    sentences, a_vec = await judge_sentences(answer, evidence, ctx, vectors)
    grounded = bool(sentences) and all(s["supported"] for s in sentences)
    q_vec = await vectors.embed_query(state["query"])
    answers = not _REFUSAL.search(answer) and cosine(q_vec, a_vec) >= ANSWERS_SIMILARITY
    method: Literal["similarity", "llm"] = "similarity"
    if ctx.effort == "high" and not exhausted(state, ctx, llm_calls=1):
        verdict_llm, entry = await _llm_judge(state, answer, evidence, ctx, models, prompts, usage)
        if entry is not None:
            update["usage"] = [entry]
            grounded, method = grounded and verdict_llm, "llm"
    attempts = state.get("attempts", 1)
    if grounded and answers:
        action: Literal["accept", "regenerate", "give_up"] = "accept"
    elif attempts < MAX_ATTEMPTS and not exhausted(state, ctx, llm_calls=1):
        action = "regenerate"
    else:
        action = "give_up"
    verdict = {
        "grounded": grounded,
        "answers_question": answers,
        "sentences": sentences,
        "method": method,
        "action": action,
    }
    if action == "regenerate":
        update["verdict"] = verdict
        update["steps"] = [step(turn, "reflect_answer", started, "unsupported: regenerate")]
        return _route(update)
    if action == "give_up":
        problems = [] if grounded else ["ungrounded"]
        problems += [] if answers else ["unanswered"]
        budget = exhausted(state, ctx, llm_calls=1)
        update["flags"] = [flag(turn, p, f"after {attempts} attempt(s)") for p in problems]
        if budget and attempts < MAX_ATTEMPTS:
            update["flags"].append(flag(turn, "incomplete", f"{budget} reached in reflect_answer"))
    return _route(_finish(state, update, verdict, started, action))


def _route(update: dict[str, Any]) -> Command[Literal["generate_answer", "__end__"]]:
    return Command(update=update, goto=after_reflect(update))


def _finish(
    state: AgentState, update: dict[str, Any], verdict: Verdict, started: float, note: str
) -> dict[str, Any]:
    update["verdict"] = verdict
    update["messages"] = [
        AIMessage(
            content=state.get("answer", ""),
            additional_kwargs={"citations": state.get("citations") or []},
        )
    ]
    update["steps"] = [step(state["turn"], "reflect_answer", started, note)]
    return update


async def _llm_judge(
    state: AgentState,
    answer: str,
    evidence: list[Evidence],
    ctx: AgentContext,
    models: ChatModels,
    prompts: PromptSource,
    usage: UsageMeter,
) -> tuple[bool, Any]:
    template = prompts.get("check_answer")
    messages = [
        SystemMessage(
            template.format(
                evidence=format_evidence(evidence), question=state["question"], answer=answer
            )
        )
    ]
    started = time.perf_counter()
    try:
        reply = await (await models.aget("judge", ctx)).ainvoke(
            messages, config=template.call_config()
        )
    except Exception:
        return True, None
    ok = message_text(reply).strip().lower().startswith("yes")
    return ok, await usage.aentry(
        state["turn"], "reflect_answer", "judge", messages, reply, started
    )
