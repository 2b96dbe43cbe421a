"""Uploaded documents into a collection, the way `agentrag ingest` puts files in.

Uploaded files get ids from their names (`upload:<name>`), so uploading the same file again
replaces it, and an unchanged one embeds nothing. Blocking work (disk, parsing, embedding): run
it in a thread.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from fastapi import UploadFile

from agent.services import Services
from agent.settings import Settings
from retrievers.documents import Document, SkippedFile, document_groups
from retrievers.parse_worker import ParseLimitError, parse_bounded
from retrievers.store import PayloadFilter, reader_scope
from server import schemas
from server.errors import ApiError

UPLOAD_PREFIX = "upload:"


def ingest_uploads(
    services: Services,
    settings: Settings,
    tenant: str,
    collection: str,
    files: list[UploadFile],
    description: str | None,
    unsupported: list[str],
    stop: threading.Event | None = None,
    groups: list[str] | None = None,
    reader_groups: tuple[str, ...] | None = None,
) -> schemas.UploadReport:
    """`unsupported`: names of files not to read, reported as skipped. The files are read in a
    child process bounded by the server's `upload_parse_timeout_s` and
    `upload_parse_memory_mb`, stopped
    when `stop` is set (`ParseLimitError`); nothing is stored unless they all were read.

    `groups`: who may read the documents that name none (default: the uploader's groups, or
    everyone in the tenant). `reader_groups`: the uploader's own limit, if any; it may give
    documents only to its groups, and never replace a document it cannot read."""
    with tempfile.TemporaryDirectory(prefix="agentrag-upload-") as tmp:
        paths: list[Path] = []
        names: dict[str, str] = {}
        for upload in files:
            filename = Path(upload.filename or "").name
            if not filename or filename in unsupported:
                continue
            # a folder per file keeps its own name (and so the title a loader takes from it),
            # cut to what a file system takes; the report and ids use the full name
            folder = Path(tmp) / str(len(paths))
            folder.mkdir()
            path = folder / _fitting(filename)
            with path.open("wb") as out:
                while chunk := upload.file.read(1 << 20):
                    out.write(chunk)
            paths.append(path)
            names[str(path.resolve())] = filename
        documents, skipped = (
            parse_bounded(
                paths,
                timeout_s=settings.upload_parse_timeout_s,
                memory_mb=settings.upload_parse_memory_mb,
                stop=stop,
            )
            if paths
            else ([], [])
        )
        if stop is not None and stop.is_set():
            raise ParseLimitError("Upload stopped: the client went away.", reason="stopped")
        stems = {Path(tmp_path).stem: Path(name).stem for tmp_path, name in names.items()}
        renamed = [
            replace(
                doc,
                title=stems.get(doc.title, doc.title),
                doc_id=_renamed(doc.doc_id, names, UPLOAD_PREFIX),
                source=_renamed(doc.source, names, UPLOAD_PREFIX),
            )
            for doc in documents
        ]
        given = list(groups) if groups else (list(reader_groups) if reader_groups else None)
        kept, refused = _within_reach(renamed, given, reader_groups)
        if reader_groups is not None:
            _require_reachable(services, collection, tenant, reader_groups, kept)
        report = services.stack.ingestor.ingest_documents(
            kept, collection, description=description, tenant=tenant, groups=given
        )
        report.skipped += refused
        services.catalog.forget()
    reasons = [
        {"file": _renamed(s.path, names), "reason": s.reason} for s in [*skipped, *report.skipped]
    ]
    reasons += [{"file": f, "reason": "unsupported file type"} for f in unsupported]
    return schemas.UploadReport(
        collection=collection,
        files=sorted(set(names.values())),
        documents=report.documents,
        chunks_added=report.chunks_added,
        unchanged=report.documents_unchanged,
        skipped=reasons,
    )


MAX_NAME_BYTES = 200
"""File systems take names of up to 255 bytes; uploads may be named anything."""


def _fitting(filename: str) -> str:
    """`filename` cut to `MAX_NAME_BYTES` (UTF-8), its extension kept: loaders go by it."""
    if len(filename.encode()) <= MAX_NAME_BYTES:
        return filename
    suffix = Path(filename).suffix
    suffix = suffix if len(suffix.encode()) <= 16 else ""
    stem = filename[: len(filename) - len(suffix)] if suffix else filename
    room = MAX_NAME_BYTES - len(suffix.encode())
    return stem.encode()[:room].decode(errors="ignore") + suffix


def _renamed(value: str, names: dict[str, str], prefix: str = "") -> str:
    """A temporary upload path (at the start of an id, source or report path) replaced by the
    file's own name; JSONL records' ids are their own and stay."""
    for tmp_path, name in names.items():
        if value.startswith(tmp_path):
            return prefix + name + value[len(tmp_path) :]
    return value


def _within_reach(
    documents: list[Document], default: list[str] | None, reader_groups: tuple[str, ...] | None
) -> tuple[list[Document], list[SkippedFile]]:
    """The documents an uploader limited to `reader_groups` may give to the groups they name
    (or `default`); the others, skipped with the reason."""
    if reader_groups is None:
        return documents, []
    kept: list[Document] = []
    refused: list[SkippedFile] = []
    for doc in documents:
        try:
            named = document_groups(doc.metadata) or tuple(default or ())
        except ValueError as error:
            refused.append(SkippedFile(doc.source, str(error)))
            continue
        outside = sorted(set(named) - set(reader_groups))
        if outside:
            refused.append(
                SkippedFile(doc.source, f"this key may not give documents to {', '.join(outside)}")
            )
        else:
            kept.append(doc)
    return kept, refused


def _require_reachable(
    services: Services,
    collection: str,
    tenant: str,
    reader_groups: tuple[str, ...],
    documents: list[Document],
) -> None:
    """403 when an upload would replace a document its uploader cannot read."""
    store = services.stack.store
    ids = [d.doc_id for d in documents]
    if not ids or not store.has_collection(collection):
        return
    same = PayloadFilter(must={"tenant": tenant, "doc_id": ids})
    if store.count(collection, same) > store.count(
        collection, same.and_(reader_scope(tenant, reader_groups))
    ):
        raise ApiError(
            403,
            "document_not_visible",
            "The upload would replace a document this key cannot read.",
        )
