"""`agentrag prompts`: the prompts the agent uses, and handing them to Langfuse prompt management.

`push` creates each local prompt file in Langfuse (as a new version, with Langfuse's `{{name}}`
placeholders) under a label; with `AGENTRAG_LANGFUSE_PROMPT_LABEL` set to that label, the agent
then takes its prompts from Langfuse, where a team edits, versions and rolls them back.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import JsonOpt, cli_settings, console, err, friendly_errors
from prompts.loader import available_prompts, load_prompt, to_mustache

app = typer.Typer(help="The agent's prompts, and Langfuse prompt management.", no_args_is_help=True)


@app.command("list")
def prompts_list(as_json: JsonOpt = False) -> None:
    """The prompts the agent uses: name, newest local version, what it is for."""
    rows = [load_prompt(name) for name in sorted(available_prompts())]
    if as_json:
        typer.echo(
            json.dumps(
                [{"name": p.name, "version": p.version, "description": p.description} for p in rows]
            )
        )
        return
    for p in rows:
        console.print(f"[bold]{p.name}[/] v{p.version}  [dim]{p.description}[/]", highlight=False)


@app.command("push")
def prompts_push(
    label: Annotated[
        str, typer.Option(help="Label the new versions get (the agent asks for this label).")
    ] = "production",
    name: Annotated[
        list[str] | None, typer.Option("--name", "-n", help="Only this prompt (repeatable).")
    ] = None,
) -> None:
    """Create the local prompts in Langfuse, each as a new version with `--label`."""
    from agent.errors import ConfigError
    from agent.tracing import Tracing

    settings = cli_settings()
    tracing = Tracing(settings)
    names = list(name or sorted(available_prompts()))
    with friendly_errors():
        if not tracing.enabled:
            raise ConfigError(
                "Langfuse is not set up: set LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and "
                "LANGFUSE_BASE_URL."
            )
        unknown = [n for n in names if n not in available_prompts()]
        if unknown:
            raise ConfigError(
                f"No local prompt {', '.join(map(repr, unknown))}; see `agentrag prompts list`."
            )
    try:
        for prompt_name in names:
            local = load_prompt(prompt_name)
            try:
                created = tracing.client.create_prompt(
                    name=local.name,
                    prompt=to_mustache(local.text),
                    labels=[label],
                    type="text",
                    commit_message=f"{local.id} from agentrag: {local.description}"[:500],
                )
            except Exception as exc:
                err.print(
                    f"[bold red]error:[/] Langfuse refused prompt {local.name!r}: {exc}",
                    highlight=False,
                )
                raise typer.Exit(1) from None
            console.print(
                f"{local.id} -> Langfuse {created.name} version {created.version} ({label})",
                highlight=False,
            )
    finally:
        tracing.shutdown()
    err.print(
        f"Set AGENTRAG_LANGFUSE_PROMPT_LABEL={label} for the agent to use them.", highlight=False
    )
