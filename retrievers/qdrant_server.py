"""Server backend: a Qdrant server or cluster through `qdrant-client` (the scale-out path).

Collections are created sharded and replicated (`qdrant_shards`, `qdrant_replication_factor`),
with a tenant-optimised keyword index on `tenant` and keyword indexes on the document fields.
Description and embedding model ride in Qdrant's collection metadata. `:memory:` and `path:DIR`
URLs select qdrant-client's local mode, which speaks the same API and needs no server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, cast

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from agent.errors import CollectionNotFoundError, StoreError
from agent.resilience import transports_for
from agent.settings import Settings, validate_collection_name
from retrievers.store import (
    DENSE,
    INDEXED_KEYWORD_FIELDS,
    SPARSE,
    CollectionInfo,
    CollectionSpec,
    PayloadFilter,
    QueryOptions,
    Scalar,
    SearchHit,
    SparseVector,
    StoredPoint,
    VectorStore,
    collection_metadata,
    described_by_tenant,
    with_description,
)

_ID_BATCH = 1024


def _condition(key: str, value: Scalar | Sequence[Scalar]) -> models.FieldCondition:
    if isinstance(value, str | int | bool):
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))
    values: Any = list(value)
    return models.FieldCondition(key=key, match=models.MatchAny(any=values))


def to_qdrant_filter(where: PayloadFilter | None) -> models.Filter | None:
    if where is None or where.is_empty:
        return None
    must: list[Any] = [_condition(k, v) for k, v in where.must.items()]
    must += [
        models.Filter(
            should=[
                models.IsEmptyCondition(is_empty=models.PayloadField(key=k)),
                _condition(k, list(v)),
            ]
        )
        for k, v in where.unset_or.items()
    ]
    must += [
        models.Filter(should=[f for f in map(to_qdrant_filter, either) if f is not None])
        for either in where.any_of
    ]
    must_not: Any = [_condition(k, v) for k, v in where.must_not.items()] or None
    return models.Filter(must=must or None, must_not=must_not)


def _dense_of(vector: Any) -> list[float] | None:
    if isinstance(vector, dict) and isinstance(vector.get(DENSE), list):
        return [float(x) for x in vector[DENSE]]
    return None


logger = logging.getLogger("agentrag.store")


class _Guarded:
    """A remote QdrantClient whose failures to answer (connection dropped, 5xx, circuit open)
    raise `StoreError`, the error every caller of a store understands; answers such as 404
    pass through as qdrant-client raises them."""

    def __init__(self, client: QdrantClient, url: str) -> None:
        self._client, self._url = client, url

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except ResponseHandlingException as exc:
                raise StoreError(f"The Qdrant server at {self._url} failed: {exc}") from exc
            except UnexpectedResponse as exc:
                if exc.status_code is None or exc.status_code < 500:
                    raise
                raise StoreError(
                    f"The Qdrant server at {self._url} answered {exc.status_code}"
                ) from exc

        return call


class QdrantServerStore(VectorStore):
    def __init__(
        self,
        client: QdrantClient,
        *,
        shards: int = 2,
        replication_factor: int = 1,
        is_local: bool = False,
    ) -> None:
        self.client = client
        self.shards = shards
        self.replication_factor = replication_factor
        self.is_local = is_local
        self._indexed: set[str] = set()
        self._index_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> QdrantServerStore:
        url = settings.qdrant_url or ""
        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        if url == ":memory:":
            client = QdrantClient(location=":memory:")
        elif url.startswith("path:"):
            client = QdrantClient(path=url.removeprefix("path:"))
        else:
            # retries and a circuit breaker (agent/resilience.py): every request qdrant-client
            # sends is safe to repeat (reads, upserts by id, deletes by filter)
            client = cast(
                QdrantClient,
                _Guarded(
                    QdrantClient(
                        url=url,
                        api_key=api_key,
                        timeout=settings.qdrant_timeout_s,
                        transport=transports_for(settings, "qdrant", url)[0],
                    ),
                    url,
                ),
            )
        store = cls(
            client,
            shards=settings.qdrant_shards,
            replication_factor=settings.qdrant_replication_factor,
            is_local=not url.startswith("http"),
        )
        if not store.is_local:
            store._check_reachable(url)
        return store

    def _check_reachable(self, url: str) -> None:
        try:
            self.client.get_collections()
        except (ResponseHandlingException, UnexpectedResponse, StoreError, OSError) as exc:
            raise StoreError(
                f"Cannot reach the Qdrant server at {url}: {exc}. Check AGENTRAG_QDRANT_URL and "
                "AGENTRAG_QDRANT_API_KEY, or unset AGENTRAG_VECTOR_STORE to use the embedded store."
            ) from exc

    # -- collections ---------------------------------------------------------------------------
    def collection_names(self) -> list[str]:
        return sorted(c.name for c in self.client.get_collections().collections)

    def has_collection(self, name: str) -> bool:
        return bool(self.client.collection_exists(validate_collection_name(name)))

    def create_collection(self, name: str, spec: CollectionSpec) -> None:
        validate_collection_name(name)
        if self.has_collection(name):
            raise StoreError(f"Collection {name!r} already exists.")
        cluster_args: dict[str, Any] = {}
        if not self.is_local:  # local mode has no shards or replicas and warns about them
            cluster_args = {
                "shard_number": self.shards,
                "replication_factor": self.replication_factor,
            }
        self.client.create_collection(
            name,
            vectors_config={
                DENSE: models.VectorParams(size=spec.dense_dim, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata=collection_metadata(spec),
            **cluster_args,
        )
        self.client.create_payload_index(
            name,
            "tenant",
            models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
        )
        for field_name in INDEXED_KEYWORD_FIELDS:
            self.client.create_payload_index(name, field_name, models.PayloadSchemaType.KEYWORD)

    def _ensure_indexes(self, name: str) -> None:
        """Once per collection and process: index the keyword fields a collection made by an
        earlier version lacks (without `title`, the title hop's filter reads every payload).
        Local mode keeps no indexes, so it is left alone."""
        if self.is_local or name in self._indexed:
            return
        with self._index_lock:
            if name in self._indexed:
                return
            try:
                schema = self.client.get_collection(name).payload_schema or {}
            except (UnexpectedResponse, ResponseHandlingException, StoreError, ValueError):
                return  # a missing collection (or a server down) is reported by the query
            for field_name in INDEXED_KEYWORD_FIELDS:
                if field_name not in schema:
                    logger.info("collection %s: indexing payload field %s", name, field_name)
                    self.client.create_payload_index(
                        name, field_name, models.PayloadSchemaType.KEYWORD
                    )
            self._indexed.add(name)

    def _info(self, name: str) -> models.CollectionInfo:
        if not self.has_collection(name):
            raise CollectionNotFoundError(
                name, [c.name for c in self.client.get_collections().collections]
            )
        return self.client.get_collection(name)

    def get_collection(self, name: str, count: bool = True) -> CollectionInfo:
        info = self._info(name)
        meta: dict[str, Any] = dict(info.config.metadata or {})
        dim = meta.get("dense_dim")
        if dim is None:
            vectors = info.config.params.vectors
            params = vectors.get(DENSE) if isinstance(vectors, dict) else vectors
            dim = params.size if params is not None else 0
        return CollectionInfo(
            name=name,
            points=self.count(name) if count else 0,
            description=str(meta.get("description", "")),
            descriptions=described_by_tenant(meta),
            dense_dim=int(dim),
            embedding_model=str(meta.get("embedding_model", "")),
            created_at=str(meta.get("created_at", "")),
        )

    def set_description(self, name: str, description: str, tenant: str | None = None) -> None:
        meta = with_description(self._info(name).config.metadata or {}, description, tenant)
        self.client.update_collection(name, metadata=meta)

    def drop_collection(self, name: str) -> None:
        self._info(name)
        self.client.delete_collection(name)

    # -- points --------------------------------------------------------------------------------
    def upsert(self, name: str, points: Sequence[StoredPoint]) -> None:
        if not points:
            return
        structs = [
            models.PointStruct(
                id=p.id,
                vector={
                    DENSE: list(p.dense),
                    SPARSE: models.SparseVector(indices=p.sparse.indices, values=p.sparse.values),
                },
                payload=p.payload,
            )
            for p in points
        ]
        self.client.upsert(name, structs, wait=True)

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _ID_BATCH):
            batch = list(ids[start : start + _ID_BATCH])
            records = self.client.retrieve(name, batch, with_payload=False, with_vectors=False)
            found.update(str(r.id) for r in records)
        return found

    def delete(self, name: str, where: PayloadFilter) -> None:
        qfilter = to_qdrant_filter(where)
        if qfilter is None:
            raise StoreError(
                "Refusing to delete with an empty filter; drop the collection instead."
            )
        self.client.delete(name, models.FilterSelector(filter=qfilter), wait=True)

    def count(self, name: str, where: PayloadFilter | None = None) -> int:
        return int(self.client.count(name, count_filter=to_qdrant_filter(where), exact=True).count)

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
        self._ensure_indexes(name)
        opts = options or QueryOptions()
        qfilter = to_qdrant_filter(where)
        queries: list[tuple[Any, str]] = []
        if dense is not None:
            queries.append((list(dense), DENSE))
        if sparse is not None and sparse.indices:
            queries.append(
                (models.SparseVector(indices=sparse.indices, values=sparse.values), SPARSE)
            )
        if not queries:
            if sparse is not None:
                return []
            raise ValueError("query needs a dense vector, a sparse vector, or both")
        if len(queries) == 1:
            vector, using = queries[0]
            response = self.client.query_points(
                name,
                query=vector,
                using=using,
                query_filter=qfilter,
                limit=limit,
                with_payload=True,
                with_vectors=[DENSE] if with_dense else False,
            )
        else:
            prefetch_limit = max(opts.prefetch_limit, limit)
            fusion: Any = (
                models.FusionQuery(fusion=models.Fusion.DBSF)
                if opts.fusion == "dbsf"
                else models.RrfQuery(
                    rrf=models.Rrf(k=opts.rrf_k, weights=[opts.dense_weight, opts.sparse_weight])
                )
            )
            response = self.client.query_points(
                name,
                prefetch=[
                    models.Prefetch(query=vector, using=using, limit=prefetch_limit, filter=qfilter)
                    for vector, using in queries
                ],
                query=fusion,
                query_filter=qfilter,
                limit=limit,
                with_payload=True,
                with_vectors=[DENSE] if with_dense else False,
            )
        return [
            SearchHit(
                id=str(p.id),
                score=float(p.score),
                payload=dict(p.payload or {}),
                dense=_dense_of(p.vector) if with_dense else None,
            )
            for p in response.points
        ]

    def optimize(self, name: str) -> None:
        """A server builds its indexes in the background: nothing to wait for here."""
        self._info(name)

    def close(self) -> None:
        self.client.close()
