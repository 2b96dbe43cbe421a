"""`agentrag keys`: API keys of the chat server."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from agent.settings import validate_collection_name
from cli.common import err, friendly_errors, require_text
from server.auth import hash_key, new_key

app = typer.Typer(help="API keys of the chat server.", no_args_is_help=True)


@app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant whose documents the key may read.")],
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="Collection the key may use (repeatable)."),
    ] = None,
    name: Annotated[str, typer.Option(help="Who holds the key, for logs.")] = "",
    group: Annotated[
        list[str] | None,
        typer.Option(
            "--group",
            "-g",
            help="Group the key's holder is in (repeatable): documents given groups are read "
            "only by keys in one of them.",
        ),
    ] = None,
) -> None:
    """Make a new API key: prints the key once, and the hashed entry for the configuration."""
    require_text("--tenant", tenant)
    for c in collection or []:
        with friendly_errors():
            validate_collection_name(c)
    key = new_key()
    entry: dict[str, Any] = {"sha256": hash_key(key), "tenant": tenant}
    if collection:
        entry["collections"] = list(collection)
    if name:
        entry["name"] = name
    if group:
        for g in group:
            require_text("--group", g)
        entry["groups"] = sorted(set(group))
    err.print("[bold]API key[/] (shown once; give it to the client):")
    typer.echo(key)
    err.print(
        "\n[bold]Add to AGENTRAG_API_KEYS[/] (a JSON list) or to `api_keys` in agentrag.toml:"
    )
    typer.echo(json.dumps(entry))  # never wrapped: it is pasted into configuration
