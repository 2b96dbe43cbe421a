"""retrieve_chunks: call each chosen collection's search tool (hybrid search + rerank).

Above effort `low`, three cheap hops follow, no LLM: documents whose titles the query or the
top chunks name (`alinked`), documents that name the top chunks' titles (`amentions`), and
documents the query names by title rank first. Multi-hop questions mostly hop through such a
named entity; each hop is a filtered or lexical search, no embedding.

Results of a retry are merged with what earlier attempts found, so a rewrite can only add
evidence, never lose it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from langgraph.runtime import Runtime

from agent.budget import flag
from agent.catalog import Catalog
from agent.context import AgentContext
from agent.nodes.common import step
from agent.resilience import collect_skipped
from agent.state import Evidence, ResearchState
from agent.tracing import observed_search
from tools.collection_search import title_candidates

MENTION_HOPS = 2
"""Top documents whose mentions elsewhere are searched for (reverse title links, not low)."""
MENTION_FIRST_RANK = 5
"""Where mention hits enter the rank interleave: after the search's top five, which hold gold
evidence far more often on HotpotQA dev (a third hop found next to nothing and is not run)."""


def merge_evidence(*groups: list[Evidence]) -> list[Evidence]:
    """Union by chunk id, best rank kept; ordered by rank (lists interleave), then relevance."""
    best: dict[str, Evidence] = {}
    for group in groups:
        for item in group:
            if item["id"] not in best or item["rank"] < best[item["id"]]["rank"]:
                best[item["id"]] = item
    return sorted(best.values(), key=lambda e: (e["rank"], -e["relevance"]))


def _by_rank(item: Evidence | dict[str, Any]) -> tuple[int, float]:
    return item["rank"], -item["relevance"]


async def retrieve_chunks(
    state: ResearchState, runtime: Runtime[AgentContext], *, catalog: Catalog
) -> dict[str, Any]:
    with collect_skipped() as skipped:
        update = await _retrieve(state, runtime, catalog)
    if skipped:
        update["flags"] = [flag(state["turn"], what, why) for what, why in skipped]
    return update


async def _retrieve(
    state: ResearchState, runtime: Runtime[AgentContext], catalog: Catalog
) -> dict[str, Any]:
    started = time.perf_counter()
    ctx = runtime.context
    query = state["query"]
    searches = await catalog.asearches(ctx, state["collections"] or None)
    per_collection = ctx.k
    results = await asyncio.gather(
        *(
            observed_search(
                f"search {s.info.name}",
                query,
                s.asearch(query, per_collection),
                {"collection": s.info.name, "k": per_collection, "hop": "search"},
            )
            for s in searches
        )
    )
    found: list[Evidence] = [item for group in results for item in group]  # type: ignore[misc]
    if ctx.effort != "low" and ctx.linked_docs:
        top = sorted((e for group in results for e in group[: ctx.link_from]), key=_by_rank)
        texts = [e["text"] for e in top]
        skip = list(dict.fromkeys(e["doc_id"] for e in top))
        linked = await asyncio.gather(
            *(
                observed_search(
                    f"linked titles {s.info.name}",
                    query,
                    s.alinked(query, texts, ctx.linked_docs, skip_docs=skip),
                    {"collection": s.info.name, "k": ctx.linked_docs, "hop": "linked titles"},
                )
                for s in searches
            )
        )
        found += [item for group in linked for item in group]  # type: ignore[misc]
        seen = list(dict.fromkeys(e["doc_id"] for e in found))
        titles = [
            t
            for t in dict.fromkeys(e["title"] for e in top)
            if t and t.lower() not in query.lower()
        ][:MENTION_HOPS]
        mentions = await asyncio.gather(
            *(
                observed_search(
                    f"mentions {s.info.name}",
                    query,
                    s.amentions(query, titles, skip_docs=seen),
                    {"collection": s.info.name, "titles": titles, "hop": "mentions"},
                )
                for s in searches
            )
        )
        hits: list[Evidence] = [item for group in mentions for item in group]  # type: ignore[misc]
        found += [{**e, "rank": e["rank"] + MENTION_FIRST_RANK} for e in hits]
        named = title_candidates(query)
        found = [{**e, "rank": 0} if e["title"] in named else e for e in found]
    candidates = merge_evidence(list(state.get("candidates") or []), found)
    tried = [*(state.get("queries_tried") or []), query]
    note = f"{len(found)} chunks from {len(searches)} collection(s) for {query!r}"
    runtime.stream_writer(
        {
            "type": "retrieval",
            "index": state["index"],
            "query": query,
            "chunks": [
                {k: c[k] for k in ("id", "title", "collection", "relevance", "retrieval_score")}
                for c in merge_evidence(found)
            ],
        }
    )
    return {
        "candidates": candidates,
        "queries_tried": tried,
        "steps": [step(state["turn"], "retrieve_chunks", started, note)],
    }
