"""Ingestion: files or records in, chunks with dense and sparse vectors out, idempotently.

Point ids derive from (tenant, document id, document content hash, chunk index), so:
- re-ingesting unchanged content finds every id already stored and embeds nothing;
- a changed document gets new ids; its new chunks are written first, then the chunks of every
  older version are deleted (`doc_hash` differs), so a crash never leaves the document missing;
- an interrupted run leaves nothing that a rerun would duplicate.
A file that cannot be read is skipped and listed in the report, never fatal.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.errors import IngestError
from retrievers.chunking import Chunker
from retrievers.documents import Chunk, Document, SkippedFile, document_groups
from retrievers.embeddings import EmbeddingModel
from retrievers.loaders import load_paths
from retrievers.sparse import Bm25Encoder
from retrievers.store import (
    CollectionSpec,
    PayloadFilter,
    StoredPoint,
    VectorStore,
    now_iso,
    point_id,
    reader_scope,
)

_COUNT_GROUP = 512
"""Documents checked together when verifying that unchanged documents have no stale chunks."""


@dataclass(slots=True)
class IngestReport:
    collection: str
    tenant: str
    documents: int = 0
    documents_new_or_changed: int = 0
    documents_unchanged: int = 0
    chunks_total: int = 0
    chunks_added: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_added / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "tenant": self.tenant,
            "documents": self.documents,
            "documents_new_or_changed": self.documents_new_or_changed,
            "documents_unchanged": self.documents_unchanged,
            "chunks_total": self.chunks_total,
            "chunks_added": self.chunks_added,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "seconds": round(self.seconds, 3),
            "embed_seconds": round(self.embed_seconds, 3),
            "chunks_per_second": round(self.chunks_per_second, 1),
        }


@dataclass(frozen=True, slots=True)
class _PlannedDoc:
    doc: Document
    doc_hash: str
    chunks: list[Chunk]
    ids: list[str]
    groups: tuple[str, ...] = ()


class ProgressSink(Protocol):
    """Where progress goes; the CLI passes a rich bar, library callers get silence."""

    def start(self, total: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def stop(self) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def stop(self) -> None:
        pass


class Ingestor:
    def __init__(
        self,
        store: VectorStore,
        embeddings: EmbeddingModel,
        sparse: Bm25Encoder,
        chunker: Chunker,
        batch_size: int = 256,
    ) -> None:
        self.store = store
        self.embeddings = embeddings
        self.sparse = sparse
        self.chunker = chunker
        self.batch_size = batch_size

    def ingest_paths(
        self,
        paths: Sequence[Path],
        collection: str,
        *,
        description: str | None = None,
        tenant: str = "public",
        progress: ProgressSink | None = None,
        groups: Sequence[str] | None = None,
    ) -> IngestReport:
        missing = [str(p) for p in paths if not Path(p).exists()]
        if missing:
            raise IngestError(f"No such file or directory: {', '.join(missing)}")
        documents, skipped = load_paths([Path(p) for p in paths])
        report = self.ingest_documents(
            documents,
            collection,
            description=description,
            tenant=tenant,
            progress=progress,
            groups=groups,
        )
        report.skipped = skipped + report.skipped
        return report

    def ingest_documents(
        self,
        documents: Iterable[Document],
        collection: str,
        *,
        description: str | None = None,
        tenant: str = "public",
        progress: ProgressSink | None = None,
        groups: Sequence[str] | None = None,
    ) -> IngestReport:
        """`groups`: who may read the documents that name no `groups` of their own (default:
        everyone in `tenant`)."""
        started = time.perf_counter()
        report = IngestReport(collection=collection, tenant=tenant)
        spec = CollectionSpec(
            dense_dim=self.embeddings.dimension, embedding_model=self.embeddings.model_name
        )
        info = self.store.ensure_collection(collection, spec)
        # each tenant describes a collection for itself: one tenant's words never steer another's
        # routing
        if description and info.descriptions.get(tenant) != description:
            self.store.set_description(collection, description, tenant=tenant)

        default = tuple(sorted({g.strip() for g in groups or () if g.strip()}))
        planned = self._plan(documents, tenant, report, default)
        all_ids = [pid for plan in planned for pid in plan.ids]
        existing = self.store.existing_ids(collection, all_ids)
        changed = [p for p in planned if not all(pid in existing for pid in p.ids)]
        unchanged = [p for p in planned if all(pid in existing for pid in p.ids)]
        report.documents_new_or_changed = len(changed)
        report.documents_unchanged = len(unchanged)

        sink: ProgressSink = progress or NoProgress()
        sink.start(sum(len(p.chunks) for p in changed))
        try:
            for group in _batches_of_docs(changed, self.batch_size):
                todo = [
                    (plan, chunk, pid)
                    for plan in group
                    for chunk, pid in zip(plan.chunks, plan.ids, strict=True)
                    if pid not in existing
                ]
                embed_started = time.perf_counter()
                dense = self.embeddings.embed_documents([c.embedding_text() for _, c, _ in todo])
                sparse = self.sparse.encode_documents([c.embedding_text() for _, c, _ in todo])
                report.embed_seconds += time.perf_counter() - embed_started
                ingested_at = now_iso()
                points = [
                    StoredPoint(
                        pid,
                        vector,
                        sparse_vector,
                        _payload(plan, chunk, tenant, ingested_at),
                    )
                    for (plan, chunk, pid), vector, sparse_vector in zip(
                        todo, dense, sparse, strict=True
                    )
                ]
                self.store.upsert(collection, points)
                report.chunks_added += len(points)
                for plan in group:
                    self._delete_stale(collection, tenant, plan)
                sink.advance(len(points))
        finally:
            sink.stop()
        self._verify_unchanged(collection, tenant, unchanged)
        if report.chunks_added:
            self.store.optimize(collection)
        report.seconds = time.perf_counter() - started
        return report

    def _plan(
        self,
        documents: Iterable[Document],
        tenant: str,
        report: IngestReport,
        default_groups: tuple[str, ...] = (),
    ) -> list[_PlannedDoc]:
        planned: dict[str, _PlannedDoc] = {}
        for doc in documents:
            try:
                groups = document_groups(doc.metadata) or default_groups
            except ValueError as error:
                report.skipped.append(SkippedFile(doc.source, str(error)))
                continue
            chunks = self.chunker.chunk(doc)
            if not chunks:
                report.skipped.append(SkippedFile(doc.source, "no text to index"))
                continue
            doc_hash = doc.content_hash()
            if groups:  # who may read it is part of what is stored: a change re-stores it
                doc_hash = hashlib.sha256(f"{doc_hash}|{','.join(groups)}".encode()).hexdigest()
                doc_hash = doc_hash[:32]
            ids = [point_id(tenant, doc.doc_id, doc_hash, str(c.chunk_index)) for c in chunks]
            if doc.doc_id in planned:
                report.skipped.append(
                    SkippedFile(doc.source, f"duplicate document id {doc.doc_id!r}: kept the last")
                )
            planned[doc.doc_id] = _PlannedDoc(doc, doc_hash, chunks, ids, groups)
        report.documents = len(planned)
        report.chunks_total = sum(len(p.chunks) for p in planned.values())
        return list(planned.values())

    def _delete_stale(self, collection: str, tenant: str, plan: _PlannedDoc) -> None:
        self.store.delete(
            collection,
            PayloadFilter(
                must={"doc_id": plan.doc.doc_id, "tenant": tenant},
                must_not={"doc_hash": plan.doc_hash},
            ),
        )

    def _verify_unchanged(self, collection: str, tenant: str, plans: list[_PlannedDoc]) -> None:
        """Catch older versions left behind by an interrupted run: one count per group of docs."""
        for start in range(0, len(plans), _COUNT_GROUP):
            group = plans[start : start + _COUNT_GROUP]
            stored = self.store.count(
                collection,
                PayloadFilter(must={"tenant": tenant, "doc_id": [p.doc.doc_id for p in group]}),
            )
            if stored != sum(len(p.chunks) for p in group):
                for plan in group:
                    self._delete_stale(collection, tenant, plan)

    def delete_documents(
        self,
        collection: str,
        *,
        doc_ids: Sequence[str] = (),
        sources: Sequence[str] = (),
        tenant: str = "public",
        groups: Sequence[str] | None = None,
    ) -> int:
        """Remove documents (e.g. files deleted from disk); returns how many chunks went.
        `groups`: a reader limited to these removes only what it can read."""
        self.store.require(collection)
        removed = 0
        scope = reader_scope(tenant, groups)
        for key, values in (("doc_id", list(doc_ids)), ("source", list(sources))):
            if not values:
                continue
            where = PayloadFilter(must={key: values}).and_(scope)
            count = self.store.count(collection, where)
            if count:
                self.store.delete(collection, where)
            removed += count
        return removed


def _payload(plan: _PlannedDoc, chunk: Chunk, tenant: str, ingested_at: str) -> dict[str, Any]:
    return {
        "doc_id": plan.doc.doc_id,
        "doc_hash": plan.doc_hash,
        "source": plan.doc.source,
        "title": chunk.title,
        "heading_path": list(chunk.heading_path),
        "chunk_index": chunk.chunk_index,
        "chunk_count": len(plan.chunks),
        "text": chunk.text,
        "tenant": tenant,
        "ingested_at": ingested_at,
        **({"groups": list(plan.groups)} if plan.groups else {}),
    }


def _batches_of_docs(plans: list[_PlannedDoc], target_chunks: int) -> Iterator[list[_PlannedDoc]]:
    """Whole documents per batch, so a document's stale chunks go right after its new ones land."""
    group: list[_PlannedDoc] = []
    size = 0
    for plan in plans:
        group.append(plan)
        size += len(plan.chunks)
        if size >= target_chunks:
            yield group
            group, size = [], 0
    if group:
        yield group
