from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from agent.errors import EmbeddingError
from agent.settings import load_settings
from retrievers.embeddings import (
    REQUEST_TEXTS,
    LocalEmbeddings,
    RemoteEmbeddings,
    make_embeddings,
    pick_device,
)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


def test_bundled_model_embeds_meaning(minilm: LocalEmbeddings) -> None:
    assert minilm.dimension == 384
    assert pick_device("auto") in ("cpu", "cuda")
    query = minilm.embed_query("How do plants turn sunlight into energy?")
    docs = minilm.embed_documents(
        [
            "Photosynthesis converts light energy into chemical energy in plants.",
            "The stock market closed lower on Tuesday.",
        ]
    )
    assert len(docs) == 2 and len(docs[0]) == 384
    assert cosine(query, docs[0]) > cosine(query, docs[1]) + 0.2
    assert math.isclose(sum(x * x for x in docs[0]), 1.0, rel_tol=1e-3)  # normalised
    assert minilm.embed_documents([]) == []


def test_request_encodes_run_on_one_thread_and_match_ingestion_batches(
    minilm: LocalEmbeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query or an answer's sentences must not wait for a second, busy core; the vectors must
    be the ones an ingestion batch would give, and torch's own setting must survive."""
    import torch

    threads_seen: list[int] = []
    encode = minilm._model.encode

    def spy(*args: object, **kwargs: object) -> object:
        threads_seen.append(torch.get_num_threads())
        return encode(*args, **kwargs)

    before = torch.get_num_threads()
    texts = ["Venus is the hottest planet.", "Mercury is the closest to the Sun, and small."]
    filler = [f"filler sentence number {i}" for i in range(REQUEST_TEXTS)]
    monkeypatch.setattr(minilm._model, "encode", spy)
    small = minilm.embed_documents(texts)
    large = minilm.embed_documents([*texts, *filler])[:2]
    assert threads_seen == [1, before]
    assert torch.get_num_threads() == before
    for s, b in zip(small, large, strict=True):
        assert max(abs(x - y) for x, y in zip(s, b, strict=True)) < 1e-5


def test_unknown_local_model_fails_clearly() -> None:
    with pytest.raises(EmbeddingError, match="Cannot load embedding model"):
        LocalEmbeddings("/nonexistent/model-dir", device="cpu")


class _EmbeddingService(BaseHTTPRequestHandler):
    """A real HTTP server speaking the OpenAI embeddings shape, backed by the bundled model."""

    model: LocalEmbeddings
    seen_auth: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen_auth.append(self.headers.get("Authorization", ""))
        if body.get("model") == "broken":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"model crashed")
            return
        vectors = self.model.embed_documents(body["input"])
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        payload = json.dumps({"object": "list", "data": list(reversed(data))}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def service(minilm: LocalEmbeddings) -> Iterator[str]:
    _EmbeddingService.model = minilm
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_remote_embeddings_match_local(service: str, minilm: LocalEmbeddings) -> None:
    remote = RemoteEmbeddings(service, "all-MiniLM-L6-v2", api_key="secret", batch_size=2)
    texts = ["alpha beta", "gamma", "delta epsilon", "zeta"]
    got = remote.embed_documents(texts)  # two batches, answers out of order
    want = minilm.embed_documents(texts)
    for g, w in zip(got, want, strict=True):
        assert cosine(g, w) > 0.9999
    assert remote.dimension == 384
    assert _EmbeddingService.seen_auth[-1] == "Bearer secret"


async def test_remote_embeddings_async(service: str, minilm: LocalEmbeddings) -> None:
    remote = RemoteEmbeddings(service, "all-MiniLM-L6-v2")
    vector = await remote.aembed_query("hello")
    assert cosine(vector, minilm.embed_query("hello")) > 0.9999


def test_remote_errors_are_clear(service: str) -> None:
    with pytest.raises(EmbeddingError, match="answered 500"):
        RemoteEmbeddings(service, "broken").embed_query("x")
    with pytest.raises(EmbeddingError, match="Cannot reach"):
        RemoteEmbeddings("http://127.0.0.1:9/v1", "m", timeout_s=2).embed_query("x")


def test_factory_picks_backend(service: str) -> None:
    remote = make_embeddings(load_settings(embedding_backend="remote", embedding_url=service))
    assert isinstance(remote, RemoteEmbeddings)
    assert isinstance(make_embeddings(load_settings()), LocalEmbeddings)
