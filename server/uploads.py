"""Uploaded documents into a collection, the way `agentrag ingest` puts files in.

Uploaded files get ids from their names (`upload:<name>`), so uploading the same file again
replaces it, and an unchanged one embeds nothing. Blocking work (disk, parsing, embedding): run
it in a thread.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from fastapi import UploadFile

from agent.services import Services
from retrievers.loaders import load_paths
from server import schemas

UPLOAD_PREFIX = "upload:"


def ingest_uploads(
    services: Services,
    tenant: str,
    collection: str,
    files: list[UploadFile],
    description: str | None,
    unsupported: list[str],
) -> schemas.UploadReport:
    """`unsupported`: names of files not to read, reported as skipped."""
    with tempfile.TemporaryDirectory(prefix="agentrag-upload-") as tmp:
        paths: list[Path] = []
        names: dict[str, str] = {}
        for upload in files:
            filename = Path(upload.filename or "").name
            if not filename or filename in unsupported:
                continue
            path = Path(tmp) / f"{len(paths)}-{filename}"
            with path.open("wb") as out:
                while chunk := upload.file.read(1 << 20):
                    out.write(chunk)
            paths.append(path)
            names[str(path.resolve())] = filename
        documents, skipped = load_paths(paths)
        renamed = [
            replace(
                doc,
                doc_id=_renamed(doc.doc_id, names, UPLOAD_PREFIX),
                source=_renamed(doc.source, names, UPLOAD_PREFIX),
            )
            for doc in documents
        ]
        report = services.stack.ingestor.ingest_documents(
            renamed, collection, description=description, tenant=tenant
        )
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


def _renamed(value: str, names: dict[str, str], prefix: str = "") -> str:
    """A temporary upload path (at the start of an id, source or report path) replaced by the
    file's own name; JSONL records' ids are their own and stay."""
    for tmp_path, name in names.items():
        if value.startswith(tmp_path):
            return prefix + name + value[len(tmp_path) :]
    return value
