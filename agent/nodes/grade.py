"""grade_evidence (corrective RAG): keep, retry with a better query, or fall back.

Relevance is the reranker's score of each chunk against its sub-query, computed in one batch
when the chunks were retrieved: no LLM call. The set is `correct` when a chunk clears the
relevance threshold, `incorrect` when none clears the ambiguous one, `ambiguous` between. Only
at effort `high` does the LLM judge look at ambiguous chunks (one call for all of them).
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from langchain_core.messages import SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.budget import flag, research_budget
from agent.catalog import Catalog
from agent.chat_models import ChatModels
from agent.context import AgentContext
from agent.edges import after_grade
from agent.errors import AgentragError
from agent.injection import fenced
from agent.nodes.common import step
from agent.prompt_source import PromptSource
from agent.state import Evidence, Grade, ResearchState
from agent.text import message_text
from agent.usage import UsageMeter
from agent.vectors import Vectors
from retrievers.similarity import cosine

MIN_EVIDENCE = 2
"""Fewer kept chunks than this counts as thin evidence and is worth a retry."""


def classify(candidates: list[Evidence], ctx: AgentContext) -> Grade:
    best = max((c["relevance"] for c in candidates), default=0.0)
    if best >= ctx.relevance_threshold:
        return "correct"
    if best >= ctx.ambiguous_threshold:
        return "ambiguous"
    return "incorrect"


async def grade_evidence(
    state: ResearchState,
    runtime: Runtime[AgentContext],
    *,
    catalog: Catalog,
    models: ChatModels,
    prompts: PromptSource,
    vectors: Vectors,
    usage: UsageMeter,
) -> Command[Literal["rewrite_query", "finish_research"]]:
    """Keeps the relevant chunks and sets `retry` when the evidence is thin and a rewrite is
    still within budget; `after_grade` reads it."""
    started = time.perf_counter()
    ctx = runtime.context
    turn = state["turn"]
    candidates = list(state.get("candidates") or [])
    grade = classify(candidates, ctx)
    kept = [c for c in candidates if c["relevance"] >= ctx.relevance_threshold]
    ambiguous = [
        c for c in candidates if ctx.ambiguous_threshold <= c["relevance"] < ctx.relevance_threshold
    ]
    update: dict[str, Any] = {"retry": False}
    if ambiguous and ctx.effort == "high" and not research_budget(state, ctx, 1):
        judged, entry = await _judge(
            state["query"], ambiguous[: ctx.k], ctx, turn, models, prompts, usage
        )
        if entry is not None:
            update["usage"] = [entry]
            kept += judged
            if judged and grade == "ambiguous":
                grade = "correct"
    elif ambiguous:
        kept += ambiguous  # without a judge, ambiguous chunks stay: better some context than none
    kept = sorted(kept, key=lambda c: (c["rank"], -c["relevance"]))[: ctx.k + ctx.linked_docs]
    dropped = len(candidates) - len(kept)
    update.update({"kept": kept, "grade": grade, "dropped": dropped})
    runtime.stream_writer(
        {
            "type": "grade",
            "index": state["index"],
            "grade": grade,
            "kept": len(update["kept"]),
            "dropped": dropped,
        }
    )
    rewrites = state.get("rewrites", 0)
    thin = grade == "incorrect" or len(kept) < MIN_EVIDENCE
    note = f"{grade}: kept {len(kept)}, dropped {dropped}"
    if thin and rewrites < ctx.max_rewrites:
        budget = research_budget(state, ctx, 0)
        if budget:
            update["flags"] = [flag(turn, "incomplete", f"{budget} reached in grade_evidence")]
        else:
            update["retry"] = True
            update["steps"] = [step(turn, "grade_evidence", started, note + " -> rewrite")]
            return Command(update=update, goto=after_grade(update))
    if thin:
        update["fallback"] = True
        web = (
            await _web_fallback(state["query"], ctx, catalog, vectors) if catalog.web_search else []
        )
        if web:
            update["kept"] = sorted([*kept, *web], key=lambda c: (c["rank"], -c["relevance"]))[
                : ctx.k
            ]
            update["flags"] = [*update.get("flags", []), flag(turn, "web_fallback", state["query"])]
        elif not kept:
            update["kept"] = candidates[: ctx.k]  # the best there is, marked as a fallback
    update["steps"] = [step(turn, "grade_evidence", started, note)]
    return Command(update=update, goto=after_grade(update))


async def _web_fallback(
    query: str, ctx: AgentContext, catalog: Catalog, vectors: Vectors
) -> list[Evidence]:
    """Web results as evidence, scored against the query like any chunk; failures are flags."""
    assert catalog.web_search is not None
    try:
        results = await catalog.web_search.asearch(query, ctx.k)
    except AgentragError:
        return []
    if not results:
        return []
    query_vector = await vectors.embed_query(query)
    result_vectors = await vectors.embed([f"{r['title']}\n{r['text']}" for r in results])
    evidence: list[Evidence] = []
    for r, vector in zip(results, result_vectors, strict=True):
        relevance = cosine(query_vector, vector)
        if relevance >= ctx.ambiguous_threshold:
            evidence.append(
                {
                    "id": f"web:{r['url']}",
                    "collection": "web",
                    "doc_id": r["url"],
                    "title": r["title"],
                    "source": r["url"],
                    "heading_path": [],
                    "chunk_index": 0,
                    "text": r["text"],
                    "retrieval_score": relevance,
                    "relevance": relevance,
                    "rank": len(evidence),
                }
            )
    return evidence


async def _judge(
    query: str,
    chunks: list[Evidence],
    ctx: AgentContext,
    turn: str,
    models: ChatModels,
    prompts: PromptSource,
    usage: UsageMeter,
) -> tuple[list[Evidence], Any]:
    listing = "\n\n".join(
        f"[{i + 1}] {fenced(c['title'])}: {fenced(c['text'][:600])}" for i, c in enumerate(chunks)
    )
    template = prompts.get("judge")
    prompt = template.format(question=query, passage=listing)
    prompt += "\nIf several passages are listed, answer with the numbers of the helpful ones."
    messages = [SystemMessage(prompt)]
    started = time.perf_counter()
    try:
        reply = await (await models.aget("judge", ctx)).ainvoke(
            messages, config=template.call_config()
        )
    except Exception:
        return [], None
    text = message_text(reply).lower()
    if len(chunks) == 1:
        chosen = chunks if text.strip().startswith("yes") else []
    else:
        numbers = {int(n) for n in re.findall(r"\d+", text)}
        chosen = [c for i, c in enumerate(chunks) if i + 1 in numbers]
    return chosen, await usage.aentry(turn, "grade_evidence", "judge", messages, reply, started)
