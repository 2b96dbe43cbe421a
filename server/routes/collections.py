"""`/v1/collections`: the document collections a caller may search, and uploads into them."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from agent.errors import (
    AgentragError,
    CollectionMismatchError,
    CollectionNotFoundError,
    ConfigError,
    EmbeddingError,
    IngestError,
    StoreError,
)
from agent.settings import validate_collection_name
from retrievers.loaders import SUPPORTED_SUFFIXES
from retrievers.parse_worker import ParseLimitError
from server import schemas
from server.auth import Principal
from server.deps import Caller, State
from server.errors import ApiError
from server.logs import log
from server.uploads import ingest_uploads

router = APIRouter(tags=["collections"])

DISCONNECT_POLL_S = 0.25
"""How often an upload being read checks that its client still waits."""

ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": schemas.ErrorResponse},
    404: {"model": schemas.ErrorResponse},
    413: {"model": schemas.ErrorResponse},
    409: {"model": schemas.ErrorResponse},
    415: {"model": schemas.ErrorResponse},
    422: {"model": schemas.ErrorResponse},
    503: {"model": schemas.ErrorResponse},
}


@router.get("/v1/collections", response_model=schemas.CollectionList)
async def list_collections(state: State, caller: Caller) -> schemas.CollectionList:
    """The caller's own view: collections its tenant uses or that are shared, each with the
    tenant's description and chunk count; another tenant's collections are not listed."""
    infos = await asyncio.to_thread(state.services.catalog.collections, None, caller.tenant)
    return schemas.CollectionList(
        collections=[
            schemas.CollectionModel(name=i.name, description=i.description, points=i.points)
            for i in infos
            if caller.allows(i.name)
        ]
    )


@router.post(
    "/v1/collections/{name}/documents",
    summary="Upload documents (md, txt, html, pdf, docx, jsonl); unchanged files embed nothing",
    response_model=schemas.UploadReport,
    responses=ERRORS,
)
async def upload_documents(
    name: str,
    request: Request,
    state: State,
    caller: Caller,
    files: Annotated[list[UploadFile], File(description="One or more documents.")],
    description: Annotated[str | None, Form()] = None,
    groups: Annotated[
        str | None,
        Form(
            description="Comma-separated groups that may read these documents (default: the "
            "key's groups, or everyone in the tenant); a JSONL record's own `groups` win."
        ),
    ] = None,
) -> schemas.UploadReport:
    _require_writable(name, caller)
    given = [g.strip() for g in (groups or "").split(",") if g.strip()] or None
    if given and caller.groups is not None and not set(given) <= set(caller.groups):
        outside = ", ".join(sorted(set(given) - set(caller.groups)))
        raise ApiError(403, "forbidden_group", f"This key may not give documents to {outside}.")
    if len(files) > state.settings.max_upload_files:
        raise ApiError(
            413,
            "too_many_files",
            f"The upload has {len(files)} files; the limit is {state.settings.max_upload_files}.",
        )
    unsupported = [
        f.filename or "?"
        for f in files
        if Path(f.filename or "").suffix.lower() not in SUPPORTED_SUFFIXES
    ]
    if len(unsupported) == len(files):
        raise ApiError(
            415,
            "unsupported_file_type",
            f"Unsupported file type: {', '.join(unsupported)}. Supported: "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))}.",
        )
    stop = threading.Event()
    watcher = asyncio.create_task(_stop_when_gone(request, stop))
    try:
        return await asyncio.to_thread(
            ingest_uploads,
            state.services,
            state.settings,
            caller.tenant,
            name,
            files,
            description,
            unsupported,
            stop,
            given,
            caller.groups,
        )
    except ParseLimitError as exc:
        if exc.reason == "stopped":
            log(logging.INFO, "upload stopped: the client went away", collection=name)
            raise ApiError(400, "client_gone", str(exc)) from None
        raise ApiError(413, "upload_too_slow", str(exc)) from None
    except IngestError as exc:
        raise ApiError(422, "unreadable_upload", str(exc)) from None
    except CollectionMismatchError as exc:
        raise ApiError(409, "collection_mismatch", str(exc)) from None
    except StoreError as exc:
        raise _store_unavailable(exc) from None
    except EmbeddingError as exc:
        log(logging.WARNING, "upload embedding failed", error=str(exc))
        raise ApiError(
            503,
            "dependency_unavailable",
            "The embedding service is unavailable; nothing was stored. Try again shortly.",
        ) from None
    finally:
        stop.set()  # a handler cancelled (shutdown) stops the child too
        watcher.cancel()


async def _stop_when_gone(request: Request, stop: threading.Event) -> None:
    """Sets `stop` when the client disconnects, so the child reading its files is killed."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
    stop.set()


@router.delete(
    "/v1/collections/{name}/documents/{doc_id:path}",
    status_code=204,
    responses=ERRORS,
)
async def delete_document(name: str, doc_id: str, state: State, caller: Caller) -> Response:
    _require_writable(name, caller)
    try:
        removed = await asyncio.to_thread(
            state.services.stack.ingestor.delete_documents,
            name,
            doc_ids=[doc_id],
            tenant=caller.tenant,
            groups=caller.groups,
        )
    except StoreError as exc:
        if isinstance(exc, CollectionNotFoundError):
            raise ApiError(
                404, "document_not_found", f"No document {doc_id!r} in {name!r}."
            ) from None
        raise _store_unavailable(exc) from None
    except AgentragError:
        raise ApiError(404, "document_not_found", f"No document {doc_id!r} in {name!r}.") from None
    if not removed:
        raise ApiError(404, "document_not_found", f"No document {doc_id!r} in {name!r}.")
    return Response(status_code=204)


def _require_writable(name: str, caller: Principal) -> None:
    """A valid collection name (422) that the caller's key may use (403)."""
    try:
        validate_collection_name(name)
    except ConfigError as exc:
        raise ApiError(422, "invalid_collection_name", str(exc)) from None
    if not caller.allows(name):
        raise ApiError(403, "forbidden_collection", f"This key may not use collection {name!r}.")


def _store_unavailable(exc: StoreError) -> ApiError:
    """The store refused a write (a read-only or full disk, a server down): 503, the detail
    (paths, addresses) in the log only."""
    log(logging.WARNING, "store write failed", error=str(exc))
    return ApiError(
        503, "store_unavailable", "The document store cannot take writes now; try again later."
    )
