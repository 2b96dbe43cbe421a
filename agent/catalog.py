"""The collections a turn may search, and a search tool for each.

Collections are walled by tenant. A tenant sees a collection when it holds documents of that
tenant, when the tenant has described it, or when the deployment shares it with every tenant
(`AGENTRAG_SHARED_COLLECTIONS`: the default tenant's documents in it, those `agentrag ingest`
writes, are then readable by all). What a tenant sees of a collection is its own: its own
description and its own count of chunks; another tenant's documents, descriptions and even the
names of collections only another tenant uses never reach it.

Listing counts points per collection and tenant (a round trip each on a Qdrant server), so a
tenant's list is reused for `COLLECTIONS_TTL_S`; this process's own changes call `forget`.
Search tools share the process's reranker and cache the vectors they see.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property

from agent.context import AgentContext
from agent.resilience import transports_for
from agent.settings import Settings
from agent.vectors import Vectors
from retrievers.rerank import Reranker, make_reranker
from retrievers.stack import RetrievalStack
from retrievers.store import CollectionInfo, PayloadFilter, VectorStore
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
        self._listed: dict[str, tuple[float, list[CollectionInfo]]] = {}
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
        url = self._settings.web_search_url
        return WebSearch(
            url,
            api_key=key.get_secret_value() if key else None,
            transport=transports_for(self._settings, "web_search", url)[1],
        )

    def collections(
        self, allowed: Sequence[str] | None, tenant: str | None = None
    ) -> list[CollectionInfo]:
        """The collections `tenant` may use (all it sees, or those named in `allowed`), each
        with that tenant's description and chunk count."""
        tenant = tenant or self._settings.default_tenant
        now = time.monotonic()
        with self._lock:
            listed = self._listed.get(tenant)
        if listed is None or now - listed[0] > COLLECTIONS_TTL_S:
            listed = (now, self._visible(tenant))
            with self._lock:
                self._listed[tenant] = listed
        infos = listed[1]
        if allowed is not None:
            names = set(allowed)
            infos = [i for i in infos if i.name in names]
        return infos

    def tenants(self, collection: str, tenant: str) -> str | list[str]:
        """Whose documents `tenant` reads in `collection`: its own, and in a shared collection
        the default tenant's too."""
        default = self._settings.default_tenant
        if collection in self._settings.shared_collections and tenant != default:
            return [tenant, default]
        return tenant

    def _visible(self, tenant: str) -> list[CollectionInfo]:
        store = self._stack.store
        default = self._settings.default_tenant
        out = []
        for name in store.collection_names():
            info = store.get_collection(name, count=False)
            readers = self.tenants(name, tenant)
            points = store.count(name, PayloadFilter(must={"tenant": readers}))
            shared = name in self._settings.shared_collections
            if not (points or shared or tenant in info.descriptions):
                continue
            description = info.description_for(tenant, default)
            if not description and shared:
                description = info.description_for(default, default)
            out.append(replace(info, points=points, description=description, descriptions={}))
        return out

    def forget(self) -> None:
        """Read the collection lists again at the next turn (after an ingest or a delete)."""
        with self._lock:
            self._listed.clear()

    async def asearches(
        self, ctx: AgentContext, names: Sequence[str] | None
    ) -> list[CollectionSearch]:
        """Search tools for the allowed collections, built off the event loop (reading collection
        metadata touches the disk; the first use may load the reranker)."""

        def build() -> list[CollectionSearch]:
            return [self.search(info, ctx) for info in self.collections(names, ctx.tenant)]

        return await asyncio.to_thread(build)

    def search(self, info: CollectionInfo, ctx: AgentContext) -> CollectionSearch:
        return CollectionSearch(
            self._stack.retriever,
            self.reranker,
            info,
            self.tenants(info.name, ctx.tenant),
            candidates=ctx.candidates,
            embed_query=self._vectors.embed_query,
            remember=self._vectors.remember_chunks,
            groups=ctx.groups,
        )

    async def aclose(self) -> None:
        """Close the web search client (bound to the event loop that used it); a later turn,
        on another loop, makes a new one."""
        web = self.__dict__.pop("web_search", None)
        if web is not None:
            await web.aclose()
