"""The vectors the agent compares, each encoded once per process.

Routing and retrieval embed the same query; grading, citation and reflection compare answer
sentences with chunks whose stored vectors a search already returned; a regenerated answer is
checked against the same chunk sentences again. Every cache here is an LRU bounded in size and
safe to use from the worker threads that encode.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from retrievers.embeddings import EmbeddingModel
from retrievers.store import CollectionInfo

VECTOR_CACHE_SIZE = 20_000
"""Query and chunk vectors kept per process (384 floats each: about 60 MB at the limit)."""

TEXT_CACHE_SIZE = 5_000
"""Vectors of other embedded texts (answer sentences, sentences of cited chunks) kept per
process: a regenerated answer is checked against the same chunk sentences again."""


class LruVectors:
    """A bounded, thread-safe map from a key to its vector."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> list[float] | None:
        with self._lock:
            return self._items.get(key)

    def known(self, keys: Sequence[str]) -> dict[str, list[float]]:
        with self._lock:
            return {k: self._items[k] for k in keys if k in self._items}

    def put(self, items: dict[str, list[float]]) -> None:
        with self._lock:
            for key, vector in items.items():
                self._items[key] = vector
                self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class Vectors:
    """Query, chunk, collection-description and compared-text vectors, cached.

    `model` is called when a vector is first needed: building the agent does not load an
    embedding model."""

    def __init__(self, model: Callable[[], EmbeddingModel]) -> None:
        self._model = model
        self._queries = LruVectors(VECTOR_CACHE_SIZE)
        self._chunks = LruVectors(VECTOR_CACHE_SIZE)
        self._texts = LruVectors(TEXT_CACHE_SIZE)
        self._descriptions = LruVectors(VECTOR_CACHE_SIZE)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors of texts that are compared and never stored (answer sentences, sentences of
        chunks), in one encode call; texts embedded before come from the cache."""
        if not texts:
            return []
        known = self._texts.known(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            fresh = await asyncio.to_thread(self._model().embed_for_comparison, missing)
            computed = dict(zip(missing, fresh, strict=True))
            self._texts.put(computed)
            known.update(computed)
        return [known[t] for t in texts]

    async def embed_query(self, text: str) -> list[float]:
        cached = self._queries.get(text)
        if cached is not None:
            return cached
        vector = await asyncio.to_thread(lambda: self._model().embed_query(text))
        self._queries.put({text: vector})
        return vector

    def remember_chunks(self, vectors: dict[str, list[float]]) -> None:
        """Stored vectors of chunks a search returned, by chunk id."""
        self._chunks.put(vectors)

    async def chunk_vectors(self, ids_and_texts: Sequence[tuple[str, str]]) -> list[list[float]]:
        """Stored vectors of retrieved chunks; embeds only those no search has returned yet."""
        known = self._chunks.known([i for i, _ in ids_and_texts])
        missing = [(i, t) for i, t in ids_and_texts if i not in known]
        if missing:
            fresh = dict(
                zip((i for i, _ in missing), await self.embed([t for _, t in missing]), strict=True)
            )
            known.update(fresh)
            self._chunks.put(fresh)
        return [known[i] for i, _ in ids_and_texts]

    def description(self, info: CollectionInfo) -> list[float] | None:
        """A collection description's vector (routing blends it in); called from worker threads."""
        if not info.description:
            return None
        key = f"{info.name}\n{info.description}"
        cached = self._descriptions.get(key)
        if cached is None:
            cached = self._model().embed_query(info.description)
            self._descriptions.put({key: cached})
        return cached
