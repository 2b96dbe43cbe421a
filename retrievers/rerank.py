"""Rerankers: score (query, passage) pairs so the best evidence comes first and grading has a
calibrated relevance number without an LLM call.

Three interchangeable backends, one shape (the Cohere rerank API's: indices with scores):
- `CrossEncoderReranker`: a sentence-transformers CrossEncoder by local path or a name already in
  the Hugging Face cache; scores are the sigmoid of its logit, in (0, 1);
- `CohereReranker`: the Cohere v2 rerank API (`POST {base_url}/v2/rerank`) through the `cohere`
  SDK, base URL configurable, so Cohere itself, vLLM's Cohere-compatible endpoint or agentrag's
  own rerank service all work;
- `EmbeddingReranker`: no cross-encoder at all, cosine similarity of query and passage
  embeddings from the embedding model already loaded (costs no extra model).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from agent.errors import AgentragError, ConfigError
from agent.resilience import transports_for
from agent.settings import Settings
from retrievers.embeddings import EmbeddingModel, pick_device
from retrievers.similarity import cosine_matrix

if TYPE_CHECKING:
    from cohere.v2.types.v2rerank_response import V2RerankResponse

COHERE_API_URL = "https://api.cohere.com"


class RerankError(AgentragError):
    """The reranker could not be loaded or the rerank service failed."""


@dataclass(frozen=True, slots=True)
class RerankResult:
    index: int
    score: float


class Reranker(Protocol):
    name: str

    def rerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]:
        """Best first; `score` is comparable across calls of the same reranker."""
        ...

    async def arerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]: ...


def _check_top_n(top_n: int | None) -> None:
    if top_n is not None and top_n < 0:
        raise ValueError(f"top_n must be None or >= 0, got {top_n}")


def _ordered(scores: Sequence[float], top_n: int | None) -> list[RerankResult]:
    results = sorted(
        (RerankResult(i, float(s)) for i, s in enumerate(scores)), key=lambda r: -r.score
    )
    return results[:top_n] if top_n is not None else results


def _sigmoid(x: float) -> float:
    """Logistic function that does not overflow for large negative logits."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass(frozen=True, slots=True)
class _LoadedCrossEncoder:
    model: Any
    # one lock per loaded model: rerankers sharing the cached model must not share its fast
    # tokenizer across threads at once ("Already borrowed")
    lock: threading.Lock


@lru_cache(maxsize=2)
def _load_cross_encoder(name: str, device: str) -> _LoadedCrossEncoder:
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(name, device=device, local_files_only=True)
    except Exception as exc:
        raise RerankError(
            f"Cannot load cross-encoder {name!r}: {exc}. Give a local path or a model already in "
            "the Hugging Face cache (agentrag never downloads at run time)."
        ) from exc
    if model.num_labels != 1:
        raise RerankError(
            f"Cross-encoder {name!r} has {model.num_labels} output labels; a reranker scores each "
            "pair with one logit. Use a reranking model (e.g. cross-encoder/ms-marco-MiniLM-L6-v2)."
        )
    if device.startswith("cuda"):
        model.half()
    return _LoadedCrossEncoder(model, threading.Lock())


class CrossEncoderReranker:
    def __init__(self, model: str, device: str = "auto", batch_size: int = 32) -> None:
        self.name = f"cross-encoder:{model}"
        self.batch_size = batch_size
        self._loaded = _load_cross_encoder(model, pick_device(device))

    def rerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]:
        from torch import nn

        _check_top_n(top_n)
        if not passages:
            return []
        with self._loaded.lock:
            # raw logits (Identity), whatever activation the model saved, so the sigmoid below is
            # applied exactly once and thresholds read the same for every model
            raw = self._loaded.model.predict(
                [(query, p) for p in passages],
                batch_size=self.batch_size,
                show_progress_bar=False,
                activation_fn=nn.Identity(),
                convert_to_numpy=True,
            )
        return _ordered([_sigmoid(float(x)) for x in raw.reshape(-1).tolist()], top_n)

    async def arerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]:
        """Model work runs in a thread so the event loop is never blocked."""
        return await asyncio.to_thread(self.rerank, query, passages, top_n)


class EmbeddingReranker:
    def __init__(self, embeddings: EmbeddingModel) -> None:
        self.name = f"embedding:{embeddings.model_name}"
        self._embeddings = embeddings

    def rerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]:
        _check_top_n(top_n)
        if not passages:
            return []
        q = self._embeddings.embed_query(query)
        docs = self._embeddings.embed_documents(list(passages))
        return _ordered(_cosines(q, docs), top_n)

    async def arerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]:
        """The embeddings' own async path: a thread for local models, async HTTP for remote."""
        _check_top_n(top_n)
        if not passages:
            return []
        q = await self._embeddings.aembed_query(query)
        docs = await self._embeddings.aembed_documents(list(passages))
        return _ordered(_cosines(q, docs), top_n)

    def rerank_vectors(
        self, query_vector: Sequence[float], vectors: Sequence[Sequence[float]], top_n: int | None
    ) -> list[RerankResult]:
        """Score with vectors the store already holds: the same ranking, no model call."""
        _check_top_n(top_n)
        return _ordered(_cosines(query_vector, vectors), top_n)


def _cohere_base_url(base_url: str | None) -> str:
    """The SDK appends `v2/rerank` itself; accept a URL given with a trailing /v1 or /v2 too."""
    url = (base_url or COHERE_API_URL).rstrip("/")
    for suffix in ("/v1", "/v2"):
        url = url.removesuffix(suffix)
    return url


class CohereReranker:
    """Client of the Cohere v2 rerank API, sync and async.

    Given `transports` (see agent/resilience.py), retries and the circuit breaker are theirs
    and the SDK's own retries are off; without, `max_retries` covers 429/5xx and refused
    connections with the SDK's exponential backoff (1 s, 2 s, ...)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
        transports: tuple[httpx.BaseTransport, httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        import cohere

        self.name = f"cohere:{model}"
        self.model = model
        self.base_url = _cohere_base_url(base_url)
        # a self-hosted service may need no key, but the SDK refuses to start without one
        key = api_key or "none"
        sync_client = async_client = None
        if transports is not None:
            max_retries = 0
            sync_client = httpx.Client(timeout=timeout_s, transport=transports[0])
            async_client = httpx.AsyncClient(timeout=timeout_s, transport=transports[1])
        self._client = cohere.ClientV2(
            api_key=key,
            base_url=self.base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            httpx_client=sync_client,
        )
        self._aclient = cohere.AsyncClientV2(
            api_key=key,
            base_url=self.base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            httpx_client=async_client,
        )

    def _error(self, exc: Exception) -> RerankError:
        from cohere.core.api_error import ApiError

        if isinstance(exc, ApiError):
            return RerankError(
                f"Rerank service at {self.base_url} answered {exc.status_code}: "
                f"{str(exc.body)[:300]}"
            )
        return RerankError(f"Cannot reach the rerank service at {self.base_url}: {exc}")

    def _results(
        self, response: V2RerankResponse, count: int, top_n: int | None
    ) -> list[RerankResult]:
        try:
            results = [
                RerankResult(int(r.index), float(r.relevance_score)) for r in response.results
            ]
        except (AttributeError, TypeError, ValueError) as exc:
            raise RerankError(
                f"Rerank service at {self.base_url} returned an unexpected body: {exc}"
            ) from exc
        if any(not 0 <= r.index < count for r in results):
            raise RerankError(
                f"Rerank service at {self.base_url} returned an index outside the {count} passages"
            )
        results.sort(key=lambda r: -r.score)
        return results[:top_n] if top_n is not None else results

    def rerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]:
        _check_top_n(top_n)
        if not passages or top_n == 0:
            return []
        try:
            # top_n always sent as a number: some compatible servers reject `null`
            response = self._client.rerank(
                model=self.model,
                query=query,
                documents=list(passages),
                top_n=top_n if top_n is not None else len(passages),
            )
        except Exception as exc:
            raise self._error(exc) from exc
        return self._results(response, len(passages), top_n)

    async def arerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]:
        _check_top_n(top_n)
        if not passages or top_n == 0:
            return []
        try:
            response = await self._aclient.rerank(
                model=self.model,
                query=query,
                documents=list(passages),
                top_n=top_n if top_n is not None else len(passages),
            )
        except Exception as exc:
            raise self._error(exc) from exc
        return self._results(response, len(passages), top_n)


def _cosines(query: Sequence[float], vectors: Sequence[Sequence[float]]) -> list[float]:
    return cosine_matrix([query], vectors)[0]


def make_reranker(settings: Settings, embeddings: EmbeddingModel) -> Reranker:
    if settings.reranker_backend == "cross-encoder":
        if not settings.reranker_model:
            raise ConfigError("AGENTRAG_RERANKER_MODEL is required for the cross-encoder backend")
        return CrossEncoderReranker(settings.reranker_model, settings.embedding_device)
    if settings.reranker_backend == "cohere":
        key = settings.reranker_api_key.get_secret_value() if settings.reranker_api_key else None
        base_url = _cohere_base_url(settings.reranker_url)
        return CohereReranker(
            settings.reranker_model or "rerank-v3.5",
            base_url=base_url,
            api_key=key,
            transports=transports_for(settings, "reranker", base_url),
        )
    return EmbeddingReranker(embeddings)
