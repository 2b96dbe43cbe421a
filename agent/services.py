"""The long-lived things nodes use: retrieval stack, reranker, chat models, collection tools.

Built once per process from settings and bound to the nodes when the graph is built (see
`graphs/rag.py`); per-request choices come from the runtime context instead. Tests build a
`Services` with scripted chat models and a temporary store.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage

from agent.context import AgentContext
from agent.settings import Settings
from agent.state import UsageEntry
from retrievers.chunking import bundled_token_counter
from retrievers.rerank import Reranker, make_reranker
from retrievers.stack import RetrievalStack
from retrievers.store import CollectionInfo
from tools.collection_search import CollectionSearch
from tools.web_search import WebSearch

VECTOR_CACHE_SIZE = 20_000
"""Query and chunk vectors kept per process (384 floats each: about 60 MB at the limit)."""

TEXT_CACHE_SIZE = 5_000
"""Vectors of other embedded texts (answer sentences, sentences of cited chunks) kept per
process: a regenerated answer is checked against the same chunk sentences again."""

COLLECTIONS_TTL_S = 2.0
"""How long a turn reuses the collection list read by an earlier one: a collection created or
described by another process is seen at most this late."""

ROLE_FIELD = {"generator": "generator_model", "planner": "planner_model", "judge": "judge_model"}


class Services:
    def __init__(
        self,
        settings: Settings,
        *,
        stack: RetrievalStack | None = None,
        reranker: Reranker | None = None,
        chat_models: dict[str, BaseChatModel] | None = None,
        supports_tools: bool | None = None,
    ) -> None:
        self.settings = settings
        self.stack = stack or RetrievalStack(settings)
        self._reranker = reranker
        self._chat_overrides = dict(chat_models or {})
        self._chat_cache: dict[tuple[str, str | None], BaseChatModel] = {}
        self._supports_tools = supports_tools
        self._lock = threading.Lock()
        self._description_vectors: dict[tuple[str, str], list[float]] = {}
        self._query_vectors: OrderedDict[str, list[float]] = OrderedDict()
        self._chunk_vectors: OrderedDict[str, list[float]] = OrderedDict()
        self._text_vectors: OrderedDict[str, list[float]] = OrderedDict()
        self._collections: tuple[float, list[CollectionInfo]] | None = None

    # -- models --------------------------------------------------------------------------------
    @cached_property
    def reranker(self) -> Reranker:
        return self._reranker or make_reranker(self.settings, self.stack.embeddings)

    @cached_property
    def web_search(self) -> WebSearch | None:
        if not self.settings.web_search_url:
            return None
        key = self.settings.web_search_api_key
        return WebSearch(
            self.settings.web_search_url, api_key=key.get_secret_value() if key else None
        )

    @property
    def supports_tools(self) -> bool:
        if self._supports_tools is not None:
            return self._supports_tools
        from agent.llm import supports_tools

        return supports_tools(self.settings)

    def chat_model(self, role: str, ctx: AgentContext) -> BaseChatModel:
        made = self._made_chat_model(role, ctx)
        if made is not None:
            return made
        model_name: str | None = getattr(ctx, ROLE_FIELD[role])
        key = (role, model_name)
        with self._lock:
            if key not in self._chat_cache:
                from agent.llm import make_chat_model

                self._chat_cache[key] = make_chat_model(
                    self.settings,
                    role,  # type: ignore[arg-type]
                    model=model_name,
                )
            return self._chat_cache[key]

    def _made_chat_model(self, role: str, ctx: AgentContext) -> BaseChatModel | None:
        if role in self._chat_overrides:
            return self._chat_overrides[role]
        if "default" in self._chat_overrides:
            return self._chat_overrides["default"]
        return self._chat_cache.get((role, getattr(ctx, ROLE_FIELD[role])))

    async def achat_model(self, role: str, ctx: AgentContext) -> BaseChatModel:
        """`chat_model` off the event loop when it has to make one (the first call may start the
        embedded LLM server); a model made before comes back without a thread hop."""
        made = self._made_chat_model(role, ctx)
        if made is not None:
            return made
        return await asyncio.to_thread(self.chat_model, role, ctx)

    # -- collections ---------------------------------------------------------------------------
    def collections(self, allowed: Sequence[str] | None) -> list[CollectionInfo]:
        """The collections a turn may use. Listing them counts every collection's points (a
        round trip per collection on a Qdrant server), so the list is reused for
        `COLLECTIONS_TTL_S`; this process's own changes call `forget_collections`."""
        now = time.monotonic()
        with self._lock:
            cached = self._collections
        if cached is None or now - cached[0] > COLLECTIONS_TTL_S:
            cached = (now, self.stack.store.list_collections())
            with self._lock:
                self._collections = cached
        infos = cached[1]
        if allowed is not None:
            infos = [i for i in infos if i.name in set(allowed)]
        return infos

    def forget_collections(self) -> None:
        with self._lock:
            self._collections = None

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
            self.stack.retriever,
            self.reranker,
            info,
            ctx.tenant,
            candidates=ctx.candidates,
            embed_query=self.embed_query,
            remember=self.remember_chunk_vectors,
        )

    def description_vector(self, info: CollectionInfo) -> list[float] | None:
        if not info.description:
            return None
        key = (info.name, info.description)
        if key not in self._description_vectors:
            self._description_vectors[key] = self.stack.embeddings.embed_query(info.description)
        return self._description_vectors[key]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors of texts that are compared and never stored (answer sentences, sentences of
        chunks), in one encode call; texts embedded before come from a cache."""
        if not texts:
            return []
        with self._lock:
            known = {t: self._text_vectors[t] for t in texts if t in self._text_vectors}
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            fresh = await asyncio.to_thread(self.stack.embeddings.embed_for_comparison, missing)
            computed = dict(zip(missing, fresh, strict=True))
            self._remember(self._text_vectors, computed, TEXT_CACHE_SIZE)
            known.update(computed)
        return [known[t] for t in texts]

    async def embed_query(self, text: str) -> list[float]:
        """Query vectors are cached: routing and retrieval embed the same query once."""
        with self._lock:
            cached = self._query_vectors.get(text)
        if cached is not None:
            return cached
        vector = await asyncio.to_thread(lambda: self.stack.embeddings.embed_query(text))
        self._remember(self._query_vectors, {text: vector})
        return vector

    def remember_chunk_vectors(self, vectors: dict[str, list[float]]) -> None:
        self._remember(self._chunk_vectors, vectors)

    async def chunk_vectors(self, ids_and_texts: Sequence[tuple[str, str]]) -> list[list[float]]:
        """Stored vectors of retrieved chunks; embeds only those no search has returned yet."""
        with self._lock:
            known = {
                i: self._chunk_vectors[i] for i, _ in ids_and_texts if i in self._chunk_vectors
            }
        missing = [(i, t) for i, t in ids_and_texts if i not in known]
        if missing:
            fresh = await self.embed([t for _, t in missing])
            known.update({i: v for (i, _), v in zip(missing, fresh, strict=True)})
            self.remember_chunk_vectors({i: v for (i, _), v in zip(missing, fresh, strict=True)})
        return [known[i] for i, _ in ids_and_texts]

    def _remember(
        self,
        cache: OrderedDict[str, list[float]],
        items: dict[str, list[float]],
        size: int = VECTOR_CACHE_SIZE,
    ) -> None:
        with self._lock:
            for key, vector in items.items():
                cache[key] = vector
                cache.move_to_end(key)
            while len(cache) > size:
                cache.popitem(last=False)

    def close(self) -> None:
        self.stack.close()


TOKEN_CACHE_SIZE = 20_000
"""Token counts of paragraphs kept per process (evidence blocks recur when an answer is
regenerated and when a follow-up retrieves the same chunks)."""

_token_counts: OrderedDict[str, int] = OrderedDict()
_token_lock = threading.Lock()


def count_tokens(texts: Sequence[str]) -> int:
    """Token count with the bundled tokenizer, for models that report no usage.

    Counted paragraph by paragraph (split at blank lines), each paragraph once per process: the
    tokenizer splits at whitespace anyway, so the sum is the count of the whole text."""
    pieces = [p for text in texts for p in text.split("\n\n") if p]
    if not pieces:
        return 0
    with _token_lock:
        known = {p: _token_counts[p] for p in pieces if p in _token_counts}
    missing = list(dict.fromkeys(p for p in pieces if p not in known))
    if missing:
        fresh = dict(zip(missing, bundled_token_counter().count(missing), strict=True))
        with _token_lock:
            for piece, tokens in fresh.items():
                _token_counts[piece] = tokens
                _token_counts.move_to_end(piece)
            while len(_token_counts) > TOKEN_CACHE_SIZE:
                _token_counts.popitem(last=False)
        known.update(fresh)
    return sum(known[p] for p in pieces)


def usage_entry(
    turn: str,
    node: str,
    role: str,
    messages: Sequence[BaseMessage],
    reply: Any,
    started: float,
    finished: float | None = None,
) -> UsageEntry:
    """Usage as the model reported it, else counted; model time measured around the call
    (`started` to `finished`, default now, before any counting: counting is the agent's work).
    """
    model_ms = round(((finished or time.perf_counter()) - started) * 1000, 2)
    reported = _reported_usage(reply)
    if reported is not None:
        tokens_in, tokens_out = reported
    else:
        tokens_in = count_tokens([str(m.content) for m in messages])
        text = reply.content if isinstance(reply, BaseMessage) else str(reply or "")
        tokens_out = count_tokens([str(text)])
    return {
        "turn": turn,
        "node": node,
        "role": role,
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "model_ms": model_ms,
    }


def _reported_usage(reply: Any) -> tuple[int, int] | None:
    meta = getattr(reply, "usage_metadata", None) if isinstance(reply, AIMessage) else None
    if meta and (meta.get("input_tokens") or meta.get("output_tokens")):
        return int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0))
    return None


async def ausage_entry(
    turn: str,
    node: str,
    role: str,
    messages: Sequence[BaseMessage],
    reply: Any,
    started: float,
    finished: float | None = None,
) -> UsageEntry:
    """`usage_entry` off the event loop when it has to count (counting may load the tokenizer
    from disk); usage the model reported is read in place."""
    finished = finished or time.perf_counter()
    if _reported_usage(reply) is not None:
        return usage_entry(turn, node, role, messages, reply, started, finished)
    return await asyncio.to_thread(
        usage_entry, turn, node, role, messages, reply, started, finished
    )
