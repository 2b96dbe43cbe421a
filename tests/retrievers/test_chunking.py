"""Chunks fit the embedding window, stay inside their section and overlap their neighbours."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import pytest

from retrievers.chunking import (
    Chunker,
    HFTokenCounter,
    WhitespaceTokenCounter,
    bundled_token_counter,
)
from retrievers.documents import Chunk, Document, Section

WORDS = WhitespaceTokenCounter()


def _document(*sections: Section, title: str = "") -> Document:
    return Document(doc_id="doc-1", source="/docs/doc-1.md", title=title, sections=sections)


def _numbered_sentences(prefix: str, count: int) -> str:
    """Five-word sentences whose words are unique, so any overlap is visible."""
    return " ".join(f"{prefix}{n} alpha{n} beta{n} gamma{n} end{n}." for n in range(count))


def _words(chunk: Chunk) -> list[str]:
    return chunk.text.split()


@pytest.fixture(scope="module")
def minilm() -> HFTokenCounter:
    return bundled_token_counter()


def _technical_text(paragraphs: int) -> str:
    """Text that tokenizes far denser than its word count: ids, numbers, units."""
    sentences = [
        f"Run {n}: kubectl rollout restart deployment/api-v{n} --namespace=prod-eu-{n % 3} "
        f"took {n * 17.25:.2f}ms (p99 {n * 3}ms, SHA a{n:04x}f9e2)."
        for n in range(paragraphs * 4)
    ]
    return "\n\n".join(" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4))


@pytest.mark.parametrize(("size", "overlap"), [(10, 10), (10, 11), (10, -1), (0, 0)])
def test_invalid_sizes_are_rejected(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk_"):
        Chunker(WORDS, chunk_size=size, chunk_overlap=overlap)


def test_sentences_pack_up_to_the_budget() -> None:
    document = _document(Section(text=_numbered_sentences("s", 8)))

    chunks = Chunker(WORDS, chunk_size=12, chunk_overlap=0).chunk(document)

    assert [len(_words(chunk)) for chunk in chunks] == [10, 10, 10, 10]
    assert chunks[0].text == "s0 alpha0 beta0 gamma0 end0. s1 alpha1 beta1 gamma1 end1."


def test_consecutive_chunks_share_trailing_sentences() -> None:
    document = _document(Section(text=_numbered_sentences("s", 12)))

    chunks = Chunker(WORDS, chunk_size=15, chunk_overlap=6).chunk(document)

    assert len(chunks) > 2
    for previous, following in pairwise(chunks):
        last_sentence = " ".join(_words(previous)[-5:])
        assert following.text.startswith(last_sentence)
        shared = len(set(_words(previous)) & set(_words(following)))
        assert 0 < shared <= 6
    assert all(len(_words(chunk)) <= 15 for chunk in chunks)
    covered = {word for chunk in chunks for word in _words(chunk)}
    assert covered == set(document.text.split())


def test_zero_overlap_chunks_are_disjoint() -> None:
    document = _document(Section(text=_numbered_sentences("s", 12)))

    chunks = Chunker(WORDS, chunk_size=15, chunk_overlap=0).chunk(document)

    assert sum(len(_words(chunk)) for chunk in chunks) == len(document.text.split())


def test_chunks_never_mix_sections_and_indexes_run_across_the_document() -> None:
    document = _document(
        Section(text=_numbered_sentences("a", 7), heading_path=("Install",)),
        Section(text="   \n\n  ", heading_path=("Empty",)),
        Section(text=_numbered_sentences("b", 7), heading_path=("Install", "From source")),
        Section(text="One short closing sentence.", heading_path=()),
    )

    chunks = Chunker(WORDS, chunk_size=12, chunk_overlap=5).chunk(document)

    assert [chunk.chunk_index for chunk in chunks] == list(range(len(chunks)))
    assert ("Empty",) not in {chunk.heading_path for chunk in chunks}
    for chunk in chunks:
        prefixes = {word[0] for word in _words(chunk)[::5]}
        expected = {("Install",): {"a"}, ("Install", "From source"): {"b"}, (): {"O"}}
        assert prefixes == expected[chunk.heading_path]
        assert (chunk.doc_id, chunk.source, chunk.title) == ("doc-1", "/docs/doc-1.md", "")


def test_budget_reserves_the_context_line() -> None:
    section = Section(text=_numbered_sentences("s", 10), heading_path=("Setup", "Linux"))
    document = _document(section, title="Admin Guide")

    reserved = Chunker(WORDS, chunk_size=26, chunk_overlap=0).chunk(document)
    unreserved = Chunker(WORDS, chunk_size=26, chunk_overlap=0, reserve_context=False).chunk(
        document
    )

    assert reserved[0].embedding_text().startswith("Admin Guide > Setup > Linux\n")
    assert [len(chunk.embedding_text().split()) for chunk in reserved] == [26, 26, 16]
    assert [len(_words(chunk)) for chunk in unreserved] == [25, 25]


def test_budget_never_drops_below_sixteen_tokens() -> None:
    document = _document(Section(text=_numbered_sentences("s", 8)), title="word " * 40)

    chunks = Chunker(WORDS, chunk_size=32, chunk_overlap=0).chunk(document)

    assert [len(_words(chunk)) for chunk in chunks] == [15, 15, 10]


def test_oversized_sentence_is_split_on_words_with_word_overlap() -> None:
    words = [f"w{n}" for n in range(50)]
    document = _document(Section(text="Intro. " + " ".join(words) + ". Outro."))

    chunks = Chunker(WORDS, chunk_size=10, chunk_overlap=3).chunk(document)

    assert all(len(_words(chunk)) <= 10 for chunk in chunks)
    for previous, following in pairwise(chunks):
        assert _words(following)[0] in _words(previous)
    joined: list[str] = []
    for chunk in chunks:
        fresh = _words(chunk)
        while joined and fresh and fresh[0] in joined[-3:]:
            fresh = fresh[1:]
        joined.extend(fresh)
    assert joined == document.text.split()


def test_whitespace_is_normalised_and_lines_kept() -> None:
    document = _document(Section(text="First   line\there.\n\n\n  Second\u00a0 line.  \n"))

    chunks = Chunker(WORDS, chunk_size=50, chunk_overlap=0).chunk(document)

    assert [chunk.text for chunk in chunks] == ["First line here.\nSecond line."]


def test_output_is_deterministic() -> None:
    document = _document(
        Section(text=_numbered_sentences("s", 30), heading_path=("A",)),
        Section(text=_numbered_sentences("t", 30), heading_path=("B",)),
        title="Title",
    )
    chunker = Chunker(WORDS, chunk_size=20, chunk_overlap=7)

    assert chunker.chunk(document) == chunker.chunk(document)


def test_counter_is_called_once_per_section() -> None:
    calls: list[int] = []

    class RecordingCounter:
        def count(self, texts: Sequence[str]) -> list[int]:
            calls.append(len(texts))
            return WORDS.count(texts)

    document = _document(
        Section(text=_numbered_sentences("s", 40)), Section(text=_numbered_sentences("t", 40))
    )

    Chunker(RecordingCounter(), chunk_size=20, chunk_overlap=5).chunk(document)

    assert calls == [41, 41]


@pytest.mark.integration
def test_minilm_counter_counts_without_special_tokens_or_truncation(
    minilm: HFTokenCounter,
) -> None:
    counts = minilm.count(["hello world", "", "word " * 1000])

    assert counts == [2, 0, 1000]
    assert minilm.count([]) == []
    assert bundled_token_counter() is minilm


@pytest.mark.integration
@pytest.mark.parametrize("reserve_context", [True, False])
def test_embedding_text_fits_chunk_size_in_model_tokens(
    minilm: HFTokenCounter, reserve_context: bool
) -> None:
    document = _document(
        Section(text=_technical_text(6), heading_path=("Operations", "Deploys")),
        Section(text=_technical_text(3), heading_path=("Operations", "Rollbacks")),
        title="Platform Runbook 2024",
    )
    chunk_size = 64

    chunks = Chunker(minilm, chunk_size, chunk_overlap=16, reserve_context=reserve_context).chunk(
        document
    )

    measured = [chunk.embedding_text() if reserve_context else chunk.text for chunk in chunks]
    sizes = minilm.count(measured)
    assert len(chunks) > 4
    assert max(sizes) <= chunk_size
    assert max(sizes) > chunk_size - 25
    assert len({chunk.heading_path for chunk in chunks}) == 2


@pytest.mark.integration
def test_unbroken_run_of_characters_is_cut_to_fit(minilm: HFTokenCounter) -> None:
    """Punctuation makes WordPiece count every piece (one 100+ letter word is a single [UNK])."""
    blob = "-".join(f"{n:x}q" for n in range(600))
    document = _document(Section(text=f"Key follows. {blob} Done."), title="Secrets")

    chunks = Chunker(minilm, chunk_size=48, chunk_overlap=0).chunk(document)

    assert len(chunks) > 3
    assert max(minilm.count([chunk.embedding_text() for chunk in chunks])) <= 48
    assert "".join(chunk.text for chunk in chunks).replace(" ", "") == f"Keyfollows.{blob}Done."
