"""The `agentrag` command line.

Every command reads the same settings (AGENTRAG_* variables, agentrag.toml); an invalid setting
or a user mistake prints one red line saying what to do and exits with status 2, never a
traceback. `--json` output is for scripts; the default output is for people.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from agent.errors import AgentragError
from agent.settings import Settings, load_settings, validate_collection_name
from retrievers.store import SearchMode

app = typer.Typer(
    name="agentrag",
    help="Agentic RAG over your documents: ingest them into Qdrant, search them, ask them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
eval_app = typer.Typer(
    help="Benchmarks: retrieval quality, ingest throughput, latency.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")
keys_app = typer.Typer(help="API keys of the chat server.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

console = Console()
err = Console(stderr=True)


@contextmanager
def _friendly_errors() -> Iterator[None]:
    try:
        yield
    except AgentragError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def _settings(**overrides: Any) -> Settings:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with _friendly_errors():
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def _require_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        err.print(
            f"[bold red]error:[/] {option} must be one of {', '.join(choices)}, not {value!r}"
        )
        raise typer.Exit(2)


def _require_text(what: str, value: str) -> None:
    if not value.strip():
        err.print(f"[bold red]error:[/] the {what} is empty")
        raise typer.Exit(2)


class RichProgress:
    """Adapts a rich progress bar to the ingestion progress protocol."""

    def __init__(self, description: str) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("chunks"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self._description = description
        self._task: Any = None

    def start(self, total: int) -> None:
        if total:
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=total)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, n)

    def stop(self) -> None:
        if self._task is not None:
            self._progress.stop()


CollectionOpt = Annotated[
    str | None, typer.Option("--collection", "-c", help="Collection name (default: settings).")
]
TenantOpt = Annotated[str | None, typer.Option(help="Tenant (default: settings, `public`).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to ingest.")],
    collection: CollectionOpt = None,
    description: Annotated[
        str | None, typer.Option(help="What the collection holds; used to route questions.")
    ] = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ingest .md .txt .html .pdf .docx .jsonl files; unchanged files are not re-embedded."""
    from retrievers.stack import RetrievalStack

    settings = _settings()
    name = collection or settings.default_collection
    with _friendly_errors():
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

    _require_choice("--mode", mode, ("hybrid", "dense", "sparse"))
    _require_text("query", query)
    settings = _settings()
    name = collection or settings.default_collection
    with _friendly_errors():
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
    from retrievers.store import open_store

    settings = _settings()
    with _friendly_errors():
        store = open_store(settings)
        try:
            infos = store.list_collections()
        finally:
            store.close()
    if as_json:
        console.print_json(json.dumps([_info(info) for info in infos]))
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
            info.name, str(info.points), info.description, info.embedding_model, info.created_at
        )
    console.print(table)


def _info(info: Any) -> dict[str, Any]:
    return {
        "name": info.name,
        "points": info.points,
        "description": info.description,
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
    settings = _settings()
    sources = [str(p.expanduser().resolve()) for p in source or []]
    with _friendly_errors():
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
    from retrievers.store import open_store

    settings = _settings()
    if not yes and not typer.confirm(f"Delete collection {name!r} and all its chunks?"):
        raise typer.Exit(1)
    with _friendly_errors():
        store = open_store(settings)
        try:
            store.drop_collection(name)
        finally:
            store.close()
    console.print(f"Dropped {name}.")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="Your question.")],
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="Collection to search (repeatable; default all)."),
    ] = None,
    effort: Annotated[str, typer.Option(help="low | medium | high: LLM calls spent.")] = "medium",
    thread: Annotated[
        str | None, typer.Option(help="Continue this conversation thread (printed after a run).")
    ] = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask a question: streams what the agent does, then the answer, citations and verdicts."""
    import asyncio

    from agent.context import AgentContext
    from agent.services import Services
    from server.ask import dumps, run_turn_streaming
    from server.events import final_payload

    _require_choice("--effort", effort, ("low", "medium", "high"))
    _require_text("question", question)
    settings = _settings()
    ctx = AgentContext(
        effort=cast(Any, effort),
        collections=list(collection) if collection else None,
        tenant=tenant or settings.default_tenant,
    )
    renderer = _AskRenderer(quiet=as_json)
    with _friendly_errors():
        services = Services(settings)
        try:
            for name in collection or []:
                services.stack.store.require(name)
            values = asyncio.run(
                run_turn_streaming(services, question, ctx, thread_id=thread, on_event=renderer)
            )
        finally:
            services.close()
    payload = final_payload(values)
    if as_json:
        console.print_json(dumps(payload))
        return
    renderer.finish(payload)


class _AskRenderer:
    """Prints agent progress to stderr and the answer to stdout as it streams."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.streaming = False
        self.streamed: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        kind = event["type"]
        if kind == "token":
            if not self.streaming:
                console.print("\n[bold]Answer[/]")
                self.streaming = True
            console.print(event["text"], end="", highlight=False, markup=False)
            self.streamed.append(event["text"])
            return
        if self.streaming:
            console.print()
            self.streaming = False
        if kind == "route":
            scores = ", ".join(f"{k} {v:.2f}" for k, v in event["scores"].items())
            err.print(
                f"[cyan]route[/] {event['kind']} -> {', '.join(event['collections']) or '-'}"
                f" ({event['reason']}{'; ' + scores if scores else ''})",
                highlight=False,
            )
        elif kind == "plan":
            err.print(f"[cyan]plan[/] {event['mode']} ({event['source']})", highlight=False)
            for sub in event["subqueries"]:
                err.print(f"  {sub['index'] + 1}. {sub['query']}", highlight=False)
        elif kind == "retrieval":
            err.print(f"[cyan]retrieve[/] {event['query']!r}", highlight=False)
            event["chunks"].sort(key=lambda c: -c["relevance"])
            for c in event["chunks"][:5]:
                err.print(
                    f"  {c['relevance']:.2f}  {c['title']} [dim]({c['collection']})[/]",
                    highlight=False,
                )
        elif kind == "grade":
            err.print(
                f"[cyan]grade[/] {event['grade']}: kept {event['kept']}, dropped {event['dropped']}"
            )
        elif kind == "rewrite":
            err.print(f"[cyan]rewrite[/] {event['query']!r}", highlight=False)
        elif kind == "verdict" and event.get("action") == "regenerate":
            err.print("[yellow]reflect[/] unsupported sentences: writing the answer again")
        elif kind == "flag":
            err.print(f"[yellow]flag[/] {event['flag']}: {event['reason']}", highlight=False)

    def finish(self, payload: dict[str, Any]) -> None:
        if self.streaming:
            console.print()
        if payload["answer"].strip() != "".join(self.streamed).strip():
            title = "Answer, with citations" if self.streamed else "Answer"
            console.print(f"\n[bold]{title}[/]")
            console.print(payload["answer"], highlight=False, markup=False)
        if payload["citations"]:
            console.print("\n[bold]Sources[/]")
            for c in payload["citations"]:
                console.print(
                    f"  [{c['n']}] {c['title']} [dim]{c['source']} (chunk {c['chunk_index']})[/]",
                    highlight=False,
                )
        verdict = payload.get("verdict") or {}
        if verdict.get("sentences"):
            supported = sum(1 for s in verdict["sentences"] if s["supported"])
            console.print(
                f"\n[bold]Check[/] {supported}/{len(verdict['sentences'])} sentences supported; "
                f"grounded: {verdict['grounded']}, answers the question: "
                f"{verdict['answers_question']}"
            )
        if payload.get("error"):
            err.print(f"[bold red]error:[/] {payload['error']['message']}", highlight=False)
        usage = payload["usage"]
        console.print(
            f"[dim]{usage['llm_calls']} LLM calls, {usage['input_tokens']}+"
            f"{usage['output_tokens']} tokens; thread {payload['thread_id']}[/]",
            highlight=False,
        )


@app.command()
def config() -> None:
    """Show the effective settings (secrets hidden)."""
    settings = _settings()
    console.print_json(settings.model_dump_json())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
) -> None:
    """Serve the chat API (SSE, OpenAI-compatible) and the web chat page at http://HOST:PORT/."""
    import asyncio

    import uvicorn

    from server.app import create_app

    _require_choice("--log-level", log_level, ("debug", "info", "warning", "error"))
    settings = _settings()
    if not settings.api_keys:
        err.print(
            "[yellow]No API keys configured: the server is open, every caller uses tenant "
            "'public'.[/] Create keys with `agentrag keys create`."
        )
    with _friendly_errors():
        # A thread store that cannot be opened is a configuration problem: say so in one line
        # here, not in a traceback from inside the server's startup.
        asyncio.run(_open_thread_store(settings))
    err.print(f"agentrag serving on http://{host}:{port}/ (API docs at /docs)")
    with _friendly_errors():
        # One worker: the embedded store has one owner per process. Scale out with the Qdrant
        # server backend and several instances.
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level=log_level,
            timeout_graceful_shutdown=5,
        )


async def _open_thread_store(settings: Settings) -> None:
    from server.persistence import open_persistence

    async with open_persistence(settings):
        pass


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant whose documents the key may read.")],
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="Collection the key may use (repeatable)."),
    ] = None,
    name: Annotated[str, typer.Option(help="Who holds the key, for logs.")] = "",
) -> None:
    """Make a new API key: prints the key once, and the hashed entry for the configuration."""
    from server.auth import hash_key, new_key

    _require_text("--tenant", tenant)
    for c in collection or []:
        with _friendly_errors():
            validate_collection_name(c)
    key = new_key()
    entry: dict[str, Any] = {"sha256": hash_key(key), "tenant": tenant}
    if collection:
        entry["collections"] = list(collection)
    if name:
        entry["name"] = name
    err.print("[bold]API key[/] (shown once; give it to the client):")
    typer.echo(key)
    err.print(
        "\n[bold]Add to AGENTRAG_API_KEYS[/] (a JSON list) or to `api_keys` in agentrag.toml:"
    )
    typer.echo(json.dumps(entry))  # never wrapped: it is pasted into configuration


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: Annotated[Path, typer.Option(help="Dataset folder, e.g. ../shared/data/beir_scifact")],
    split: Annotated[str, typer.Option(help="Split with qrels (BEIR layout).")] = "test",
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    out: Annotated[Path, typer.Option(help="Where the Markdown and JSON reports go.")] = Path(
        "eval/results"
    ),
    keep: Annotated[
        bool, typer.Option(help="Use the configured data dir instead of a fresh temporary one.")
    ] = False,
) -> None:
    """Ingest a corpus into a fresh collection; report dense, sparse and hybrid side by side."""
    from eval.retrieval import fresh_data_dir, remove_data_dir, run_retrieval_eval, write_report

    temp_dir = None if keep else fresh_data_dir()
    settings = _settings(data_dir=temp_dir)
    try:
        with _friendly_errors():
            result = run_retrieval_eval(
                dataset,
                settings,
                split=split,
                limit=limit,
                progress=RichProgress("Ingesting corpus"),
                log=lambda line: err.print(f"[dim]{line}[/]"),
            )
    finally:
        if temp_dir is not None:
            remove_data_dir(temp_dir)
    md, js = write_report(result, out)
    console.print(result.to_markdown())
    console.print(f"Reports: {md} and {js}")


@eval_app.command("agent")
def eval_agent(
    dataset: Annotated[
        Path, typer.Option(help="Dataset folder, e.g. ../shared/data/hotpotqa_dev500")
    ],
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    effort: Annotated[
        list[str] | None, typer.Option(help="Effort tiers to run (repeatable; default all three).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where the reports go.")] = Path("eval/results"),
    keep: Annotated[
        bool, typer.Option(help="Use the configured data dir instead of a fresh temporary one.")
    ] = False,
) -> None:
    """Naive baseline vs the agent per effort tier: evidence recall, EM/F1, LLM calls, latency."""
    from eval.agent import EFFORTS, run_agent_eval, write_agent_report
    from eval.retrieval import fresh_data_dir, remove_data_dir

    temp_dir = None if keep else fresh_data_dir()
    settings = _settings(data_dir=temp_dir)
    try:
        with _friendly_errors():
            result = run_agent_eval(
                dataset,
                settings,
                limit=limit,
                efforts=effort or list(EFFORTS),
                progress=RichProgress("Ingesting corpus"),
                log=lambda line: err.print(f"[dim]{line}[/]"),
            )
    finally:
        if temp_dir is not None:
            remove_data_dir(temp_dir)
    paths = write_agent_report(result, out)
    console.print(result.to_markdown())
    console.print("Reports: " + ", ".join(str(p) for p in paths))


@eval_app.command("fusion-sweep")
def eval_fusion_sweep(
    dataset: Annotated[Path, typer.Option(help="Dataset folder, e.g. ../shared/data/beir_scifact")],
    split: Annotated[str, typer.Option(help="Tuning split; never the one you report.")] = "train",
    out: Annotated[Path, typer.Option(help="Where the Markdown report goes.")] = Path(
        "eval/results"
    ),
) -> None:
    """Grid-search hybrid fusion settings (RRF k, weights, prefetch, DBSF) on a tuning split."""
    from eval.fusion_sweep import run_fusion_sweep, sweep_markdown

    settings = _settings()
    with _friendly_errors():
        rows = run_fusion_sweep(
            dataset, settings, split=split, log=lambda line: err.print(f"[dim]{line}[/]")
        )
    report = sweep_markdown(rows, dataset.name, split)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fusion-sweep-{dataset.name}-{split}.md"
    path.write_text(report, encoding="utf-8")
    console.print(report)
    console.print(f"Report: {path}")


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
