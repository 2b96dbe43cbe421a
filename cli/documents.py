"""Commands over document collections: ingest files, search them, list, delete, drop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.table import Table

from agent.settings import validate_collection_name
from cli.common import (
    CollectionOpt,
    JsonOpt,
    RichProgress,
    TenantOpt,
    cli_settings,
    console,
    err,
    friendly_errors,
    require_choice,
    require_text,
)
from retrievers.store import SearchMode

app = typer.Typer()


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to ingest.")],
    collection: CollectionOpt = None,
    description: Annotated[
        str | None, typer.Option(help="What the collection holds; used to route questions.")
    ] = None,
    tenant: TenantOpt = None,
    group: Annotated[
        list[str] | None,
        typer.Option(
            "--group",
            "-g",
            help="Group that may read these documents (repeatable; default: everyone in the "
            "tenant). A JSONL record's own `groups` win.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest .md .txt .html .pdf .docx .jsonl files; unchanged files are not re-embedded."""
    from retrievers.stack import RetrievalStack

    settings = cli_settings()
    name = collection or settings.default_collection
    with friendly_errors():
        validate_collection_name(name)
        declared = settings.collections.get(name)
        stack = RetrievalStack(settings)
        try:
            report = stack.ingestor.ingest_paths(
                paths,
                name,
                description=description or (declared.description if declared else None),
                tenant=tenant or settings.default_tenant,
                progress=None if as_json else RichProgress(f"Embedding into {name}"),
                groups=group,
            )
        finally:
            stack.close()
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
        return
    console.print(
        f"[bold]{name}[/]: {report.documents} documents "
        f"({report.documents_new_or_changed} new or changed, {report.documents_unchanged} "
        f"unchanged), {report.chunks_added} chunks added of {report.chunks_total}, "
        f"{report.seconds:.1f}s ({report.chunks_per_second:.0f} chunks/s)"
    )
    if report.skipped:
        table = Table(title=f"Skipped {len(report.skipped)}", title_justify="left")
        table.add_column("path")
        table.add_column("reason")
        for item in report.skipped:
            table.add_row(item.path, item.reason)
        console.print(table)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    collection: CollectionOpt = None,
    k: Annotated[int, typer.Option("-k", min=1, max=1000, help="How many chunks.")] = 10,
    mode: Annotated[str, typer.Option(help="hybrid | dense | sparse")] = "hybrid",
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a collection and print ranked chunks with scores and sources."""
    from retrievers.stack import RetrievalStack

    require_choice("--mode", mode, ("hybrid", "dense", "sparse"))
    require_text("query", query)
    settings = cli_settings()
    name = collection or settings.default_collection
    with friendly_errors():
        stack = RetrievalStack(settings)
        try:
            hits = stack.retriever.search(
                query,
                name,
                k=k,
                mode=cast(SearchMode, mode),
                tenant=tenant or settings.default_tenant,
            )
        finally:
            stack.close()
    if as_json:
        rows = [
            {
                "rank": i,
                "score": h.score,
                "id": h.id,
                "doc_id": h.doc_id,
                "title": h.title,
                "source": h.source,
                "heading_path": list(h.heading_path),
                "chunk_index": h.chunk_index,
                "text": h.text,
            }
            for i, h in enumerate(hits, 1)
        ]
        console.print_json(json.dumps(rows))
        return
    if not hits:
        console.print("No results.")
        return
    for i, h in enumerate(hits, 1):
        where = " > ".join(part for part in (h.title, *h.heading_path) if part)
        console.print(f"[bold]{i:>2}.[/] [cyan]{h.score:.4f}[/]  [bold]{where}[/]", highlight=False)
        console.print(f"    [dim]{h.source} (chunk {h.chunk_index})[/]", highlight=False)
        snippet = " ".join(h.text.split())
        console.print(f"    {snippet[:300]}{'…' if len(snippet) > 300 else ''}", highlight=False)


@app.command()
def collections(as_json: JsonOpt = False) -> None:
    """List collections with their sizes and descriptions."""
    from retrievers.stack import open_store

    settings = cli_settings()
    with friendly_errors():
        store = open_store(settings)
        try:
            infos = store.list_collections()
        finally:
            store.close()
    tenant = settings.default_tenant
    if as_json:
        console.print_json(json.dumps([_info(info, tenant) for info in infos]))
        return
    if not infos:
        console.print(
            "No collections yet. Create one with `agentrag ingest PATH --collection NAME`."
        )
        return
    table = Table()
    for col in ("collection", "chunks", "description", "embedding model", "created"):
        table.add_column(col)
    for info in infos:
        table.add_row(
            info.name,
            str(info.points),
            info.description_for(tenant, tenant),
            info.embedding_model,
            info.created_at,
        )
    console.print(table)


def _info(info: Any, tenant: str) -> dict[str, Any]:
    """Descriptions as the CLI's tenant (AGENTRAG_DEFAULT_TENANT) wrote them; `descriptions`
    has every tenant's."""
    return {
        "name": info.name,
        "points": info.points,
        "description": info.description_for(tenant, tenant),
        "descriptions": dict(info.descriptions),
        "dense_dim": info.dense_dim,
        "embedding_model": info.embedding_model,
        "created_at": info.created_at,
    }


@app.command()
def delete(
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    doc_id: Annotated[
        list[str] | None, typer.Option("--doc-id", help="Document id (repeatable).")
    ] = None,
    source: Annotated[
        list[Path] | None, typer.Option("--source", help="Source file path (repeatable).")
    ] = None,
    tenant: TenantOpt = None,
) -> None:
    """Delete documents from a collection, e.g. files removed from disk."""
    from retrievers.stack import RetrievalStack

    if not doc_id and not source:
        err.print("[bold red]error:[/] give --doc-id or --source")
        raise typer.Exit(2)
    settings = cli_settings()
    sources = [str(p.expanduser().resolve()) for p in source or []]
    with friendly_errors():
        stack = RetrievalStack(settings)
        try:
            removed = stack.ingestor.delete_documents(
                collection,
                doc_ids=doc_id or [],
                sources=sources,
                tenant=tenant or settings.default_tenant,
            )
        finally:
            stack.close()
    console.print(f"Removed {removed} chunks from {collection}.")


@app.command("drop-collection")
def drop_collection(
    name: Annotated[str, typer.Argument(help="Collection to delete with all its chunks.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a whole collection."""
    from retrievers.stack import open_store

    settings = cli_settings()
    if not yes and not typer.confirm(f"Delete collection {name!r} and all its chunks?"):
        raise typer.Exit(1)
    with friendly_errors():
        store = open_store(settings)
        try:
            store.drop_collection(name)
        finally:
            store.close()
    console.print(f"Dropped {name}.")
