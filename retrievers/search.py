"""Query side of the retrieval layer: embed the query both ways and ask the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from retrievers.embeddings import EmbeddingModel
from retrievers.sparse import Bm25Encoder
from retrievers.store import (
    PayloadFilter,
    QueryOptions,
    SearchHit,
    SearchMode,
    VectorStore,
    reader_scope,
)


@dataclass(frozen=True, slots=True)
class RetrievedChunk:
    """A search result with what a citation needs (document, title, source, chunk)."""

    id: str
    score: float
    text: str
    doc_id: str
    title: str
    source: str
    heading_path: tuple[str, ...]
    chunk_index: int
    collection: str
    payload: dict[str, Any] = field(default_factory=dict, repr=False)
    dense: list[float] | None = field(default=None, repr=False)

    @classmethod
    def from_hit(cls, hit: SearchHit, collection: str) -> RetrievedChunk:
        p = hit.payload
        return cls(
            id=hit.id,
            score=hit.score,
            text=str(p.get("text", "")),
            doc_id=str(p.get("doc_id", "")),
            title=str(p.get("title", "")),
            source=str(p.get("source", "")),
            heading_path=tuple(p.get("heading_path") or ()),
            chunk_index=int(p.get("chunk_index", 0)),
            collection=collection,
            payload=p,
            dense=hit.dense,
        )


class HybridRetriever:
    def __init__(
        self,
        store: VectorStore,
        embeddings: EmbeddingModel,
        sparse: Bm25Encoder,
        options: QueryOptions | None = None,
    ) -> None:
        self.store = store
        self.embeddings = embeddings
        self.sparse = sparse
        self.options = options or QueryOptions()

    def search(
        self,
        query: str,
        collection: str,
        *,
        k: int = 10,
        mode: SearchMode = "hybrid",
        tenant: str | Sequence[str] | None = None,
        where: PayloadFilter | None = None,
        groups: Sequence[str] | None = None,
    ) -> list[RetrievedChunk]:
        """Top-k chunks; `tenant` is always applied as a filter when given, and `groups` (a
        reader's groups: documents of none of them are left out) too."""
        self.store.require(collection)
        dense = self.embeddings.embed_query(query) if mode in ("hybrid", "dense") else None
        return self.search_vectors(
            query,
            collection,
            dense=dense,
            k=k,
            mode=mode,
            tenant=tenant,
            where=where,
            groups=groups,
        )

    def search_vectors(
        self,
        query: str,
        collection: str,
        *,
        dense: Sequence[float] | None,
        k: int = 10,
        mode: SearchMode = "hybrid",
        tenant: str | Sequence[str] | None = None,
        where: PayloadFilter | None = None,
        with_dense: bool = False,
        groups: Sequence[str] | None = None,
    ) -> list[RetrievedChunk]:
        """Same as `search` with a precomputed query embedding (embed once, search many)."""
        sparse = self.sparse.encode_query(query) if mode in ("hybrid", "sparse") else None
        # the tenant and group scope goes last: no other filter can widen or replace it
        scope = (where or PayloadFilter()).and_(reader_scope(tenant, groups))
        hits = self.store.query(
            collection,
            dense=dense if mode != "sparse" else None,
            sparse=sparse,
            limit=k,
            where=None if scope.is_empty else scope,
            options=self.options,
            with_dense=with_dense,
        )
        return [RetrievedChunk.from_hit(hit, collection) for hit in hits]
