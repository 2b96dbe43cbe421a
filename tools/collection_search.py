"""One LangChain tool per collection: hybrid search, then rerank, returning scored chunks.

The tool's name and description come from the collection, so an LLM that picks tools picks
collections, and the agent's own retrieve node calls the very same tool.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from retrievers.rerank import EmbeddingReranker, Reranker
from retrievers.search import HybridRetriever, RetrievedChunk
from retrievers.store import CollectionInfo, PayloadFilter


class SearchArgs(BaseModel):
    query: str = Field(description="A focused search query: names and key terms.")
    k: int = Field(default=6, ge=1, le=50, description="How many chunks to return.")


def tool_name(collection: str) -> str:
    return "search_" + re.sub(r"[^A-Za-z0-9_]", "_", collection)


def chunk_record(chunk: RetrievedChunk, relevance: float, rank: int) -> dict[str, Any]:
    return {
        "id": chunk.id,
        "collection": chunk.collection,
        "doc_id": chunk.doc_id,
        "title": chunk.title,
        "source": chunk.source,
        "heading_path": list(chunk.heading_path),
        "chunk_index": chunk.chunk_index,
        "text": chunk.text,
        "retrieval_score": chunk.score,
        "relevance": relevance,
        "rank": rank,
    }


QueryEmbedder = Callable[[str], Awaitable[list[float]]]


class CollectionSearch:
    """Hybrid search over one collection for one tenant, reranked.

    The query is embedded once (through `embed_query`, which callers may cache) and the stored
    chunk vectors come back with the hits, so the no-cross-encoder reranker scores by cosine
    without running the model again; `remember` receives those vectors for later checks.
    """

    def __init__(
        self,
        retriever: HybridRetriever,
        reranker: Reranker,
        info: CollectionInfo,
        tenant: str,
        candidates: int = 24,
        embed_query: QueryEmbedder | None = None,
        remember: Callable[[dict[str, list[float]]], None] | None = None,
    ) -> None:
        self.retriever = retriever
        self.reranker = reranker
        self.info = info
        self.tenant = tenant
        self.candidates = candidates
        self._embed_query = embed_query
        self._remember = remember

    async def asearch(self, query: str, k: int = 6) -> list[dict[str, Any]]:
        if self._embed_query is not None:
            vector = await self._embed_query(query)
        else:
            vector = await asyncio.to_thread(self.retriever.embeddings.embed_query, query)
        chunks = await asyncio.to_thread(
            self.retriever.search_vectors,
            query,
            self.info.name,
            dense=vector,
            k=max(k, self.candidates),
            mode="hybrid",
            tenant=self.tenant,
            with_dense=True,
        )
        if not chunks:
            return []
        vectors = {c.id: c.dense for c in chunks if c.dense is not None}
        if self._remember is not None:
            self._remember(vectors)
        if isinstance(self.reranker, EmbeddingReranker) and len(vectors) == len(chunks):
            # no cross-encoder: keep the fused hybrid order (it ranks better than cosine alone,
            # measured on HotpotQA dev) and attach cosine as the relevance that grading reads
            scores = self.reranker.rerank_vectors(vector, [vectors[c.id] for c in chunks], None)
            by_index = {r.index: r.score for r in scores}
            return [chunk_record(c, by_index[i], i) for i, c in enumerate(chunks[:k])]
        ranked = await self.reranker.arerank(query, [_passage(c) for c in chunks], top_n=k)
        return [chunk_record(chunks[r.index], r.score, rank) for rank, r in enumerate(ranked)]

    async def alinked(self, query: str, texts: list[str], k: int = 4) -> list[dict[str, Any]]:
        """Chunks of documents whose *title* is named in the query or in these texts.

        Multi-hop questions hop through an entity: the second document is usually the one the
        first names (a comparison names both in the question). Following those names is a
        filtered vector search, no LLM."""
        names = sorted(title_candidates(" ".join([query, *texts])))[:MAX_LINKED_NAMES]
        if not names:
            return []
        vector = (
            await self._embed_query(query)
            if self._embed_query is not None
            else await asyncio.to_thread(self.retriever.embeddings.embed_query, query)
        )
        chunks = await asyncio.to_thread(
            self.retriever.search_vectors,
            query,
            self.info.name,
            dense=vector,
            k=k,
            mode="dense",
            tenant=self.tenant,
            where=PayloadFilter(must={"title": names}),
            with_dense=True,
        )
        if self._remember is not None:
            self._remember({c.id: c.dense for c in chunks if c.dense is not None})
        return [chunk_record(c, c.score, i) for i, c in enumerate(chunks)]

    def as_tool(self) -> BaseTool:
        description = self.info.description or f"Documents in the {self.info.name} collection."

        async def run(query: str, k: int = 6) -> list[dict[str, Any]]:
            return await self.asearch(query, k)

        def run_sync(query: str, k: int = 6) -> list[dict[str, Any]]:
            return asyncio.run(self.asearch(query, k))

        return StructuredTool.from_function(
            func=run_sync,
            coroutine=run,
            name=tool_name(self.info.name),
            description=f"Search {self.info.name}: {description}",
            args_schema=SearchArgs,
        )


MAX_LINKED_NAMES = 300
_NAME = re.compile(
    r"[A-Z0-9][\w'\u2019.&-]*(?:\s+(?:(?:of|the|and|de|for|in|on|van|von|la|le|du|del|des)\s+)?"
    r"[A-Z0-9][\w'\u2019.&-]*)*"
)


def title_candidates(text: str) -> set[str]:
    """Capitalised phrases and their sub-phrases (up to four words): possible document titles."""
    out: set[str] = set()
    for match in _NAME.finditer(text):
        parts = match.group(0).strip(" .,'").split()
        for i in range(len(parts)):
            for j in range(i + 1, min(len(parts), i + 4) + 1):
                phrase = " ".join(parts[i:j]).strip(" .,'")
                if len(phrase) > 2:
                    out.add(phrase)
    return out


def _passage(chunk: RetrievedChunk) -> str:
    context = " > ".join(part for part in (chunk.title, *chunk.heading_path) if part)
    return f"{context}\n{chunk.text}" if context else chunk.text
