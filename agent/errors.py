"""One small error hierarchy, shared by every package.

Messages are written for the person running agentrag: they say what went wrong and what to do.
"""

from __future__ import annotations


class AgentragError(Exception):
    """Base class of every error agentrag raises on purpose."""


class ConfigError(AgentragError):
    """A setting is missing or invalid; raised at start, never deep inside a request."""


class StoreError(AgentragError):
    """The vector store refused an operation or cannot be reached."""


class CollectionNotFoundError(StoreError):
    """A collection was named that does not exist in the configured store."""

    def __init__(self, name: str, available: list[str] | None = None) -> None:
        hint = f" Available: {', '.join(sorted(available))}." if available else ""
        super().__init__(
            f"Collection {name!r} does not exist.{hint} "
            f"Create it with `agentrag ingest PATH --collection {name}`."
        )
        self.name = name


class CollectionMismatchError(StoreError):
    """A collection was built for another embedding model (another vector size)."""


class EmbeddingError(AgentragError):
    """The embedding model could not be loaded or the embedding service failed."""


class IngestError(AgentragError):
    """Ingestion cannot start (for example a path that does not exist)."""
