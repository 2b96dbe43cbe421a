from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.settings import load_settings
from retrievers.embeddings import LocalEmbeddings
from retrievers.rerank import (
    CohereReranker,
    CrossEncoderReranker,
    EmbeddingReranker,
    RerankError,
    RerankResult,
    make_reranker,
)
from tests.conftest import tiny_cross_encoder_at

QUERY = "how do I reset my password"
PASSAGES = [
    "The cafeteria serves lunch from noon until two.",
    "To reset your password, open Settings and choose Reset password.",
    "Password rules: at least twelve characters.",
    "Quarterly revenue grew by four percent.",
    "If you forgot your password, I can reset it for you.",
]


def _assert_well_formed(results: list[RerankResult], n: int) -> None:
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r.index for r in results) == list(range(n))


# -- cross-encoder ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_cross_encoder_at(tmp_path_factory.mktemp("tiny-cross-encoder"), num_labels=1)


def _expected_scores(model_dir: Path, query: str, passages: list[str]) -> list[float]:
    """Sigmoid of the classifier's logit, computed with transformers directly."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = BertForSequenceClassification.from_pretrained(str(model_dir))
    assert not model.training  # from_pretrained leaves dropout off
    features = tokenizer(
        [query] * len(passages), passages, padding=True, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**features).logits.squeeze(-1)
    return [float(x) for x in torch.sigmoid(logits).tolist()]


def test_cross_encoder_scores_are_the_sigmoid_of_the_logit_once(tiny_cross_encoder: Path) -> None:
    reranker = CrossEncoderReranker(str(tiny_cross_encoder), device="cpu")
    results = reranker.rerank(QUERY, PASSAGES)

    _assert_well_formed(results, len(PASSAGES))
    assert all(0.0 < r.score < 1.0 for r in results)
    expected = _expected_scores(tiny_cross_encoder, QUERY, PASSAGES)
    for r in results:
        assert r.score == pytest.approx(expected[r.index], abs=1e-5)
    # a non-trivial ranking: the random model does not score every pair the same
    assert results[0].score - results[-1].score > 1e-3
    assert reranker.name == f"cross-encoder:{tiny_cross_encoder}"


def test_cross_encoder_is_deterministic_and_respects_top_n(tiny_cross_encoder: Path) -> None:
    reranker = CrossEncoderReranker(str(tiny_cross_encoder), device="cpu")
    full = reranker.rerank(QUERY, PASSAGES)
    assert reranker.rerank(QUERY, PASSAGES) == full
    assert reranker.rerank(QUERY, PASSAGES, top_n=2) == full[:2]
    assert reranker.rerank(QUERY, PASSAGES, top_n=0) == []
    assert reranker.rerank(QUERY, PASSAGES, top_n=99) == full
    assert reranker.rerank(QUERY, []) == []
    with pytest.raises(ValueError, match="top_n"):
        reranker.rerank(QUERY, PASSAGES, top_n=-1)


async def test_cross_encoder_async_equals_sync_under_concurrency(tiny_cross_encoder: Path) -> None:
    reranker = CrossEncoderReranker(str(tiny_cross_encoder), device="cpu")
    expected = reranker.rerank(QUERY, PASSAGES, top_n=3)
    answers = await asyncio.gather(*(reranker.arerank(QUERY, PASSAGES, top_n=3) for _ in range(8)))
    assert answers == [expected] * 8
    assert await reranker.arerank(QUERY, []) == []


def test_unknown_cross_encoder_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(RerankError, match=r"Cannot load cross-encoder .*missing-model.*local path"):
        CrossEncoderReranker(str(tmp_path / "missing-model"), device="cpu")
    # a hub name that is not in the cache: refused at once, nothing is downloaded
    with pytest.raises(RerankError, match="never downloads"):
        CrossEncoderReranker("agentrag-tests/no-such-reranker", device="cpu")


def test_classifier_with_several_labels_is_refused(tmp_path: Path) -> None:
    model_dir = tiny_cross_encoder_at(tmp_path / "nli", num_labels=3)
    with pytest.raises(RerankError, match="3 output labels"):
        CrossEncoderReranker(str(model_dir), device="cpu")


# -- embedding reranker -----------------------------------------------------------------------


async def test_embedding_reranker_puts_the_on_topic_passage_first(minilm: LocalEmbeddings) -> None:
    reranker = EmbeddingReranker(minilm)
    passages = [
        "The stock market closed lower on Tuesday after weak earnings.",
        "Photosynthesis converts light energy into chemical energy in plants.",
        "Our office is closed on public holidays.",
    ]
    results = reranker.rerank("How do plants turn sunlight into energy?", passages)

    _assert_well_formed(results, len(passages))
    assert results[0].index == 1
    assert results[0].score > results[1].score + 0.2
    assert all(-1.0 <= r.score <= 1.0 for r in results)
    assert reranker.name == "embedding:all-MiniLM-L6-v2"

    top = await reranker.arerank("How do plants turn sunlight into energy?", passages, top_n=1)
    assert len(top) == 1 and top[0].index == 1
    assert top[0].score == pytest.approx(results[0].score, abs=1e-6)
    assert reranker.rerank("anything", []) == []


# -- Cohere v2 rerank API ---------------------------------------------------------------------


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def _overlap(query: str, document: str) -> float:
    q = _words(query)
    return len(q & _words(document)) / len(q) if q else 0.0


@dataclass
class _RerankService:
    """A real HTTP server speaking Cohere's `POST /v2/rerank`, scoring by word overlap."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None


def _handler(service: _RerankService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: object) -> None:
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            service.requests.append(
                {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
            )
            if self.path != "/v2/rerank":
                self._send(404, {"message": f"no route {self.path}"})
                return
            if service.fail_with is not None:
                self._send(service.fail_with, {"message": "reranker crashed"})
                return
            scored = [
                {"index": i, "relevance_score": _overlap(body["query"], doc)}
                for i, doc in enumerate(body["documents"])
            ]
            scored.sort(key=lambda item: -item["relevance_score"])
            top_n = body.get("top_n")
            if top_n is not None:
                scored = scored[:top_n]
            self._send(
                200,
                {
                    "id": "rerank-test",
                    "results": scored,
                    "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
                },
            )

    return Handler


@pytest.fixture
def rerank_service() -> Iterator[_RerankService]:
    service = _RerankService()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(service))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    service.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _expected_order(query: str, passages: list[str]) -> list[int]:
    return sorted(range(len(passages)), key=lambda i: -_overlap(query, passages[i]))


@pytest.mark.integration
def test_cohere_reranker_calls_the_v2_rerank_endpoint(rerank_service: _RerankService) -> None:
    reranker = CohereReranker(
        "rerank-test", base_url=rerank_service.url + "/", api_key="secret-key", max_retries=0
    )
    results = reranker.rerank(QUERY, PASSAGES)

    _assert_well_formed(results, len(PASSAGES))
    assert [r.index for r in results][:2] == _expected_order(QUERY, PASSAGES)[:2]
    assert results[0].score == pytest.approx(_overlap(QUERY, PASSAGES[results[0].index]))
    assert math.isclose(results[-1].score, 0.0)
    [seen] = rerank_service.requests
    assert seen["path"] == "/v2/rerank"
    assert seen["auth"] == "Bearer secret-key"
    assert seen["body"]["model"] == "rerank-test"
    assert seen["body"]["query"] == QUERY
    assert seen["body"]["documents"] == PASSAGES
    assert seen["body"]["top_n"] == len(PASSAGES)  # a number, never null
    assert reranker.name == "cohere:rerank-test"

    top = reranker.rerank(QUERY, PASSAGES, top_n=2)
    assert top == results[:2]
    assert rerank_service.requests[-1]["body"]["top_n"] == 2
    assert reranker.rerank(QUERY, []) == []
    assert len(rerank_service.requests) == 2  # empty input never reaches the service


@pytest.mark.integration
def test_cohere_base_url_may_carry_a_version_suffix(rerank_service: _RerankService) -> None:
    reranker = CohereReranker("rerank-test", base_url=rerank_service.url + "/v1", max_retries=0)
    assert reranker.base_url == rerank_service.url
    assert reranker.rerank(QUERY, PASSAGES, top_n=1)[0].index == _expected_order(QUERY, PASSAGES)[0]
    assert rerank_service.requests[-1]["path"] == "/v2/rerank"


@pytest.mark.integration
async def test_cohere_reranker_async(rerank_service: _RerankService) -> None:
    reranker = CohereReranker(
        "rerank-test", base_url=rerank_service.url, api_key="async-key", max_retries=0
    )
    results = await reranker.arerank(QUERY, PASSAGES, top_n=3)
    assert results == reranker.rerank(QUERY, PASSAGES, top_n=3)
    assert len(results) == 3
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    assert {r["auth"] for r in rerank_service.requests} == {"Bearer async-key"}
    assert rerank_service.requests[0]["body"]["top_n"] == 3
    assert await reranker.arerank(QUERY, []) == []


@pytest.mark.integration
async def test_cohere_server_error_names_the_service(rerank_service: _RerankService) -> None:
    rerank_service.fail_with = 500
    reranker = CohereReranker("rerank-test", base_url=rerank_service.url, max_retries=0)
    pattern = re.escape(f"Rerank service at {rerank_service.url} answered 500") + ".*crashed"
    with pytest.raises(RerankError, match=pattern):
        reranker.rerank(QUERY, PASSAGES)
    with pytest.raises(RerankError, match=pattern):
        await reranker.arerank(QUERY, PASSAGES)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_cohere_unreachable_service_fails_clearly() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    reranker = CohereReranker("rerank-test", base_url=url, max_retries=0, timeout_s=5)
    with pytest.raises(RerankError, match=re.escape(f"Cannot reach the rerank service at {url}")):
        reranker.rerank(QUERY, PASSAGES)
    with pytest.raises(RerankError, match=re.escape(f"Cannot reach the rerank service at {url}")):
        await reranker.arerank(QUERY, PASSAGES)


# -- factory ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_make_reranker_follows_settings(
    tmp_path: Path,
    minilm: LocalEmbeddings,
    tiny_cross_encoder: Path,
    rerank_service: _RerankService,
) -> None:
    default = make_reranker(load_settings(data_dir=tmp_path), minilm)
    assert isinstance(default, EmbeddingReranker)

    cross = make_reranker(
        load_settings(
            data_dir=tmp_path,
            reranker_backend="cross-encoder",
            reranker_model=str(tiny_cross_encoder),
            embedding_device="cpu",
        ),
        minilm,
    )
    assert isinstance(cross, CrossEncoderReranker)
    assert cross.name == f"cross-encoder:{tiny_cross_encoder}"

    cohere_settings = load_settings(
        data_dir=tmp_path,
        reranker_backend="cohere",
        reranker_url=rerank_service.url,
        reranker_api_key="settings-key",
    )
    cohere = make_reranker(cohere_settings, minilm)
    assert isinstance(cohere, CohereReranker)
    assert cohere.name == "cohere:rerank-v3.5"
    assert cohere.rerank(QUERY, PASSAGES, top_n=1)[0].index == _expected_order(QUERY, PASSAGES)[0]
    assert rerank_service.requests[-1]["auth"] == "Bearer settings-key"
    assert rerank_service.requests[-1]["body"]["model"] == "rerank-v3.5"
