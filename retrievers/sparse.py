"""BM25 sparse vectors, computed the way Qdrant's own BM25 inference computes them.

Documents get BM25 term-frequency weights (k1, b, expected length); queries get weight 1 per
unique term; the collection's sparse vector uses Qdrant's IDF modifier, so the engine supplies
IDF from the live collection and a dot product of the two gives the BM25 score. Tokenising is
Qdrant's (lowercasing, stop words, Snowball stemming), so token ids are stable hashes that mean
the same thing in the embedded engine, on a server, and in Qdrant's server-side inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import qdrant_edge as qe

from agent.settings import Settings
from retrievers.store import SparseVector


class Bm25Encoder:
    def __init__(
        self, k1: float = 1.2, b: float = 0.75, avg_len: float = 120.0, language: str = "english"
    ) -> None:
        self.k1, self.b, self.avg_len, self.language = k1, b, avg_len, language
        self._model = qe.Bm25(qe.Bm25Config(k=k1, b=b, avg_len=avg_len, language=language))

    @classmethod
    def from_settings(cls, settings: Settings) -> Bm25Encoder:
        return cls(settings.bm25_k1, settings.bm25_b, settings.bm25_avg_len, settings.bm25_language)

    def encode_documents(self, texts: Sequence[str]) -> list[SparseVector]:
        out = []
        for text in texts:
            vector = self._model.embed_document(text)
            out.append(SparseVector(list(vector.indices), list(vector.values)))
        return out

    def encode_query(self, text: str) -> SparseVector:
        vector = self._model.embed_query(text)
        return SparseVector(list(vector.indices), list(vector.values))
