"""One LangChain tool per collection: hybrid search, then rerank, returning scored chunks.

The tool's name and description come from the collection, so an LLM that picks tools picks
collections, and the agent's own retrieve node calls the very same tool.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from agent.resilience import note_skipped
from retrievers.rerank import EmbeddingReranker, Reranker, RerankError
from retrievers.search import HybridRetriever, RetrievedChunk
from retrievers.similarity import cosine
from retrievers.store import CollectionInfo, PayloadFilter

logger = logging.getLogger("agentrag.search")


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
        tenant: str | Sequence[str],
        candidates: int = 24,
        embed_query: QueryEmbedder | None = None,
        remember: Callable[[dict[str, list[float]]], None] | None = None,
        groups: Sequence[str] | None = None,
    ) -> None:
        self.groups = groups
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
        # a cross-encoder reorders `candidates` chunks; without one the fused order stands, and
        # the first k of k are the first k of more (the fused lists are `prefetch_limit` long)
        by_vectors = self.reranker if isinstance(self.reranker, EmbeddingReranker) else None
        chunks = await asyncio.to_thread(
            self.retriever.search_vectors,
            query,
            self.info.name,
            dense=vector,
            k=k if by_vectors is not None else max(k, self.candidates),
            mode="hybrid",
            tenant=self.tenant,
            groups=self.groups,
            with_dense=True,
        )
        if not chunks:
            return []
        vectors = {c.id: c.dense for c in chunks if c.dense is not None}
        if self._remember is not None:
            self._remember(vectors)
        if by_vectors is not None and len(vectors) == len(chunks):
            # no cross-encoder: keep the fused hybrid order (it ranks better than cosine alone,
            # measured on HotpotQA dev) and attach cosine as the relevance that grading reads
            scores = by_vectors.rerank_vectors(vector, [vectors[c.id] for c in chunks], None)
            by_index = {r.index: r.score for r in scores}
            return [chunk_record(c, by_index[i], i) for i, c in enumerate(chunks[:k])]
        try:
            ranked = await self.reranker.arerank(query, [_passage(c) for c in chunks], top_n=k)
        except RerankError as exc:
            # the fused hybrid order stands, scored by cosine as without a cross-encoder: a
            # turn answers less well rather than not at all, and says so (`rerank_skipped`)
            logger.warning("rerank skipped: %s", exc)  # the detail names internal addresses
            note_skipped("rerank_skipped", "the rerank service failed; hybrid search order kept")
            return [
                chunk_record(c, cosine(vector, c.dense) if c.dense is not None else 0.0, i)
                for i, c in enumerate(chunks[:k])
            ]
        return [chunk_record(chunks[r.index], r.score, rank) for rank, r in enumerate(ranked)]

    async def alinked(
        self, query: str, texts: list[str], k: int = 4, skip_docs: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Chunks of documents whose *title* is named in the query or in these texts.

        Multi-hop questions hop through an entity: the second document is usually the one the
        first names (a comparison names both in the question). Following those names is one
        filtered vector search, no LLM. Names from the query come first, then those of each
        text in turn (the texts come best first); among documents named by the same source the
        closest to the query wins. One chunk per document, documents in `skip_docs` (already
        found) left out."""
        priority: dict[str, int] = {}
        for source, text in enumerate([query, *texts]):
            for name in sorted(title_candidates(text)):
                priority.setdefault(name, source)
        names = sorted(priority, key=lambda n: priority[n])[:MAX_LINKED_NAMES]
        if not names or k <= 0:
            return []
        vector = await self._query_vector(query)
        skip = PayloadFilter(must_not={"doc_id": list(skip_docs)}) if skip_docs else None
        named = title_candidates(query)

        def search() -> tuple[list[RetrievedChunk], list[RetrievedChunk]]:
            exact = self._search(
                query, vector, LINKED_CANDIDATES * k, PayloadFilter(must={"title": names}), skip
            )
            # a title with a qualifier ("Pieris (plant)", "Summerlin, Nevada") matches no name
            # exactly: look for the query's names lexically and compare the titles' base names
            lexical = self.retriever.search_vectors(
                query,
                self.info.name,
                dense=None,
                k=QUALIFIED_CANDIDATES,
                mode="sparse",
                tenant=self.tenant,
                groups=self.groups,
                where=skip,
            )
            docs = [
                c.doc_id for c in lexical if c.title not in named and title_base(c.title) in named
            ]
            if not docs:
                return exact, []
            return exact, self._search(
                query, vector, len(docs), PayloadFilter(must={"doc_id": docs})
            )

        exact, qualified = await asyncio.to_thread(search)
        best: dict[str, tuple[int, float, RetrievedChunk]] = {}
        for chunk in exact:  # best first: the first chunk seen of a document is its best
            source = priority.get(chunk.title, len(texts) + 1)
            best.setdefault(chunk.doc_id, (2 * source, -chunk.score, chunk))
        by_base: dict[str, RetrievedChunk] = {}
        for chunk in qualified:  # one document per ambiguous name: the closest to the query
            by_base.setdefault(title_base(chunk.title), chunk)
        for chunk in by_base.values():  # after the exact names of the query
            best.setdefault(chunk.doc_id, (1, -chunk.score, chunk))
        linked = [c for *_, c in sorted(best.values(), key=lambda t: t[:2])][:k]
        if self._remember is not None:
            self._remember({c.id: c.dense for c in linked if c.dense is not None})
        return [chunk_record(c, c.score, i) for i, c in enumerate(linked)]

    async def amentions(
        self, query: str, titles: list[str], skip_docs: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """For each title, the best new document that names it alongside the query's terms.

        The reverse of `alinked`: a bridge question's second document often names the first
        ("Kathantara is a film about the 1999 Odisha cyclone") rather than being named by it.
        Lexical search for the query plus the title, leaving out documents already found,
        finds it; BM25 needs no embedding, so each hop costs one sparse search."""
        if not titles:
            return []
        vector = await self._query_vector(query)

        def search() -> list[tuple[RetrievedChunk, list[float]]]:
            skip = list(skip_docs)
            found: list[tuple[RetrievedChunk, list[float]]] = []
            for title in titles:
                hits = self.retriever.search_vectors(
                    f"{query} {title}",
                    self.info.name,
                    dense=None,
                    k=1,
                    mode="sparse",
                    tenant=self.tenant,
                    groups=self.groups,
                    where=PayloadFilter(must_not={"doc_id": skip}) if skip else None,
                    with_dense=True,
                )
                if hits and hits[0].dense is not None:
                    found.append((hits[0], hits[0].dense))
                    skip.append(hits[0].doc_id)
            return found

        found = await asyncio.to_thread(search)
        if self._remember is not None:
            self._remember({c.id: dense for c, dense in found})
        return [chunk_record(c, cosine(vector, dense), i) for i, (c, dense) in enumerate(found)]

    async def _query_vector(self, query: str) -> list[float]:
        if self._embed_query is not None:
            return await self._embed_query(query)
        return await asyncio.to_thread(self.retriever.embeddings.embed_query, query)

    def _search(
        self,
        query: str,
        vector: list[float],
        k: int,
        where: PayloadFilter,
        skip: PayloadFilter | None = None,
    ) -> list[RetrievedChunk]:
        """Dense search within `where`: scores are cosine, the relevance grading reads."""
        return self.retriever.search_vectors(
            query,
            self.info.name,
            dense=vector,
            k=k,
            mode="dense",
            tenant=self.tenant,
            groups=self.groups,
            where=where.and_(skip),
            with_dense=True,
        )

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


MAX_LINKED_NAMES = 400
QUALIFIED_CANDIDATES = 15
LINKED_CANDIDATES = 4
"""Filtered-search hits per linked document asked for, so one-chunk-per-document still fills k."""
_CONNECTORS = "of|the|and|de|for|in|on|at|to|a|an|with|from|van|von|la|le|du|del|des"
_TOKEN = r"[A-Z0-9][\w'\u2019.&/-]*[?!]?"
_NAME = re.compile(_TOKEN + r"(?:\s+(?:(?:" + _CONNECTORS + r")\s+){0,2}" + _TOKEN + r")*")
_QUOTED = re.compile(r"[\"\u201c]([^\"\u201c\u201d]{2,80}?)[\"\u201d]")
_PLACE_WORD = r"[A-Z][\w'\u2019&/-]*"
_QUALIFIER = re.compile(
    r",\s+(" + _PLACE_WORD + r"(?:\s+" + _PLACE_WORD + r"){0,2})|\s+(\([^()]{1,30}\))"
)
MAX_NAME_WORDS = 5


@lru_cache(maxsize=4096)
def title_candidates(text: str) -> frozenset[str]:
    """Phrases that may be document titles: capitalised phrases and their sub-phrases, quoted
    titles ("Back to December"), names without a possessive, and names with the qualifier a
    title often carries ("Bangor, Maine", "USS Essex (CV-9)"). Cached: the same top chunks
    come back for every hop of a question."""
    out: set[str] = set()
    for match in _NAME.finditer(text):
        sentences = _sentences(match.group(0).split())
        for sentence in sentences:
            _add_phrases(sentence, out)
        qualifier = _QUALIFIER.match(text, match.end())
        if qualifier is not None:
            if qualifier.group(1):  # "Young, New South Wales": any of the first words
                words = qualifier.group(1).split()
                tails = [", " + " ".join(words[:n]) for n in range(1, len(words) + 1)]
            else:
                tails = [f" {qualifier.group(2)}"]
            last = sentences[-1]
            for i in range(max(0, len(last) - MAX_NAME_WORDS + 1), len(last)):
                if not last[i][0].islower():
                    out.update(" ".join(last[i:]) + tail for tail in tails)
    for match in _QUOTED.finditer(text):
        quoted = match.group(1).strip(" ,.;:!?")
        if 0 < len(quoted.split()) <= 2 * MAX_NAME_WORDS:
            out.add(quoted)
            out.add(match.group(1).strip())
    return frozenset(name for name in out if len(name) > 2)


def _sentences(parts: list[str]) -> list[list[str]]:
    """A phrase split where a sentence ends inside it: after "?" or "!", or after a period on
    a word longer than an initial or abbreviation ("J.", "Jr.", "St." stay joined)."""
    out: list[list[str]] = [[]]
    for part in parts:
        out[-1].append(part)
        if part[-1] in "?!" or (part[-1] == "." and len(part) > 4):
            out.append([])
    return [s for s in out if s]


def _add_phrases(parts: list[str], out: set[str]) -> None:
    """Every run of up to `MAX_NAME_WORDS` words, and the whole phrase, that starts and ends
    with a capitalised word; a trailing period is tried both ways ("Jr." ends titles, a full
    stop does not), and a possessive too ("Nickelback's album" names Nickelback)."""
    n = len(parts)
    capitalised = [not p[0].islower() for p in parts]
    for i in range(n):
        if not capitalised[i]:
            continue
        ends = list(range(i + 1, min(n, i + MAX_NAME_WORDS) + 1))
        if i == 0 and n > MAX_NAME_WORDS:
            ends.append(n)
        for j in ends:
            last = parts[j - 1]
            if not capitalised[j - 1]:
                continue
            phrase = " ".join(parts[i:j])
            out.add(phrase)
            if last[-1] in ".?!,'":
                out.add(phrase.rstrip(".?!,'"))
            if last.endswith(("'s", "\u2019s")):
                out.add(phrase[:-2])


_QUALIFIER_SUFFIX = re.compile(r"\s*\([^()]*\)$|,\s[^,]+$")


def title_base(title: str) -> str:
    """A title without its qualifier: "Pieris (plant)" -> "Pieris", "Bangor, Maine" -> "Bangor"."""
    return _QUALIFIER_SUFFIX.sub("", title.replace("&amp;", "&")).strip()


def _passage(chunk: RetrievedChunk) -> str:
    context = " > ".join(part for part in (chunk.title, *chunk.heading_path) if part)
    return f"{context}\n{chunk.text}" if context else chunk.text
