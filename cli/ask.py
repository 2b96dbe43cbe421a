"""`agentrag ask`: one chat turn in the terminal, progress and answer printed as they stream.

The turn's events are the chat stream's (`server.events`): the same mapping the chat API
streams, rendered for a person (progress on stderr, the answer on stdout) or, with `--json`,
the turn's outcome for a script.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from agent.context import EFFORTS, AgentContext
from cli.common import (
    JsonOpt,
    TenantOpt,
    cli_settings,
    console,
    err,
    friendly_errors,
    require_choice,
    require_text,
)
from server.events import Event, final_payload, turn_events

if TYPE_CHECKING:
    from agent.services import Services

app = typer.Typer()


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
    trace: Annotated[
        bool, typer.Option("--trace/--no-trace", help="Trace the turn in Langfuse (when set up).")
    ] = True,
) -> None:
    """Ask a question: streams what the agent does, then the answer, citations and verdicts."""
    from agent.services import Services

    require_choice("--effort", effort, EFFORTS)
    require_text("question", question)
    settings = cli_settings()
    ctx = AgentContext(
        effort=cast(Any, effort),
        collections=list(collection) if collection else None,
        tenant=tenant or settings.default_tenant,
    )
    renderer = AskRenderer(quiet=as_json)
    with friendly_errors():
        services = Services(settings)
        try:
            for name in collection or []:
                services.stack.store.require(name)
            values = asyncio.run(
                run_turn_streaming(
                    services, question, ctx, thread_id=thread, on_event=renderer, trace=trace
                )
            )
        finally:
            services.tracing.shutdown()
            services.close()
    payload = final_payload(values)
    if as_json:
        console.print_json(json.dumps(payload, indent=2, default=str))
        return
    renderer.finish(payload)


async def run_turn_streaming(
    services: Services,
    question: str,
    ctx: AgentContext,
    *,
    thread_id: str | None = None,
    on_event: Callable[[Event], None],
    trace: bool = True,
) -> dict[str, Any]:
    """Run one turn, calling `on_event` for progress and tokens; returns the final state.
    The thread lives in the configured thread store, so `--thread` continues it later. With
    tracing on (and `trace`), the turn is one Langfuse trace; its id and link are returned."""
    from graphs.rag import build_graph, recursion_limit
    from server.persistence import open_persistence

    thread = thread_id or uuid.uuid4().hex
    tracing = services.tracing
    async with open_persistence(services.settings) as persistence:
        graph = build_graph(services, checkpointer=persistence.checkpointer)
        with tracing.turn(
            question=question,
            session_id=thread,
            user_id=ctx.tenant,
            traced=tracing.sampled(trace),
            tags=[f"effort:{ctx.effort}", *(f"collection:{c}" for c in ctx.collections or [])],
            metadata={"thread_id": thread, "entry": "cli"},
        ) as turn:
            config: Any = turn.with_callbacks(
                {"configurable": {"thread_id": thread}, "recursion_limit": recursion_limit(ctx)}
            )
            on_event({"type": "run", "thread_id": thread, "trace_id": turn.trace_id})
            async for event in turn_events(graph, {"messages": [("user", question)]}, config, ctx):
                on_event(event)
            state = await graph.aget_state(config)
            values = dict(state.values)
            turn.finish(values)
    await services.catalog.aclose()  # the web search client belongs to this event loop
    values["thread_id"] = thread
    values["trace_id"] = turn.trace_id
    values["trace_url"] = turn.url
    return values


class AskRenderer:
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
            for sentence in verdict["sentences"]:
                for problem in sentence.get("problems") or []:
                    console.print(f"  [yellow]{problem['detail']}[/]", highlight=False)
            missing = [p["part"] for p in verdict.get("parts") or [] if not p["covered"]]
            if missing:
                console.print(f"  [yellow]not answered:[/] {'; '.join(missing)}", highlight=False)
        if payload.get("error"):
            err.print(f"[bold red]error:[/] {payload['error']['message']}", highlight=False)
        usage = payload["usage"]
        console.print(
            f"[dim]{usage['llm_calls']} LLM calls, {usage['input_tokens']}+"
            f"{usage['output_tokens']} tokens; thread {payload['thread_id']}[/]",
            highlight=False,
        )
        if payload.get("trace_id"):
            console.print(
                f"[dim]trace {payload.get('trace_url') or payload['trace_id']}[/]", highlight=False
            )
