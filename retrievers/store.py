"""The small vector-store interface both Qdrant backends implement.

Everything above this layer (ingestion, search, tools) speaks only these types, so the embedded
engine and a Qdrant server cluster are interchangeable, and one conformance suite tests both.
Each collection holds one named dense vector (`dense`) and one named sparse vector (`sparse`,
with Qdrant's IDF modifier, so Qdrant computes BM25's IDF over the live collection).
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from agent.errors import CollectionNotFoundError
from agent.settings import Settings

DENSE = "dense"
SPARSE = "sparse"

SearchMode = Literal["hybrid", "dense", "sparse"]
Fusion = Literal["rrf", "dbsf"]
Scalar = str | int | bool

INDEXED_KEYWORD_FIELDS = ("doc_id", "source", "title", "groups")
"""Payload fields with a keyword index besides `tenant` (which gets a tenant-optimised index)."""

_POINT_NAMESPACE = uuid.UUID("3f1c54d6-8a0e-4b8e-9d6c-2f9b1a7e5c40")


def point_id(*parts: str) -> str:
    """Deterministic UUID for a point: the same content always lands on the same id."""
    return str(uuid.uuid5(_POINT_NAMESPACE, "\x1f".join(parts)))


@dataclass(frozen=True, slots=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True, slots=True)
class StoredPoint:
    id: str
    dense: list[float]
    sparse: SparseVector
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SearchHit:
    id: str
    score: float
    payload: dict[str, Any]
    dense: list[float] | None = None
    """The stored dense vector, when asked for: lets callers score chunks without re-embedding."""


@dataclass(frozen=True, slots=True)
class PayloadFilter:
    """Conjunction of exact matches; a sequence value means "any of these".

    `unset_or`: the key is unset (or an empty list) or holds one of these values: a document
    with no `groups` is for everyone in its tenant, one with groups only for those groups."""

    must: Mapping[str, Scalar | Sequence[Scalar]] = field(default_factory=dict)
    must_not: Mapping[str, Scalar | Sequence[Scalar]] = field(default_factory=dict)
    unset_or: Mapping[str, Sequence[Scalar]] = field(default_factory=dict)
    any_of: tuple[tuple[PayloadFilter, ...], ...] = ()
    """Each entry holds when one of its filters does (a reader's own documents, or another
    tenant's shared ones); entries and the rest of the filter must all hold."""

    @property
    def is_empty(self) -> bool:
        return not self.must and not self.must_not and not self.unset_or and not self.any_of

    def and_(self, other: PayloadFilter | None) -> PayloadFilter:
        if other is None:
            return self
        return PayloadFilter(
            must={**self.must, **other.must},
            must_not={**self.must_not, **other.must_not},
            unset_or={**self.unset_or, **other.unset_or},
            any_of=(*self.any_of, *other.any_of),
        )


def reader_scope(
    tenant: str | Sequence[str] | None, groups: Sequence[str] | None
) -> PayloadFilter | None:
    """What a reader may see: its tenant's documents, and of those, when it has `groups`, the
    ones for everyone (no groups) or for one of its groups.

    `tenant` may be a list: the reader's own tenant first, then tenants that share a collection
    with it; of theirs, only documents for everyone are read (their groups are theirs: a group
    of the same name in another tenant is another group)."""
    if not tenant and groups is None:
        return None
    own_groups: dict[str, Sequence[Scalar]] = {"groups": list(groups)} if groups is not None else {}
    tenants = [tenant] if isinstance(tenant, str) else list(tenant or [])
    if len(tenants) <= 1:
        return PayloadFilter(must={"tenant": tenants[0]} if tenants else {}, unset_or=own_groups)
    own = PayloadFilter(must={"tenant": tenants[0]}, unset_or=own_groups)
    shared = PayloadFilter(must={"tenant": tenants[1:]}, unset_or={"groups": []})
    return PayloadFilter(any_of=((own, shared),))


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """What a collection is created with; stored alongside it so a mismatch is caught later."""

    dense_dim: int
    description: str = ""
    embedding_model: str = ""


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    points: int
    description: str
    """The collection's own description, from before descriptions were kept per tenant; it
    stands for the default tenant's when that tenant has none."""
    dense_dim: int
    embedding_model: str
    created_at: str
    descriptions: Mapping[str, str] = field(default_factory=dict)
    """Each tenant's description of the collection (each tenant routes by its own)."""

    def description_for(self, tenant: str, default_tenant: str) -> str:
        own = self.descriptions.get(tenant)
        if own is not None:
            return own
        return self.description if tenant == default_tenant else ""


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """How a hybrid query is fused; defaults come from Settings via `QueryOptions.from_settings`."""

    fusion: Fusion = "rrf"
    rrf_k: int = 60
    dense_weight: float = 1.0
    sparse_weight: float = 1.0
    prefetch_limit: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryOptions:
        return cls(
            fusion=settings.fusion,
            rrf_k=settings.rrf_k,
            dense_weight=settings.dense_weight,
            sparse_weight=settings.sparse_weight,
            prefetch_limit=settings.prefetch_limit,
        )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def collection_metadata(spec: CollectionSpec) -> dict[str, Any]:
    return {
        "description": spec.description,
        "dense_dim": spec.dense_dim,
        "embedding_model": spec.embedding_model,
        "created_at": now_iso(),
    }


def described_by_tenant(meta: Mapping[str, Any]) -> dict[str, str]:
    found = meta.get("descriptions")
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def with_description(
    meta: Mapping[str, Any], description: str, tenant: str | None
) -> dict[str, Any]:
    """Collection metadata with `tenant`'s description (or the collection's own) set."""
    out = dict(meta)
    if tenant is None:
        out["description"] = description
    else:
        out["descriptions"] = {**described_by_tenant(meta), tenant: description}
    return out


class VectorStore(ABC):
    """A Qdrant deployment holding agentrag collections."""

    @abstractmethod
    def collection_names(self) -> list[str]:
        """Every collection's name, sorted."""

    def list_collections(self) -> list[CollectionInfo]:
        return [self.get_collection(name) for name in self.collection_names()]

    @abstractmethod
    def has_collection(self, name: str) -> bool: ...

    @abstractmethod
    def create_collection(self, name: str, spec: CollectionSpec) -> None:
        """Create with named dense + sparse (IDF) vectors and payload indexes."""

    @abstractmethod
    def get_collection(self, name: str, count: bool = True) -> CollectionInfo:
        """`count`: count the collection's points (a round trip on a server); else 0."""

    @abstractmethod
    def set_description(self, name: str, description: str, tenant: str | None = None) -> None:
        """`tenant`: that tenant's description; None: the collection's own."""

    @abstractmethod
    def drop_collection(self, name: str) -> None: ...

    @abstractmethod
    def upsert(self, name: str, points: Sequence[StoredPoint]) -> None: ...

    @abstractmethod
    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """Which of these point ids are stored: lets ingestion skip what it already has."""

    @abstractmethod
    def delete(self, name: str, where: PayloadFilter) -> None:
        """Delete every point matching `where` (an empty filter is refused)."""

    @abstractmethod
    def count(self, name: str, where: PayloadFilter | None = None) -> int: ...

    @abstractmethod
    def query(
        self,
        name: str,
        *,
        dense: Sequence[float] | None = None,
        sparse: SparseVector | None = None,
        limit: int = 10,
        where: PayloadFilter | None = None,
        options: QueryOptions | None = None,
        with_dense: bool = False,
    ) -> list[SearchHit]:
        """Dense-only, sparse-only, or fused hybrid search, depending on which vectors are given."""

    @abstractmethod
    def optimize(self, name: str) -> None:
        """Build indexes after a bulk load (HNSW on the embedded engine; a no-op on a server)."""

    @abstractmethod
    def close(self) -> None: ...

    def ensure_collection(self, name: str, spec: CollectionSpec) -> CollectionInfo:
        """Create the collection if missing; refuse one built for a different embedding size."""
        from agent.errors import CollectionMismatchError, StoreError

        if not self.has_collection(name):
            try:
                self.create_collection(name, spec)
            except StoreError:
                if not self.has_collection(name):
                    raise  # not a concurrent first write that created it just before
        info = self.get_collection(name)
        if info.dense_dim != spec.dense_dim:
            raise CollectionMismatchError(
                f"Collection {name!r} holds {info.dense_dim}-dimensional vectors "
                f"(model {info.embedding_model or 'unknown'}), but the configured embedding model "
                f"({spec.embedding_model}) gives {spec.dense_dim}. Use the same model, or ingest "
                "into a new collection."
            )
        if spec.description and spec.description != info.description:
            self.set_description(name, spec.description)
            info = self.get_collection(name)
        return info

    def require(self, name: str) -> None:
        if not self.has_collection(name):
            raise CollectionNotFoundError(name, self.collection_names())

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
