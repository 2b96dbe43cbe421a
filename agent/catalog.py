"""The collections a turn may search, and a search tool for each.

Listing collections counts every collection's points (a round trip per collection on a Qdrant
server), so the list is reused for `COLLECTIONS_TTL_S`; this process's own changes call
`forget`. Search tools share the process's reranker and cache the vectors they see.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from functools import cached_property

from agent.context import AgentContext
from agent.settings import Settings
from agent.vectors import Vectors
from retrievers.rerank import Reranker, make_reranker
from retrievers.stack import RetrievalStack
from retrievers.store import CollectionInfo, VectorStore
from tools.collection_search import CollectionSearch
from tools.web_search import WebSearch

COLLECTIONS_TTL_S = 2.0
"""How long a turn reuses the collection list read by an earlier one: a collection created or
described by another process is seen at most this late."""


class Catalog:
    def __init__(
        self,
        settings: Settings,
        stack: RetrievalStack,
        vectors: Vectors,
        reranker: Reranker | None = None,
    ) -> None:
        self._settings = settings
        self._stack = stack
        self._vectors = vectors
        self._given_reranker = reranker
        self._listed: tuple[float, list[CollectionInfo]] | None = None
        self._lock = threading.Lock()

    @property
    def store(self) -> VectorStore:
        return self._stack.store

    @cached_property
    def reranker(self) -> Reranker:
        return self._given_reranker or make_reranker(self._settings, self._stack.embeddings)

    @cached_property
    def web_search(self) -> WebSearch | None:
        """The optional web fallback for sub-queries the documents cannot answer."""
        if not self._settings.web_search_url:
            return None
        key = self._settings.web_search_api_key
        return WebSearch(
            self._settings.web_search_url, api_key=key.get_secret_value() if key else None
        )

    def collections(self, allowed: Sequence[str] | None) -> list[CollectionInfo]:
        """The collections a turn may use (all, or those named in `allowed`)."""
        now = time.monotonic()
        with self._lock:
            listed = self._listed
        if listed is None or now - listed[0] > COLLECTIONS_TTL_S:
            listed = (now, self._stack.store.list_collections())
            with self._lock:
                self._listed = listed
        infos = listed[1]
        if allowed is not None:
            names = set(allowed)
            infos = [i for i in infos if i.name in names]
        return infos

    def forget(self) -> None:
        """Read the collection list again at the next turn (after an ingest or a delete)."""
        with self._lock:
            self._listed = None

    async def asearches(
        self, ctx: AgentContext, names: Sequence[str] | None
    ) -> list[CollectionSearch]:
        """Search tools for the allowed collections, built off the event loop (reading collection
        metadata touches the disk; the first use may load the reranker)."""

        def build() -> list[CollectionSearch]:
            return [self.search(info, ctx) for info in self.collections(names)]

        return await asyncio.to_thread(build)

    def search(self, info: CollectionInfo, ctx: AgentContext) -> CollectionSearch:
        return CollectionSearch(
            self._stack.retriever,
            self.reranker,
            info,
            ctx.tenant,
            candidates=ctx.candidates,
            embed_query=self._vectors.embed_query,
            remember=self._vectors.remember_chunks,
        )

    async def aclose(self) -> None:
        """Close the web search client (bound to the event loop that used it); a later turn,
        on another loop, makes a new one."""
        web = self.__dict__.pop("web_search", None)
        if web is not None:
            await web.aclose()
