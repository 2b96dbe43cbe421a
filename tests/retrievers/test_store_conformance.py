"""One behaviour, two backends: every test here runs on the embedded engine and on qdrant-client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from agent.errors import CollectionNotFoundError, StoreError
from retrievers.qdrant_embedded import EmbeddedQdrantStore
from retrievers.qdrant_server import QdrantServerStore
from retrievers.store import (
    CollectionSpec,
    PayloadFilter,
    QueryOptions,
    SparseVector,
    StoredPoint,
    VectorStore,
    point_id,
    reader_scope,
)

SPEC = CollectionSpec(dense_dim=4, description="test docs", embedding_model="toy")

# term ids: 1 = "common" (in every point), 2 = "rare" (only in p2), 3 = "tenantword"
POINTS = [
    StoredPoint(
        point_id("p0"),
        [1, 0, 0, 0],
        SparseVector([1], [1.0]),
        {"doc_id": "a", "tenant": "public", "text": "zero"},
    ),
    StoredPoint(
        point_id("p1"),
        [0.9, 0.1, 0, 0],
        SparseVector([1, 3], [1.0, 1.0]),
        {"doc_id": "a", "tenant": "public", "text": "one"},
    ),
    StoredPoint(
        point_id("p2"),
        [0, 1, 0, 0],
        SparseVector([1, 2], [1.0, 1.0]),
        {"doc_id": "b", "tenant": "public", "text": "two"},
    ),
    StoredPoint(
        point_id("p3"),
        [0, 0, 1, 0],
        SparseVector([1, 3], [1.0, 1.0]),
        {"doc_id": "c", "tenant": "acme", "text": "three"},
    ),
]


@pytest.fixture(params=["embedded", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    backend: VectorStore
    if request.param == "embedded":
        backend = EmbeddedQdrantStore(tmp_path / "qdrant")
    else:
        backend = QdrantServerStore(QdrantClient(location=":memory:"), is_local=True)
    yield backend
    backend.close()


@pytest.fixture
def filled(store: VectorStore) -> VectorStore:
    store.create_collection("docs", SPEC)
    store.upsert("docs", POINTS)
    return store


def ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.payload["text"] for h in hits]


def test_create_list_and_describe(store: VectorStore) -> None:
    assert store.list_collections() == []
    store.create_collection("docs", SPEC)
    store.create_collection("other", CollectionSpec(dense_dim=4))
    infos = {c.name: c for c in store.list_collections()}
    assert set(infos) == {"docs", "other"}
    assert infos["docs"].description == "test docs"
    assert infos["docs"].dense_dim == 4
    assert infos["docs"].embedding_model == "toy"
    assert infos["docs"].points == 0
    store.set_description("docs", "new words")
    assert store.get_collection("docs").description == "new words"
    assert store.collection_names() == ["docs", "other"]


def test_each_tenant_describes_a_collection_for_itself(store: VectorStore) -> None:
    store.create_collection("docs", SPEC)
    store.set_description("docs", "alpha's words", tenant="alpha")
    store.set_description("docs", "beta's words", tenant="beta")
    store.set_description("docs", "alpha again", tenant="alpha")
    info = store.get_collection("docs", count=False)
    assert info.descriptions == {"alpha": "alpha again", "beta": "beta's words"}
    assert info.description == "test docs"  # the collection's own stays
    assert info.description_for("beta", "public") == "beta's words"
    assert info.description_for("gamma", "public") == ""
    assert info.description_for("public", "public") == "test docs"


def test_create_twice_is_an_error(store: VectorStore) -> None:
    store.create_collection("docs", SPEC)
    with pytest.raises(StoreError, match="already exists"):
        store.create_collection("docs", SPEC)


def test_unknown_collection_names_what_exists(store: VectorStore) -> None:
    store.create_collection("docs", SPEC)
    with pytest.raises(CollectionNotFoundError, match="docs"):
        store.get_collection("nope")
    with pytest.raises(CollectionNotFoundError):
        store.require("nope")


def test_ensure_collection_refuses_other_dimension(store: VectorStore) -> None:
    store.ensure_collection("docs", SPEC)
    assert store.ensure_collection("docs", SPEC).dense_dim == 4
    with pytest.raises(StoreError, match="4-dimensional"):
        store.ensure_collection("docs", CollectionSpec(dense_dim=8, embedding_model="big"))


def test_upsert_is_idempotent_and_ids_are_found(filled: VectorStore) -> None:
    assert filled.count("docs") == 4
    filled.upsert("docs", POINTS[:2])
    assert filled.count("docs") == 4
    unknown = point_id("never stored")
    assert filled.existing_ids("docs", [POINTS[0].id, unknown]) == {POINTS[0].id}


def test_count_with_filter(filled: VectorStore) -> None:
    assert filled.count("docs", PayloadFilter(must={"tenant": "acme"})) == 1
    assert filled.count("docs", PayloadFilter(must={"doc_id": ["a", "b"]})) == 3
    assert filled.count("docs", PayloadFilter(must_not={"doc_id": "a"})) == 2


def test_dense_query_orders_by_similarity(filled: VectorStore) -> None:
    hits = filled.query("docs", dense=[1, 0, 0, 0], limit=3)
    assert ids(hits)[:2] == ["zero", "one"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].score >= hits[1].score >= hits[2].score


def test_sparse_query_uses_idf(filled: VectorStore) -> None:
    # "rare" (id 2) appears in one of four points, "common" (id 1) in all: IDF favours rare.
    hits = filled.query("docs", sparse=SparseVector([1, 2], [1.0, 1.0]), limit=4)
    assert ids(hits)[0] == "two"
    assert hits[0].score > hits[1].score
    only_rare = filled.query("docs", sparse=SparseVector([2], [1.0]), limit=4)
    assert ids(only_rare) == ["two"]


def test_empty_sparse_query_matches_nothing(filled: VectorStore) -> None:
    assert filled.query("docs", sparse=SparseVector([], []), limit=4) == []


@pytest.mark.parametrize("fusion", ["rrf", "dbsf"])
def test_hybrid_query_fuses_both(filled: VectorStore, fusion: str) -> None:
    options = QueryOptions(fusion=fusion)  # type: ignore[arg-type]
    hits = filled.query(
        "docs", dense=[0, 1, 0, 0], sparse=SparseVector([2], [1.0]), limit=3, options=options
    )
    assert ids(hits)[0] == "two"  # first in both lists
    assert len(hits) == 3


def test_hybrid_rrf_weights_shift_the_order(filled: VectorStore) -> None:
    # dense ranks zero 1st and two 3rd; sparse ranks only two. With k=1 the RRF scores are
    # dense-heavy: zero 5/2 = 2.5, two 5/4 + 1/2 = 1.75; sparse-heavy: zero 1/2, two 1/4 + 5/2.
    dense_heavy = QueryOptions(rrf_k=1, dense_weight=5.0, sparse_weight=1.0)
    sparse_heavy = QueryOptions(rrf_k=1, dense_weight=1.0, sparse_weight=5.0)
    args = {"dense": [1, 0, 0, 0], "sparse": SparseVector([2], [1.0]), "limit": 2}
    assert ids(filled.query("docs", options=dense_heavy, **args))[0] == "zero"  # type: ignore[arg-type]
    assert ids(filled.query("docs", options=sparse_heavy, **args))[0] == "two"  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_tenant_filter_applies_in_every_mode(filled: VectorStore, mode: str) -> None:
    dense = [0, 0, 1, 0] if mode != "sparse" else None
    sparse = SparseVector([3], [1.0]) if mode != "dense" else None
    public = filled.query(
        "docs", dense=dense, sparse=sparse, limit=10, where=PayloadFilter(must={"tenant": "public"})
    )
    assert public and all(h.payload["tenant"] == "public" for h in public)
    acme = filled.query(
        "docs", dense=dense, sparse=sparse, limit=10, where=PayloadFilter(must={"tenant": "acme"})
    )
    assert ids(acme) == ["three"]


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_a_reader_with_groups_sees_documents_for_everyone_and_for_its_groups(
    store: VectorStore, mode: str
) -> None:
    store.create_collection("docs", SPEC)
    store.upsert(
        "docs",
        [
            *POINTS[:3],  # no groups: for everyone in the tenant
            StoredPoint(
                point_id("hr"),
                [0.8, 0.2, 0, 0],
                SparseVector([1, 3], [1.0, 1.0]),
                {"doc_id": "h", "tenant": "public", "text": "hr only", "groups": ["hr"]},
            ),
            StoredPoint(
                point_id("both"),
                [0.7, 0.3, 0, 0],
                SparseVector([1, 3], [1.0, 1.0]),
                {"doc_id": "b2", "tenant": "public", "text": "hr+eng", "groups": ["eng", "hr"]},
            ),
        ],
    )
    dense = [1, 0.2, 0, 0] if mode != "sparse" else None
    sparse = SparseVector([1], [1.0]) if mode != "dense" else None

    def seen(groups: list[str] | None) -> set[str]:
        where = reader_scope("public", groups)
        return set(ids(store.query("docs", dense=dense, sparse=sparse, limit=10, where=where)))

    everyone = {"zero", "one", "two"}
    assert seen(None) == everyone | {"hr only", "hr+eng"}
    assert seen(["eng"]) == everyone | {"hr+eng"}
    assert seen(["hr", "ops"]) == everyone | {"hr only", "hr+eng"}
    assert seen([]) == everyone
    assert store.count("docs", reader_scope("public", ["eng"])) == 4


def test_delete_by_filter(filled: VectorStore) -> None:
    filled.delete("docs", PayloadFilter(must={"doc_id": "a"}))
    assert filled.count("docs") == 2
    assert filled.count("docs", PayloadFilter(must={"doc_id": "a"})) == 0
    filled.delete("docs", PayloadFilter(must={"tenant": "public"}, must_not={"doc_id": "c"}))
    assert ids(filled.query("docs", dense=[1, 1, 1, 1], limit=10)) == ["three"]


def test_delete_with_empty_filter_is_refused(filled: VectorStore) -> None:
    with pytest.raises(StoreError, match="empty filter"):
        filled.delete("docs", PayloadFilter())
    assert filled.count("docs") == 4


def test_drop_collection(filled: VectorStore) -> None:
    filled.drop_collection("docs")
    assert not filled.has_collection("docs")
    with pytest.raises(CollectionNotFoundError):
        filled.drop_collection("docs")


def test_optimize_keeps_results(filled: VectorStore) -> None:
    before = ids(filled.query("docs", dense=[1, 0, 0, 0], limit=4))
    filled.optimize("docs")
    assert ids(filled.query("docs", dense=[1, 0, 0, 0], limit=4)) == before


def test_embedded_store_survives_restart(tmp_path: Path) -> None:
    store = EmbeddedQdrantStore(tmp_path / "qdrant")
    store.create_collection("docs", SPEC)
    store.upsert("docs", POINTS)
    store.optimize("docs")
    store.close()
    reopened = EmbeddedQdrantStore(tmp_path / "qdrant")
    assert reopened.get_collection("docs").points == 4
    assert reopened.get_collection("docs").description == "test docs"
    assert ids(reopened.query("docs", sparse=SparseVector([2], [1.0]), limit=2)) == ["two"]
    reopened.close()


def test_embedded_collection_of_an_earlier_version_gets_its_missing_indexes(
    tmp_path: Path,
) -> None:
    """A collection made before `title` was indexed: title filters read every payload (the
    title hop took 18 ms a search on 5,000 points) until the index is added at open."""
    import qdrant_edge as qe

    store = EmbeddedQdrantStore(tmp_path / "qdrant")
    store.create_collection("docs", SPEC)
    store.upsert("docs", POINTS)
    shard = store._shard("docs")
    shard.update(qe.UpdateOperation.delete_field_index("title"))
    assert "title" not in shard.info().payload_schema
    store.close()
    reopened = EmbeddedQdrantStore(tmp_path / "qdrant")
    hits = reopened.query(
        "docs", dense=[1, 0, 0, 0], limit=4, where=PayloadFilter(must={"doc_id": ["a", "b"]})
    )
    assert sorted(ids(hits)) == ["one", "two", "zero"]
    assert {"doc_id", "source", "title"} <= set(reopened._shard("docs").info().payload_schema)
    reopened.close()


def test_server_collection_of_an_earlier_version_gets_its_missing_indexes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a Qdrant server, the first query of a collection indexes what it lacks, once. Local
    mode keeps no indexes, so the server's answer (doc_id and source indexed, title not) is
    given here; the store's calls are the real ones."""
    from qdrant_client import models

    client = QdrantClient(location=":memory:")
    store = QdrantServerStore(client, is_local=False)
    store.create_collection("docs", SPEC)
    store.upsert("docs", POINTS)
    real = client.get_collection
    keyword = models.PayloadIndexInfo(data_type=models.PayloadSchemaType.KEYWORD, points=4)

    def before_title_was_indexed(name: str) -> models.CollectionInfo:
        schema = {"doc_id": keyword, "source": keyword, "tenant": keyword}
        return real(name).model_copy(update={"payload_schema": schema})

    created: list[tuple[str, str]] = []
    monkeypatch.setattr(client, "get_collection", before_title_was_indexed)
    monkeypatch.setattr(
        client, "create_payload_index", lambda name, field, schema: created.append((name, field))
    )
    assert ids(store.query("docs", dense=[1, 0, 0, 0], limit=1)) == ["zero"]
    store.query("docs", dense=[0, 1, 0, 0], limit=1)
    assert created == [("docs", "title"), ("docs", "groups")]
    store.close()


def test_invalid_collection_name_is_refused(store: VectorStore) -> None:
    from agent.errors import ConfigError

    with pytest.raises(ConfigError, match="Invalid collection name"):
        store.create_collection("../escape", SPEC)


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_stored_dense_vectors_come_back_on_request(filled: VectorStore, mode: str) -> None:
    dense = [1, 0, 0, 0] if mode != "sparse" else None
    sparse = SparseVector([1], [1.0]) if mode != "dense" else None
    hits = filled.query("docs", dense=dense, sparse=sparse, limit=4, with_dense=True)
    by_text = {h.payload["text"]: h.dense for h in hits}
    assert by_text["zero"] == pytest.approx([1.0, 0.0, 0.0, 0.0])  # cosine vectors are normalised
    assert all(h.dense is None for h in filled.query("docs", dense=dense, sparse=sparse, limit=4))


def test_of_a_shared_tenant_only_documents_for_everyone_are_read(store: VectorStore) -> None:
    """A shared collection: acme reads its own documents (by its groups) and the default
    tenant's documents for everyone, never the default tenant's group documents, even for a
    group of the same name."""
    store.create_collection("docs", SPEC)

    def point(name: str, tenant: str, groups: list[str] | None) -> StoredPoint:
        payload: dict[str, object] = {"doc_id": name, "tenant": tenant, "text": name}
        if groups is not None:
            payload["groups"] = groups
        return StoredPoint(point_id(name), [1, 0, 0, 0], SparseVector([1], [1.0]), payload)

    store.upsert(
        "docs",
        [
            point("public-open", "public", None),
            point("public-hr", "public", ["hr"]),
            point("acme-open", "acme", None),
            point("acme-hr", "acme", ["hr"]),
            point("other-open", "other", None),
        ],
    )

    def seen(groups: list[str] | None) -> set[str]:
        where = reader_scope(["acme", "public"], groups)
        return set(ids(store.query("docs", dense=[1, 0, 0, 0], limit=10, where=where)))

    assert seen(None) == {"public-open", "acme-open", "acme-hr"}
    assert seen(["hr"]) == {"public-open", "acme-open", "acme-hr"}
    assert seen([]) == {"public-open", "acme-open"}
