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


@app.command("serve-models")
def serve_models(
    embed: Annotated[
        str | None,
        typer.Option(help="Embedding model: a sentence-transformers name or local path."),
    ] = None,
    rerank: Annotated[
        str | None,
        typer.Option(help="Cross-encoder (one-label sequence classifier): name or local path."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    dtype: Annotated[
        str,
        typer.Option(help="auto (float16 on GPU, float32 on CPU) | float16 | bfloat16 | float32"),
    ] = "auto",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Require `Authorization: Bearer KEY` (not on /health and /metrics); default "
            "AGENTRAG_MODELS_API_KEY."
        ),
    ] = None,
    max_batch_tokens: Annotated[
        int | None,
        typer.Option(help="Padded tokens per forward pass (default 16384 on GPU, 4096 on CPU)."),
    ] = None,
    max_client_batch_size: Annotated[int, typer.Option(help="Inputs per request.")] = 1024,
    max_queued_tokens: Annotated[
        int, typer.Option(help="Tokens waiting before requests get 429.")
    ] = 2_000_000,
    max_wait_ms: Annotated[
        float, typer.Option(help="Wait for requests still being tokenized, at most this long.")
    ] = 2.0,
    max_input_length: Annotated[
        int | None, typer.Option(help="Tokens per input (default: the model's).")
    ] = None,
    auto_truncate: Annotated[
        bool, typer.Option(help="Cut over-long inputs when a request does not say `truncate`.")
    ] = False,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.")] = 2_000_000,
    onnx: Annotated[
        bool, typer.Option(help="On the CPU, run embeddings on ONNX Runtime (exported once).")
    ] = True,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
) -> None:
    """Serve embedding and reranking models over the OpenAI, TEI and Cohere protocols."""
    import uvicorn

    from agent.settings import BUNDLED_EMBEDDING_MODEL
    from retrievers.embeddings import pick_device
    from retrievers.model_engine import EngineLimits, load_engine
    from server.models_app import ModelServer, create_models_app

    require_choice("--log-level", log_level, ("debug", "info", "warning", "error"))
    settings = cli_settings()
    if api_key is None and settings.models_api_key is not None:
        api_key = settings.models_api_key.get_secret_value()
    if embed is None and rerank is None:
        embed = BUNDLED_EMBEDDING_MODEL
    with friendly_errors():
        chosen = pick_device(device)
        limits = EngineLimits(
            max_batch_tokens=max_batch_tokens or (16384 if chosen.startswith("cuda") else 4096),
            max_client_batch_size=max_client_batch_size,
            max_queued_tokens=max_queued_tokens,
            max_wait_ms=max_wait_ms,
        )
        server = ModelServer(
            api_key=api_key, max_body_bytes=max_body_bytes, auto_truncate=auto_truncate
        )
        app = create_models_app(server)
        for kind, model in (("embed", embed), ("rerank", rerank)):
            if model is None:
                continue
            err.print(f"loading {kind} model {model} on {chosen} ...")
            engine = load_engine(
                kind,  # type: ignore[arg-type]
                model,
                chosen,
                dtype,
                limits,
                onnx_cache=settings.cache_dir if onnx else None,
                max_input_length=max_input_length,
            )
            engine.warm_up()
            setattr(server, kind, engine)
            app.state.metrics.watch(engine)
            err.print(
                f"  {engine.info.backend}, {engine.info.dtype}, max {engine.info.max_input_length} "
                "tokens per input"
            )
    err.print(f"agentrag model server on http://{host}:{port}/ (API docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30)


async def _open_thread_store(settings: Settings) -> None:
    from server.persistence import open_persistence

    async with open_persistence(settings):
        pass
