"""Ingestion and search end to end: real loaders, real MiniLM, real embedded Qdrant."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import CollectionNotFoundError, IngestError, StoreError
from agent.settings import Settings
from retrievers.embeddings import LocalEmbeddings
from retrievers.stack import RetrievalStack
from retrievers.store import CollectionSpec, PayloadFilter
from tests.conftest import SAMPLES


@pytest.fixture
def stack(settings: Settings, minilm: LocalEmbeddings) -> Iterator[RetrievalStack]:
    s = RetrievalStack(settings, embeddings=minilm)  # the session's model, not loaded again
    yield s
    s.close()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    target = tmp_path / "docs"
    shutil.copytree(SAMPLES / "handbook", target)
    return target


def test_ingest_then_search_finds_the_right_section(stack: RetrievalStack, docs: Path) -> None:
    report = stack.ingestor.ingest_paths([docs], "handbook", description="the handbook")
    assert report.documents == 3
    assert report.chunks_added == report.chunks_total > 3
    assert report.skipped == []
    info = stack.store.get_collection("handbook")
    assert info.points == report.chunks_total
    assert info.description_for("public", "public") == "the handbook"
    assert info.descriptions == {"public": "the handbook"}
    assert info.embedding_model == "all-MiniLM-L6-v2"

    for mode in ("hybrid", "dense", "sparse"):
        hits = stack.retriever.search(
            "what happens if I ingest the same files again",
            "handbook",
            k=3,
            mode=mode,  # type: ignore[arg-type]
        )
        assert hits, mode
        top = hits[0]
        assert top.title == "Ingesting documents", mode
        assert top.heading_path == ("Re-ingesting",), mode
        assert top.source == str((docs / "ingestion.md").resolve())
        assert top.doc_id == top.source
        assert "adds nothing" in top.text
        assert top.payload["tenant"] == "public"
        assert top.payload["ingested_at"]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_reingest_unchanged_adds_and_embeds_nothing(stack: RetrievalStack, docs: Path) -> None:
    first = stack.ingestor.ingest_paths([docs], "handbook")
    again = stack.ingestor.ingest_paths([docs], "handbook")
    assert again.chunks_added == 0
    assert again.documents_unchanged == first.documents
    assert again.embed_seconds == 0
    assert stack.store.count("handbook") == first.chunks_total


def test_changed_file_replaces_its_chunks(stack: RetrievalStack, docs: Path) -> None:
    stack.ingestor.ingest_paths([docs], "handbook")
    before = stack.store.count("handbook")
    path = docs / "configuration.md"
    source = str(path.resolve())
    old_chunks = stack.store.count("handbook", PayloadFilter(must={"source": source}))
    path.write_text("# Configuration\n\nEverything is configured with a single flag named zebra.\n")
    report = stack.ingestor.ingest_paths([docs], "handbook")
    assert report.documents_new_or_changed == 1
    assert report.chunks_added == 1
    assert stack.store.count("handbook", PayloadFilter(must={"source": source})) == 1
    assert stack.store.count("handbook") == before - old_chunks + 1
    hits = stack.retriever.search("zebra flag", "handbook", k=1, mode="sparse")
    assert hits[0].source == source


def test_removed_file_can_be_deleted(stack: RetrievalStack, docs: Path) -> None:
    stack.ingestor.ingest_paths([docs], "handbook")
    path = docs / "overview.md"
    source = str(path.resolve())
    n = stack.store.count("handbook", PayloadFilter(must={"source": source}))
    path.unlink()
    removed = stack.ingestor.delete_documents("handbook", sources=[source])
    assert removed == n > 0
    assert stack.store.count("handbook", PayloadFilter(must={"source": source})) == 0
    with pytest.raises(CollectionNotFoundError):
        stack.ingestor.delete_documents("nope", sources=[source])


def test_bad_files_are_skipped_and_listed(stack: RetrievalStack, docs: Path) -> None:
    (docs / "empty.md").write_text("")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (docs / "image.png").write_bytes(b"\x89PNG\r\n")
    (docs / "bad.jsonl").write_text('{"id": "1", "title": "T", "text": "kept line"}\nnot json\n')
    report = stack.ingestor.ingest_paths([docs], "handbook")
    skipped = {Path(s.path.split(":")[0]).name: s.reason for s in report.skipped}
    assert set(skipped) == {"empty.md", "broken.pdf", "image.png", "bad.jsonl"}
    assert "unsupported" in skipped["image.png"]
    assert report.documents == 4  # three markdown files and the good JSONL line
    hits = stack.retriever.search("kept line", "handbook", k=1, mode="sparse")
    assert hits[0].doc_id == "1"


def test_missing_path_is_a_clear_error(stack: RetrievalStack, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="does-not-exist"):
        stack.ingestor.ingest_paths([tmp_path / "does-not-exist"], "handbook")
    assert not stack.store.has_collection("handbook")


def test_tenants_are_kept_apart(stack: RetrievalStack, docs: Path, tmp_path: Path) -> None:
    stack.ingestor.ingest_paths([docs], "shared", tenant="public")
    private = tmp_path / "private"
    private.mkdir()
    (private / "secret.md").write_text("# Secret plans\n\nThe launch code word is pineapple.\n")
    stack.ingestor.ingest_paths([private], "shared", tenant="acme")
    acme = stack.retriever.search("launch code word", "shared", k=5, tenant="acme")
    assert {h.payload["tenant"] for h in acme} == {"acme"}
    public = stack.retriever.search("launch code word pineapple", "shared", k=5, tenant="public")
    assert public and all("pineapple" not in h.text for h in public)


def test_other_embedding_size_is_refused(stack: RetrievalStack, docs: Path) -> None:
    stack.store.create_collection("old", CollectionSpec(dense_dim=768, embedding_model="big"))
    with pytest.raises(StoreError, match="768-dimensional"):
        stack.ingestor.ingest_paths([docs], "old")


def test_search_unknown_collection(stack: RetrievalStack) -> None:
    with pytest.raises(CollectionNotFoundError, match="agentrag ingest"):
        stack.retriever.search("anything", "missing")
