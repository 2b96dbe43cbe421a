"""Short CPU encodes through ONNX Runtime: the same vectors as torch, exported once, and torch
whenever the export cannot be trusted."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.settings import load_settings
from retrievers import onnx_encoder
from retrievers.embeddings import REQUEST_TEXTS, LocalEmbeddings, make_embeddings

SENTENCES = [
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The stock market closed lower on Tuesday.",
    "Olympus Mons on Mars is the tallest volcano in the Solar System.",
    "Arthur's Magazine (1844-1846) was an American literary periodical published in "
    "Philadelphia in the 19th century.",
    "Yes.",
]


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _spy_torch(model: LocalEmbeddings, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    encode = model._model.encode

    def spy(texts: list[str], *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(texts))
        return encode(texts, *args, **kwargs)

    monkeypatch.setattr(model._model, "encode", spy)
    return sizes


def test_short_encodes_run_on_onnx_with_the_vectors_of_torch(
    minilm: LocalEmbeddings, onnx_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = LocalEmbeddings(device="cpu", onnx_cache=onnx_cache)
    exact = np.asarray(minilm.embed_documents(SENTENCES))
    torch_calls = _spy_torch(fast, monkeypatch)
    query = fast.embed_query(SENTENCES[0])
    small = np.asarray(fast.embed_documents(SENTENCES))
    assert torch_calls == []  # neither went through torch
    assert np.abs(small - exact).max() < 1e-5
    assert np.abs(np.asarray(query) - exact[0]).max() < 1e-5
    assert list(onnx_cache.glob("onnx/*.onnx")), "the export is cached for later processes"
    # ingestion-sized batches keep torch, and its vectors agree with the short path
    filler = [f"filler sentence number {i}" for i in range(REQUEST_TEXTS)]
    large = np.asarray(fast.embed_documents([*SENTENCES, *filler]))[: len(SENTENCES)]
    assert torch_calls == [len(SENTENCES) + REQUEST_TEXTS]
    assert np.abs(large - exact).max() < 1e-5


def test_comparison_vectors_are_int8_close_and_stored_vectors_stay_exact(
    minilm: LocalEmbeddings, onnx_cache: Path
) -> None:
    fast = LocalEmbeddings(device="cpu", onnx_cache=onnx_cache)
    exact = np.asarray(minilm.embed_documents(SENTENCES))
    compared = np.asarray(fast.embed_for_comparison(SENTENCES))
    assert list(onnx_cache.glob("onnx/*.int8.onnx"))
    cosines = (exact * compared).sum(axis=1)
    assert cosines.min() > 0.97 and not np.allclose(compared, exact, atol=1e-4)
    # what is stored (embed_documents) and queries never come from the int8 copy
    assert np.abs(np.asarray(fast.embed_documents(SENTENCES)) - exact).max() < 1e-5
    # comparisons keep their meaning: the photosynthesis question finds the plant sentence
    question = np.asarray(fast.embed_query("How do plants turn sunlight into energy?"))
    assert int(np.argmax(compared @ question)) == 0
    off = LocalEmbeddings(device="cpu", onnx_cache=onnx_cache, compare_int8=False)
    assert np.abs(np.asarray(off.embed_for_comparison(SENTENCES)) - exact).max() < 1e-5


def test_a_failed_export_leaves_torch_in_charge(
    minilm: LocalEmbeddings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_encoder, "_export", broken)
    model = LocalEmbeddings(device="cpu", onnx_cache=tmp_path / "cache")
    torch_calls = _spy_torch(model, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="agentrag.embeddings"):
        vectors = model.embed_documents(SENTENCES[:2])
    assert "exporter exploded" in caplog.text
    assert torch_calls == [2]
    exact = np.asarray(minilm.embed_documents(SENTENCES[:2]))
    assert np.abs(np.asarray(vectors) - exact).max() < 1e-6


def test_a_corrupt_cached_graph_is_removed_and_torch_answers(
    minilm: LocalEmbeddings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(minilm._path)
    cached = tmp_path / "onnx" / f"{path.name}-{onnx_encoder._fingerprint(path)}.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not an onnx graph")
    model = LocalEmbeddings(device="cpu", onnx_cache=tmp_path)
    torch_calls = _spy_torch(model, monkeypatch)
    assert len(model.embed_query("a question")) == 384
    assert torch_calls == [1]
    assert not cached.exists(), "the next process exports a fresh graph"


def test_pooling_it_cannot_reproduce_stays_on_torch(minilm: LocalEmbeddings) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling

    assert onnx_encoder.pooling_of(minilm._model) == ("mean", True)
    max_pooled = SentenceTransformer(modules=[minilm._model[0], Pooling(384, "max")])
    assert onnx_encoder.pooling_of(max_pooled) is None


def test_settings_switch_onnx_off(tmp_path: Path) -> None:
    on = make_embeddings(load_settings(data_dir=tmp_path, cache_dir=tmp_path / "c"))
    off = make_embeddings(
        load_settings(data_dir=tmp_path, embedding_onnx=False, embedding_compare_int8=False)
    )
    assert isinstance(on, LocalEmbeddings) and isinstance(off, LocalEmbeddings)
    assert on._onnx_cache == tmp_path / "c" and on._compare_int8
    assert off._onnx_cache is None and not off._compare_int8
