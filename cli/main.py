"""The `agentrag` command line.

Every command reads the same settings (AGENTRAG_* variables, agentrag.toml); an invalid setting
or a user mistake prints one red line saying what to do and exits with status 2, never a
traceback. `--json` output is for scripts; the default output is for people.
"""

from __future__ import annotations

import typer

from cli import ask, documents, evaluate, keys, prompts, serve

app = typer.Typer(
    name="agentrag",
    help="Agentic RAG over your documents: ingest them into Qdrant, search them, ask them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(documents.app)
app.add_typer(ask.app)
app.add_typer(serve.app)
app.add_typer(evaluate.app, name="eval")
app.add_typer(keys.app, name="keys")
app.add_typer(prompts.app, name="prompts")


def main() -> None:  # pragma: no cover - console script entry
    app()
