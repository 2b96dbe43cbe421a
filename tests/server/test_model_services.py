"""`agentrag serve-models`: the same vectors and scores as in-process, batching across callers,
the protocols' real clients, the errors, and a shutdown that loses no accepted request.

Batching is made observable without timing: a gate holds the model thread inside its first
forward pass while other requests queue, so what the next pass takes is known."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI

from retrievers.embeddings import LocalEmbeddings, RemoteEmbeddings
from retrievers.model_engine import (
    Batch,
    EngineLimits,
    ModelEngine,
    Runner,
    load_engine,
)
from retrievers.rerank import CohereReranker, CrossEncoderReranker
from server.models_app import ModelServer, create_models_app
from tests.conftest import tiny_cross_encoder_at
from tests.server.conftest import LiveServer

TEXTS = [
    "Venus has the hottest surface of any planet.",
    "Proxima Centauri is the nearest star to the Sun.",
    "Saturn's rings are made mostly of water ice.",
]
QUERY = "which planet is hottest"


class Gate:
    """A runner that holds every forward pass until opened; counts the passes it saw."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.sizes: list[int] = []

    def start(self, batch: Batch) -> Any:
        self.sizes.append(int(batch.ids.shape[0]))
        self.entered.set()
        self.opened.wait(30)
        return self.inner.start(batch)

    def finish(self, handle: Any) -> np.ndarray:
        return self.inner.finish(handle)


def gated(engine: ModelEngine, limits: EngineLimits | None = None) -> tuple[ModelEngine, Gate]:
    gate = Gate(engine.runner)
    return ModelEngine(engine.info, gate, engine.tokenizer, limits or engine.limits), gate


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_cross_encoder_at(tmp_path_factory.mktemp("model-server-ce"), num_labels=1)


@pytest.fixture(scope="module")
def engines(
    tmp_path_factory: pytest.TempPathFactory, cross_encoder: Path
) -> Iterator[dict[str, ModelEngine]]:
    limits = EngineLimits(max_batch_tokens=4096, max_client_batch_size=16, tokenization_workers=2)
    cache = tmp_path_factory.mktemp("onnx-cache")
    made = {
        "onnx": load_engine("embed", "all-MiniLM-L6-v2", "cpu", limits=limits, onnx_cache=cache),
        "torch": load_engine("embed", "all-MiniLM-L6-v2", "cpu", limits=limits),
        "rerank": load_engine("rerank", str(cross_encoder), "cpu", limits=limits),
    }
    yield made
    for engine in made.values():
        engine.close(5)


def app_for(
    embed: ModelEngine | None, rerank: ModelEngine | None, owns: bool = False, **kwargs: Any
) -> FastAPI:
    """An app over engines the module shares (not closed with the app, unless `owns`)."""
    server = ModelServer(embed=embed, rerank=rerank, owns_engines=owns, **kwargs)
    return create_models_app(server)


@pytest.fixture
async def client(engines: dict[str, ModelEngine]) -> AsyncIterator[httpx.AsyncClient]:
    app = app_for(engines["onnx"], engines["rerank"], max_body_bytes=20_000)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://models") as c:
        yield c


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(axis=1))


# -- the same results as in-process ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_served_embeddings_equal_in_process_ones(
    engines: dict[str, ModelEngine], minilm: LocalEmbeddings, backend: str
) -> None:
    """Through the real `openai` client (base64 by default, then floats) and TEI's /embed."""
    import openai

    expected = np.array(minilm.embed_documents(TEXTS))
    with LiveServer(app_for(engines[backend], None), health="/health") as live:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused")
        got = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS)
        assert [d.index for d in got.data] == [0, 1, 2]
        assert got.usage.prompt_tokens > len(TEXTS)
        as_floats = client.embeddings.create(
            model="all-MiniLM-L6-v2", input=TEXTS, encoding_format="float"
        )
        tei = httpx.post(live.url + "/embed", json={"inputs": TEXTS}).json()
        raw = httpx.post(live.url + "/embed", json={"inputs": TEXTS, "normalize": False}).json()
        remote = RemoteEmbeddings(live.url + "/v1", "all-MiniLM-L6-v2").embed_documents(TEXTS)
    for rows in (
        [d.embedding for d in got.data],
        [d.embedding for d in as_floats.data],
        tei,
        remote,
    ):
        assert (cosines(np.array(rows), expected) > 0.999).all()
        assert np.allclose(np.linalg.norm(np.array(rows), axis=1), 1.0, atol=1e-4)
    assert not np.allclose(np.linalg.norm(np.array(raw), axis=1), 1.0, atol=1e-2)


def test_served_scores_equal_in_process_ones_through_cohere_clients(
    engines: dict[str, ModelEngine], cross_encoder: Path
) -> None:
    import cohere

    passages = [*TEXTS, "Mars has the tallest volcano."]
    expected = CrossEncoderReranker(str(cross_encoder), device="cpu").rerank(QUERY, passages)
    with LiveServer(app_for(None, engines["rerank"]), health="/health") as live:
        v2 = cohere.ClientV2(api_key="unused", base_url=live.url).rerank(
            model="tiny", query=QUERY, documents=passages, top_n=2
        )
        ours = CohereReranker("tiny", base_url=live.url + "/v2").rerank(QUERY, passages)
        v1 = httpx.post(
            live.url + "/v1/rerank",
            json={
                "query": QUERY,
                "documents": [{"text": p} for p in passages],
                "top_n": 1,
                "return_documents": True,
            },
        ).json()
        tei = httpx.post(
            live.url + "/rerank", json={"query": QUERY, "texts": passages, "return_text": True}
        ).json()
        raw = httpx.post(
            live.url + "/rerank", json={"query": QUERY, "texts": passages, "raw_scores": True}
        ).json()
    assert [(r.index, round(r.relevance_score, 5)) for r in v2.results] == [
        (r.index, round(r.score, 5)) for r in expected[:2]
    ]
    assert [r.index for r in ours] == [r.index for r in expected]
    assert v1["results"][0]["index"] == expected[0].index
    assert v1["results"][0]["document"] == {"text": passages[expected[0].index]}
    assert [t["index"] for t in tei] == [r.index for r in expected]
    assert tei[0]["text"] == passages[expected[0].index]
    assert all(
        np.isclose(1 / (1 + np.exp(-r["score"])), t["score"], atol=1e-5)
        for r, t in zip(raw, tei, strict=True)
    )


async def test_the_fast_path_and_the_fastapi_route_reply_alike(client: httpx.AsyncClient) -> None:
    """A plain JSON body is answered before FastAPI (the single-query path); the same body as
    `+json`, which only FastAPI reads, goes through the route. Their replies are the same, and a
    body the fast path cannot take still gets the route's errors."""
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("/embed", {"inputs": QUERY}),
        ("/embed", {"inputs": TEXTS, "normalize": False, "truncation_direction": "Left"}),
        ("/v1/embeddings", {"input": TEXTS, "model": "mini", "encoding_format": "base64"}),
        ("/embeddings", {"input": QUERY, "encoding_format": "float"}),
        ("/embed", {"inputs": [QUERY], "dimensions": 12}),
    ]
    for path, body in bodies:
        fast, routed = [
            await client.post(path, content=orjson.dumps(body), headers={"content-type": kind})
            for kind in ("application/json; charset=utf-8", "application/vnd.api+json")
        ]
        assert fast.status_code == routed.status_code, (path, body)
        assert fast.json() == routed.json(), (path, body)
    assert fast.status_code == 422 and "dimensions" in fast.json()["error"]
    wrong_type = await client.post("/embed", json={"inputs": 42})
    assert wrong_type.status_code == 422 and wrong_type.json()["error"].startswith("inputs")


# -- batching across callers -------------------------------------------------------------------


async def test_concurrent_requests_share_a_forward_pass_and_keep_their_own_results(
    engines: dict[str, ModelEngine], minilm: LocalEmbeddings
) -> None:
    engine, gate = gated(engines["onnx"])
    app = app_for(engine, None)
    transport = httpx.ASGITransport(app=app)
    requests = [[f"{t} ({i})" for t in TEXTS[: 1 + i % 3]] for i in range(8)]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://models") as c:
            first = asyncio.create_task(c.post("/embed", json={"inputs": ["hold the model"]}))
            await asyncio.to_thread(gate.entered.wait, 30)
            rest = [asyncio.create_task(c.post("/embed", json={"inputs": r})) for r in requests]
            while engine.queue_depth < sum(len(r) for r in requests):
                await asyncio.sleep(0.01)  # a condition, not a timing: all eight are queued
            gate.opened.set()
            replies = await asyncio.gather(first, *rest)
            metrics = (await c.get("/metrics")).text
    finally:
        gate.opened.set()
        engine.close(5)
    assert all(r.status_code == 200 for r in replies)
    assert gate.sizes == [1, sum(len(r) for r in requests)]  # the eight ran as one batch
    for texts, reply in zip(requests, replies[1:], strict=True):
        expected = np.array(minilm.embed_documents(texts))
        assert (cosines(np.array(reply.json()), expected) > 0.999).all()
    assert 'agentrag_models_batches_total{model="embed"} 2.0' in metrics
    assert f'agentrag_models_batch_size_sum{{model="embed"}} {1 + gate.sizes[1]}.0' in metrics


# -- errors --------------------------------------------------------------------------------------


async def test_validation_errors_are_422_in_tei_shape(client: httpx.AsyncClient) -> None:
    too_many = await client.post("/embed", json={"inputs": ["a text"] * 17})
    empty = await client.post("/embed", json={"inputs": []})
    blank = await client.post("/v1/embeddings", json={"input": ["fine", " "]})
    tokens = await client.post("/v1/embeddings", json={"input": [[101, 102]]})
    long_text = "word " * 600
    too_long = await client.post("/embed", json={"inputs": [long_text]})
    cut = await client.post("/embed", json={"inputs": [long_text], "truncate": True})
    rerank_long = await client.post("/rerank", json={"query": "q", "texts": [long_text]})
    cohere_cut = await client.post("/v2/rerank", json={"query": "q", "documents": [long_text]})
    no_query = await client.post("/rerank", json={"query": " ", "texts": ["t"]})
    bad_json = await client.post(
        "/embed", content=b"{not json", headers={"content-type": "application/json"}
    )
    for reply in (too_many, empty, blank, tokens, too_long, rerank_long, no_query, bad_json):
        assert reply.status_code == 422, reply.text
        body = reply.json()
        assert body["error_type"] == "Validation" and body["error"]
    assert "at most 16" in too_many.json()["error"]
    assert "truncate" in too_long.json()["error"]
    assert cut.status_code == 200 and len(cut.json()[0]) == 384
    assert cohere_cut.status_code == 200  # Cohere's API truncates long documents itself


async def test_a_body_over_the_limit_is_413_also_when_chunked(client: httpx.AsyncClient) -> None:
    big = b'{"inputs": ["' + b"x" * 30_000 + b'"]}'
    declared = await client.post(
        "/embed", content=big, headers={"content-type": "application/json"}
    )

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    chunked = await client.post(
        "/embed", content=chunks(), headers={"content-type": "application/json"}
    )
    headers = await client.post("/embed", json={"inputs": "hi"}, headers={"X-Pad": "x" * 40_000})
    assert headers.status_code == 431 and headers.json()["error_type"] == "Validation"
    for reply in (declared, chunked):
        assert reply.status_code == 413
        assert reply.json()["error_type"] == "Validation"
        assert "20000 bytes" in reply.json()["error"]


async def test_a_full_queue_answers_429_with_retry_after(engines: dict[str, ModelEngine]) -> None:
    limits = EngineLimits(max_batch_tokens=4096, max_queued_tokens=40, tokenization_workers=2)
    engine, gate = gated(engines["onnx"], limits)
    transport = httpx.ASGITransport(app=app_for(engine, None))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://models") as c:
            held = asyncio.create_task(c.post("/embed", json={"inputs": ["held"]}))
            await asyncio.to_thread(gate.entered.wait, 30)
            queued = asyncio.create_task(c.post("/embed", json={"inputs": [TEXTS[0] * 3]}))
            while engine.queued_tokens == 0:
                await asyncio.sleep(0.01)
            refused = await c.post("/embed", json={"inputs": [TEXTS[1] * 3]})
            gate.opened.set()
            assert (await held).status_code == 200 and (await queued).status_code == 200
    finally:
        gate.opened.set()
        engine.close(5)
    assert refused.status_code == 429
    assert refused.json()["error_type"] == "Overloaded"
    assert int(refused.headers["retry-after"]) >= 1


async def test_a_key_guards_every_route_but_health_and_metrics(
    engines: dict[str, ModelEngine],
) -> None:
    app = app_for(engines["onnx"], None, api_key="s3cret")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://models") as c:
        missing = await c.post("/embed", json={"inputs": "hi"})
        wrong = await c.post(
            "/embed", json={"inputs": "hi"}, headers={"Authorization": "Bearer nope"}
        )
        right = await c.post(
            "/embed", json={"inputs": "hi"}, headers={"Authorization": "Bearer s3cret"}
        )
        health = await c.get("/health")
        info = await c.get("/info", headers={"Authorization": "Bearer s3cret"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error_type"] == "Unauthorized"
    assert right.status_code == 200 and health.status_code == 200
    assert info.json()["dim"] == 384 and info.json()["max_input_length"] == 256
    assert info.json()["model_type"] == {"embedding": {"pooling": "mean"}}


async def test_a_model_not_served_is_named(engines: dict[str, ModelEngine]) -> None:
    transport = httpx.ASGITransport(app=app_for(engines["onnx"], None))
    async with httpx.AsyncClient(transport=transport, base_url="http://models") as c:
        reply = await c.post("/rerank", json={"query": "q", "texts": ["t"]})
    assert reply.status_code == 404
    assert "--rerank" in reply.json()["error"]


# -- shutdown ------------------------------------------------------------------------------------


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_shutdown_under_load_loses_no_accepted_request(
    engines: dict[str, ModelEngine], minilm: LocalEmbeddings
) -> None:
    engine, gate = gated(engines["onnx"])
    server = LiveServer(app_for(engine, None, owns=True), health="/health")
    texts = [[f"request {i}: {TEXTS[i % 3]}"] for i in range(12)]
    results: dict[int, httpx.Response | Exception] = {}

    def call(i: int) -> None:
        try:
            results[i] = httpx.post(server.url + "/embed", json={"inputs": texts[i]}, timeout=60)
        except httpx.HTTPError as exc:
            results[i] = exc

    with server:
        callers = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
        for t in callers:
            t.start()
        gate.entered.wait(30)
        while engine.queue_depth < len(texts) - gate.sizes[0]:
            threading.Event().wait(0.01)  # every request is accepted and queued or running
        server.server.should_exit = True  # uvicorn stops listening, then waits for these
        while listening(server.port):
            threading.Event().wait(0.01)
        gate.opened.set()
        for t in callers:
            t.join(60)
    assert len(results) == len(texts)
    for i, reply in results.items():
        assert isinstance(reply, httpx.Response), reply
        assert reply.status_code == 200
        expected = np.array(minilm.embed_documents(texts[i]))
        assert (cosines(np.array(reply.json()), expected) > 0.999).all()
    assert not engine.ready  # the app's shutdown drained and closed the engine
    with pytest.raises(httpx.HTTPError):
        httpx.post(server.url + "/embed", json={"inputs": ["late"]}, timeout=2)
