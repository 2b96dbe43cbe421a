"""Everything the retrieval layer needs, built once from settings and shared by its callers.

Models load lazily: listing collections does not pay for loading an embedding model.
"""

from __future__ import annotations

from functools import cached_property

from agent.settings import Settings
from retrievers.chunking import Chunker, HFTokenCounter, TokenCounter, bundled_token_counter
from retrievers.embeddings import (
    EmbeddingModel,
    LocalEmbeddings,
    make_embeddings,
    resolve_model_path,
)
from retrievers.ingest import Ingestor
from retrievers.search import HybridRetriever
from retrievers.sparse import Bm25Encoder
from retrievers.store import QueryOptions, VectorStore


class RetrievalStack:
    """`embeddings`, when given, is used instead of the model settings name (a process that
    already holds one shares it)."""

    def __init__(self, settings: Settings, embeddings: EmbeddingModel | None = None) -> None:
        self.settings = settings
        self._given_embeddings = embeddings

    @cached_property
    def store(self) -> VectorStore:
        return open_store(self.settings)

    @cached_property
    def embeddings(self) -> EmbeddingModel:
        return self._given_embeddings or make_embeddings(self.settings)

    @cached_property
    def sparse(self) -> Bm25Encoder:
        return Bm25Encoder.from_settings(self.settings)

    @cached_property
    def token_counter(self) -> TokenCounter:
        """The embedding model's own tokenizer when it is local, else the bundled MiniLM one."""
        if isinstance(self.embeddings, LocalEmbeddings):
            return HFTokenCounter(resolve_model_path(self.embeddings.model_name))
        return bundled_token_counter()

    @cached_property
    def chunker(self) -> Chunker:
        size = self.settings.chunk_size
        embeddings = self.embeddings
        if isinstance(embeddings, LocalEmbeddings):
            size = min(size, embeddings.max_seq_length - 2)  # [CLS] and [SEP]
        overlap = min(self.settings.chunk_overlap, size // 2)
        return Chunker(self.token_counter, size, overlap)

    @cached_property
    def ingestor(self) -> Ingestor:
        return Ingestor(self.store, self.embeddings, self.sparse, self.chunker)

    @cached_property
    def retriever(self) -> HybridRetriever:
        return HybridRetriever(
            self.store, self.embeddings, self.sparse, QueryOptions.from_settings(self.settings)
        )

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()


def open_store(settings: Settings) -> VectorStore:
    """The configured backend: embedded under data_dir, or a Qdrant server by URL (each
    backend imported only when chosen: qdrant-client is slow to import)."""
    if settings.vector_store == "server":
        from retrievers.qdrant_server import QdrantServerStore

        return QdrantServerStore.from_settings(settings)
    from retrievers.qdrant_embedded import EmbeddedQdrantStore

    return EmbeddedQdrantStore(settings.data_dir / "qdrant")
