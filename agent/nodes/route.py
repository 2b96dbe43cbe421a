"""route_query: answer directly, search some collections, or decompose first.

Decided without an LLM by default: a collection's score is how close its best chunks are to the
query (dense similarity of the top 3) blended with how close its description is; chit-chat is a
message that matches a greeting pattern or scores low everywhere. Only at effort `high`, with a
model that calls tools, does the planner pick collections by tool choice among the candidates.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.budget import exhausted, flag
from agent.catalog import Catalog
from agent.chat_models import ChatModels
from agent.context import AgentContext
from agent.edges import after_route
from agent.nodes.common import step
from agent.prompt_source import PromptSource
from agent.state import AgentState, Route, RouteKind
from agent.text import COMPARISON
from agent.usage import UsageMeter
from agent.vectors import Vectors
from retrievers.similarity import cosine
from retrievers.store import CollectionInfo, PayloadFilter
from tools.collection_search import tool_name

_CHIT_CHAT = re.compile(
    r"^\s*(hi|hello|hey|howdy|good (morning|afternoon|evening)|thanks?( you)?|thank you|"
    r"cheers|bye|goodbye|see you|ok(ay)?|cool|great|who are you|what are you|how are you)"
    r"\b[\s!?.,]*(there|agentrag|again|so much|a lot)?[\s!?.]*$",
    re.IGNORECASE,
)
_MULTI_PART = re.compile(r"\?.+\?|\band (what|who|when|where|why|how|which)\b", re.IGNORECASE)
_BRIDGE = re.compile(
    r"\b(the|a|an) (\w+ ){1,2}(that|which|who|whom|whose|where)\b"
    r"|\bthe \w+ (of|for|by|from) (the|a|an) \w+",
    re.IGNORECASE,
)

MIN_DECOMPOSE_WORDS = 8
DESCRIPTION_WEIGHT = 0.3
SELECT_MARGIN = 0.08


def is_chit_chat(text: str) -> bool:
    return bool(_CHIT_CHAT.match(text))


def needs_decomposition(question: str) -> bool:
    """Comparisons, several questions in one, or a bridge through another entity."""
    if len(question.split()) < MIN_DECOMPOSE_WORDS:
        return False
    return bool(
        _MULTI_PART.search(question) or COMPARISON.search(question) or _BRIDGE.search(question)
    )


async def score_collections(
    query: str,
    infos: list[CollectionInfo],
    ctx: AgentContext,
    catalog: Catalog,
    vectors: Vectors,
) -> dict[str, float]:
    vector = await vectors.embed_query(query)
    store = catalog.store

    def one(info: CollectionInfo) -> float:
        where = PayloadFilter(must={"tenant": catalog.tenants(info.name, ctx.tenant)})
        hits = store.query(info.name, dense=vector, limit=3, where=where)
        content = sum(h.score for h in hits) / len(hits) if hits else 0.0
        described = vectors.description(info)
        if described is None:
            return content
        return (1 - DESCRIPTION_WEIGHT) * content + DESCRIPTION_WEIGHT * cosine(vector, described)

    scores = await asyncio.gather(*(asyncio.to_thread(one, info) for info in infos))
    return {info.name: round(score, 4) for info, score in zip(infos, scores, strict=True)}


async def route_query(
    state: AgentState,
    runtime: Runtime[AgentContext],
    *,
    catalog: Catalog,
    models: ChatModels,
    prompts: PromptSource,
    vectors: Vectors,
    usage: UsageMeter,
) -> Command[Literal["generate_answer", "decompose_query", "research"]]:
    """Records the route (and, for one search, the one-query plan); `after_route` follows it."""
    started = time.perf_counter()
    ctx = runtime.context
    turn, query = state["turn"], state["query"]
    update: dict[str, Any] = {}
    infos = await asyncio.to_thread(catalog.collections, ctx.collections, ctx.tenant)
    route: Route
    if not query or is_chit_chat(query):
        route = {"kind": "direct", "collections": [], "scores": {}, "reason": "chit-chat"}
    elif not infos:
        route = {"kind": "direct", "collections": [], "scores": {}, "reason": "no collections"}
        update["flags"] = [flag(turn, "no_collections", "no collection to search")]
    else:
        scores = await score_collections(query, infos, ctx, catalog, vectors)
        best = max(scores.values())
        chosen = sorted(n for n, s in scores.items() if s >= best - SELECT_MARGIN)
        if best < ctx.route_threshold and len(query.split()) <= 3:
            route = {"kind": "direct", "collections": [], "scores": scores, "reason": "off-topic"}
        else:
            reason = f"best collection score {best:.2f}"
            if best < ctx.route_threshold:
                chosen, reason = sorted(scores), "low similarity everywhere: searching all"
            elif ctx.effort == "high" and models.supports_tools and len(chosen) > 1:
                picked, entry = await _tool_choice(
                    state, ctx, chosen, catalog, models, prompts, usage
                )
                if entry is not None:
                    update["usage"] = [entry]
                if picked:
                    chosen, reason = picked, "planner tool choice"
            kind: RouteKind = (
                "decompose"
                if ctx.effort != "low" and needs_decomposition(state["question"])
                else "retrieve"
            )
            route = {"kind": kind, "collections": chosen, "scores": scores, "reason": reason}
    update["route"] = route
    update["steps"] = [step(turn, "route_query", started, f"{route['kind']}: {route['reason']}")]
    if route["kind"] == "retrieve":
        update["plan"] = {
            "mode": "single",
            "subqueries": [{"index": 0, "query": query}],
            "source": "question",
        }
    return Command(update=update, goto=after_route(state, update))


async def _tool_choice(
    state: AgentState,
    ctx: AgentContext,
    candidates: list[str],
    catalog: Catalog,
    models: ChatModels,
    prompts: PromptSource,
    usage: UsageMeter,
) -> tuple[list[str], Any]:
    if exhausted(state, ctx, llm_calls=1):
        return [], None
    tools = [s.as_tool() for s in await catalog.asearches(ctx, candidates)]
    by_tool = {tool_name(name): name for name in candidates}
    template = prompts.get("choose_collections")
    messages = [
        SystemMessage(template.format()),
        HumanMessage(state["query"]),
    ]
    started = time.perf_counter()
    try:
        model = (await models.aget("planner", ctx)).bind_tools(tools)
        reply = await model.ainvoke(messages, config=template.call_config())
    except Exception:
        return [], None
    picked = sorted(
        {by_tool[c["name"]] for c in getattr(reply, "tool_calls", []) if c["name"] in by_tool}
    )
    return picked, await usage.aentry(
        state["turn"], "route_query", "planner", messages, reply, started
    )
