"""Embedded backend: the Qdrant engine in-process (`qdrant-edge-py`), one shard per collection.

Layout under the root directory: `<collection>/shard/` holds the Qdrant segments and WAL,
`<collection>/collection.json` holds what Qdrant Edge has no place for (description, embedding
model, creation time). Nothing to start, persistent across restarts.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from agent.errors import AgentragError, CollectionNotFoundError, StoreError
from agent.settings import validate_collection_name
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

logger = logging.getLogger("agentrag.store")

_META_FILE = "collection.json"
_SHARD_DIR = "shard"
_ID_BATCH = 1024


@contextmanager
def _writing(root: Path, name: str) -> Iterator[None]:
    """A write the disk refused (a directory made read-only, a full disk) as a `StoreError`
    that says so, rather than qdrant-edge's runtime error or a bare OSError."""
    try:
        yield
    except AgentragError:
        raise
    except Exception as exc:
        raise StoreError(
            f"Cannot write collection {name!r} under {root}: {exc}. Check that the data "
            "directory is writable and has free space."
        ) from exc


def _condition(key: str, value: Scalar | Sequence[Scalar]) -> qe.FieldCondition:
    if isinstance(value, str | int | bool):
        return qe.FieldCondition(key, match=qe.MatchValue(value))
    values: Any = list(value)
    return qe.FieldCondition(key, match=qe.MatchAny(values))


def to_edge_filter(where: PayloadFilter | None) -> qe.Filter | None:
    if where is None or where.is_empty:
        return None
    must: list[Any] = [_condition(k, v) for k, v in where.must.items()]
    must += [
        qe.Filter(should=[qe.IsEmptyCondition(k), _condition(k, list(v))])
        for k, v in where.unset_or.items()
    ]
    must += [
        qe.Filter(should=[f for f in map(to_edge_filter, either) if f is not None])
        for either in where.any_of
    ]
    return qe.Filter(
        must=must or None,
        must_not=[_condition(k, v) for k, v in where.must_not.items()] or None,
    )


def _dense_of(vector: Any) -> list[float] | None:
    if isinstance(vector, dict) and DENSE in vector:
        return [float(x) for x in vector[DENSE]]
    return None


def _add_missing_indexes(name: str, shard: qe.EdgeShard) -> None:
    """Index the keyword fields a collection made by an earlier version lacks. Without its
    `title` index, the title hop's filter (hundreds of candidate names) read every point's
    payload: 18 ms per search on 5,000 points against 0.8 ms with the index."""
    missing = [f for f in INDEXED_KEYWORD_FIELDS if f not in shard.info().payload_schema]
    if not missing:
        return
    logger.info("collection %s: indexing payload fields %s (once)", name, ", ".join(missing))
    for field_name in missing:
        index = qe.UpdateOperation.create_field_index(field_name, qe.PayloadSchemaType.Keyword)
        shard.update(index)
    shard.flush()


class EmbeddedQdrantStore(VectorStore):
    """Collections as Qdrant Edge shards under one directory.

    Shards are opened lazily and kept open; the engine is thread-safe for reads and writes, the
    lock only guards the open/create bookkeeping.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._lock = threading.RLock()

    # -- bookkeeping ---------------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        return self.root / validate_collection_name(name)

    def _meta(self, name: str) -> dict[str, Any]:
        path = self._dir(name) / _META_FILE
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CollectionNotFoundError(name, self._names()) from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"Cannot read {path}: {exc}") from exc
        return data

    def _write_meta(self, name: str, meta: dict[str, Any]) -> None:
        path = self._dir(name) / _META_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        tmp.replace(path)

    def _names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if (p / _META_FILE).is_file() and p.is_dir()
        )

    def _shard(self, name: str) -> qe.EdgeShard:
        with self._lock:
            shard = self._shards.get(name)
            if shard is None:
                if not self.has_collection(name):
                    raise CollectionNotFoundError(name, self._names())
                try:
                    shard = qe.EdgeShard.load(str(self._dir(name) / _SHARD_DIR))
                except Exception as exc:
                    hint = (
                        " Another process (or another store object) has it open: the embedded "
                        "store serves one process; use a Qdrant server to share it."
                        if "WouldBlock" in str(exc)
                        else ""
                    )
                    raise StoreError(f"Cannot open collection {name!r}: {exc}.{hint}") from exc
                _add_missing_indexes(name, shard)
                self._shards[name] = shard
            return shard

    # -- collections ---------------------------------------------------------------------------
    def collection_names(self) -> list[str]:
        return self._names()

    def has_collection(self, name: str) -> bool:
        return (self._dir(name) / _META_FILE).is_file()

    def create_collection(self, name: str, spec: CollectionSpec) -> None:
        with _writing(self.root, name), self._lock:
            if self.has_collection(name):
                raise StoreError(f"Collection {name!r} already exists.")
            directory = self._dir(name)
            shard_dir = directory / _SHARD_DIR
            if shard_dir.exists():  # left over from an interrupted create
                shutil.rmtree(shard_dir)
            directory.mkdir(parents=True, exist_ok=True)
            config = qe.EdgeConfig(
                vectors={
                    DENSE: qe.EdgeVectorParams(size=spec.dense_dim, distance=qe.Distance.Cosine)
                },
                sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
                hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
            )
            shard = qe.EdgeShard.create(str(shard_dir), config)
            shard.update(
                qe.UpdateOperation.create_field_index(
                    "tenant", qe.KeywordIndexParams(is_tenant=True)
                )
            )
            for field_name in INDEXED_KEYWORD_FIELDS:
                shard.update(
                    qe.UpdateOperation.create_field_index(field_name, qe.PayloadSchemaType.Keyword)
                )
            shard.flush()
            self._shards[name] = shard
            self._write_meta(name, collection_metadata(spec))

    def get_collection(self, name: str, count: bool = True) -> CollectionInfo:
        meta = self._meta(name)
        return CollectionInfo(
            name=name,
            points=self.count(name) if count else 0,
            description=str(meta.get("description", "")),
            descriptions=described_by_tenant(meta),
            dense_dim=int(meta["dense_dim"]),
            embedding_model=str(meta.get("embedding_model", "")),
            created_at=str(meta.get("created_at", "")),
        )

    def set_description(self, name: str, description: str, tenant: str | None = None) -> None:
        with _writing(self.root, name), self._lock:
            self._write_meta(name, with_description(self._meta(name), description, tenant))

    def drop_collection(self, name: str) -> None:
        with _writing(self.root, name), self._lock:
            if not self.has_collection(name):
                raise CollectionNotFoundError(name, self._names())
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            shutil.rmtree(self._dir(name))

    # -- points --------------------------------------------------------------------------------
    def upsert(self, name: str, points: Sequence[StoredPoint]) -> None:
        with _writing(self.root, name):
            if not points:
                return
            edge_points = [
                qe.Point(
                    p.id,
                    {
                        DENSE: list(p.dense),
                        SPARSE: qe.SparseVector(p.sparse.indices, p.sparse.values),
                    },
                    p.payload,
                )
                for p in points
            ]
            shard = self._shard(name)
            shard.update(qe.UpdateOperation.upsert_points(edge_points))

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        shard = self._shard(name)
        found: set[str] = set()
        for start in range(0, len(ids), _ID_BATCH):
            batch: list[Any] = list(ids[start : start + _ID_BATCH])
            records = shard.retrieve(batch, with_payload=False, with_vector=False)
            found.update(str(r.id) for r in records)
        return found

    def delete(self, name: str, where: PayloadFilter) -> None:
        with _writing(self.root, name):
            edge_filter = to_edge_filter(where)
            if edge_filter is None:
                raise StoreError(
                    "Refusing to delete with an empty filter; drop the collection instead."
                )
            self._shard(name).update(qe.UpdateOperation.delete_points_by_filter(edge_filter))

    def count(self, name: str, where: PayloadFilter | None = None) -> int:
        return int(
            self._shard(name).count(qe.CountRequest(exact=True, filter=to_edge_filter(where)))
        )

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
        opts = options or QueryOptions()
        edge_filter = to_edge_filter(where)
        queries: list[qe.Query] = []
        if dense is not None:
            queries.append(qe.Query.Nearest(list(dense), using=DENSE))
        if sparse is not None:
            if not sparse.indices:  # a query of only stop words matches nothing lexically
                if dense is None:
                    return []
            else:
                queries.append(
                    qe.Query.Nearest(qe.SparseVector(sparse.indices, sparse.values), using=SPARSE)
                )
        if not queries:
            raise ValueError("query needs a dense vector, a sparse vector, or both")
        if len(queries) == 1:
            request = qe.QueryRequest(
                limit=limit,
                query=queries[0],
                filter=edge_filter,
                with_payload=True,
                with_vector=[DENSE] if with_dense else False,
            )
        else:
            prefetch_limit = max(opts.prefetch_limit, limit)
            fusion: Any = (
                qe.Fusion.Dbsf()
                if opts.fusion == "dbsf"
                else qe.Fusion.Rrf(k=opts.rrf_k, weights=[opts.dense_weight, opts.sparse_weight])
            )
            request = qe.QueryRequest(
                limit=limit,
                prefetches=[
                    qe.Prefetch(limit=prefetch_limit, query=q, filter=edge_filter) for q in queries
                ],
                query=fusion,
                filter=edge_filter,
                with_payload=True,
                with_vector=[DENSE] if with_dense else False,
            )
        points = self._shard(name).query(request)
        return [
            SearchHit(
                id=str(p.id),
                score=float(p.score),
                payload=p.payload or {},
                dense=_dense_of(p.vector) if with_dense else None,
            )
            for p in points
        ]

    def optimize(self, name: str) -> None:
        with _writing(self.root, name):
            shard = self._shard(name)
            shard.flush()
            shard.optimize()

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
