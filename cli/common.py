"""What every command shares: the consoles, reading settings, refusing bad input in one red
line (exit status 2, never a traceback), and the ingestion progress bar."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

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

from agent.errors import AgentragError
from agent.settings import Settings, load_settings

console = Console()
"""Results: what a script reads (`--json`) or a person came for."""
err = Console(stderr=True)
"""Progress, warnings and errors."""


@contextmanager
def friendly_errors() -> Iterator[None]:
    try:
        yield
    except AgentragError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def cli_settings(**overrides: Any) -> Settings:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with friendly_errors():
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def require_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        err.print(
            f"[bold red]error:[/] {option} must be one of {', '.join(choices)}, not {value!r}"
        )
        raise typer.Exit(2)


def require_text(what: str, value: str) -> None:
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
