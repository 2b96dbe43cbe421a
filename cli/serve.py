"""Running the chat server: its effective settings, and `agentrag serve`."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from agent.settings import Settings
from cli.common import cli_settings, console, err, friendly_errors, require_choice

app = typer.Typer()


@app.command()
def config() -> None:
    """Show the effective settings (secrets hidden)."""
    settings = cli_settings()
    console.print_json(settings.model_dump_json())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
) -> None:
    """Serve the chat API (SSE, OpenAI-compatible) and the web chat page at http://HOST:PORT/."""
    import uvicorn

    from graphs.rag import shared_services
    from server.app import create_app

    require_choice("--log-level", log_level, ("debug", "info", "warning", "error"))
    settings = cli_settings()
    if not settings.api_keys:
        err.print(
            "[yellow]No API keys configured: the server is open, every caller uses tenant "
            "'public'.[/] Create keys with `agentrag keys create`."
        )
    with friendly_errors():
        # A thread store that cannot be opened is a configuration problem: say so in one line
        # here, not in a traceback from inside the server's startup.
        asyncio.run(_open_thread_store(settings))
    err.print(f"agentrag serving on http://{host}:{port}/ (API docs at /docs)")
    with friendly_errors():
        # One worker: the embedded store has one owner per process. Scale out with the Qdrant
        # server backend and several instances.
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level=log_level,
            timeout_graceful_shutdown=5,
        )
    # the app flushed its traces when it stopped; a Langfuse that did not take them in time
    # must not hold the process at exit either
    shared_services().tracing.shutdown(timeout_s=0.1)


async def _open_thread_store(settings: Settings) -> None:
    from server.persistence import open_persistence

    async with open_persistence(settings):
        pass
