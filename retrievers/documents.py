"""The data that flows from loaders through chunking into the store, and back out of search."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text under one heading path (e.g. ["Install", "From source"])."""

    text: str
    heading_path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Document:
    """One source document, split by its loader into sections that keep their headings.

    `doc_id` is stable across runs for the same source (the resolved file path, or the `id` of a
    JSONL record), so re-ingesting replaces instead of duplicating.
    """

    doc_id: str
    source: str
    title: str
    sections: tuple[Section, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(section.text for section in self.sections)

    def content_hash(self) -> str:
        """Hash of everything that ends up in chunks: a change here means re-embedding."""
        digest = hashlib.sha256()
        digest.update(self.title.encode("utf-8"))
        for section in self.sections:
            digest.update(b"\x00" + "\x1f".join(section.heading_path).encode("utf-8"))
            digest.update(b"\x00" + section.text.encode("utf-8"))
        return digest.hexdigest()[:32]


def document_groups(metadata: dict[str, Any]) -> tuple[str, ...]:
    """The groups a document is for (its `groups` metadata), sorted; none means everyone in its
    tenant. Raises ValueError when `groups` is not a list of non-empty strings."""
    groups = metadata.get("groups")
    if groups is None:
        return ()
    if not isinstance(groups, list) or not all(isinstance(g, str) and g.strip() for g in groups):
        raise ValueError('"groups" must be a list of non-empty strings')
    return tuple(sorted({g.strip() for g in groups}))


@dataclass(frozen=True, slots=True)
class Chunk:
    """A token-bounded piece of a document, carrying its title and heading path."""

    doc_id: str
    chunk_index: int
    text: str
    title: str
    heading_path: tuple[str, ...]
    source: str

    def embedding_text(self) -> str:
        """What gets embedded: title and headings give the chunk its context."""
        context = " > ".join(part for part in (self.title, *self.heading_path) if part)
        return f"{context}\n{self.text}" if context else self.text


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file ingestion did not take, and why (reported in the summary, never silently lost)."""

    path: str
    reason: str
