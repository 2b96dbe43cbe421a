"""The engine behind `agentrag serve-models`: embeddings and cross-encoder scores for many
concurrent callers, batched dynamically.

Requests from any number of callers are tokenized as they arrive, in the caller's thread pool
(the fast tokenizer's Rust code releases the GIL and encodes a batch on several threads), so
tokenizing the next requests overlaps the forward pass of the current batch. Tokenized inputs
wait in one queue. A single model thread takes everything queued, sorts it by length and cuts
it into batches of at most `max_batch_tokens` padded tokens, so texts of similar length share a
batch and padding stays small. Whether it waits for more work first depends on whether more is
coming: while requests are still being tokenized it waits up to `max_wait_ms` for them, and an
idle engine runs a lone query at once (no added latency when there is nothing to batch with).

On a GPU the forward pass runs in fp16 (or bf16), and each batch's result is copied back
asynchronously while the next batch is collated and launched. On the CPU, embeddings run on
ONNX Runtime (the graph `retrievers.onnx_encoder` exports, with padded batches) when it loads,
else on torch; cross-encoders run on torch.

The queue is bounded by tokens: a request that would overflow it is refused at once
(`Overloaded`, with how long the queue takes to drain) rather than queued behind minutes of
work. `close` refuses new work, lets everything accepted finish, then stops the thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from agent.errors import AgentragError
from retrievers.embeddings import pick_device, resolve_model_path

logger = logging.getLogger("agentrag.model_engine")

Direction = Literal["right", "left"]
Kind = Literal["embed", "rerank"]


class EngineError(AgentragError):
    """A request the engine will not run; `error_type` is TEI's name for the failure."""

    error_type = "Backend"


class ValidationFailed(EngineError):
    error_type = "Validation"


class Overloaded(EngineError):
    error_type = "Overloaded"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ShuttingDown(EngineError):
    error_type = "Unhealthy"


@dataclass(frozen=True, slots=True)
class EngineLimits:
    max_batch_tokens: int = 16384
    """Padded tokens per forward pass (batch size x longest input in it)."""
    max_client_batch_size: int = 1024
    """Inputs (texts, or passages to rerank) in one request."""
    max_queued_tokens: int = 2_000_000
    """Tokens accepted but not yet run; more is refused with `Overloaded`."""
    max_wait_ms: float = 2.0
    """How long the model thread waits for requests still being tokenized."""
    tokenization_workers: int = max(1, min(8, (os.cpu_count() or 1)))


INLINE_TOKENIZE_CHARS = 2_000
"""Requests this short are tokenized on the event loop instead of the tokenizer pool."""


class Observer(Protocol):
    """What the engine reports (the server turns it into Prometheus metrics)."""

    def batch_done(self, kind: Kind, items: int, tokens: int, padded: int, seconds: float) -> None:
        pass


# -- the models ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    ids: np.ndarray
    mask: np.ndarray
    types: np.ndarray


class Runner(Protocol):
    """Runs one padded batch; `start` may return before the result is ready (a GPU's copy in
    flight) and `finish` waits for it."""

    def start(self, batch: Batch) -> Any: ...

    def finish(self, handle: Any) -> np.ndarray: ...


class _TorchRunner:
    """A transformers model on torch; `embed` pools its last hidden state, else its first
    logit is the score."""

    def __init__(self, network: Any, device: str, pooling: str | None) -> None:
        import torch

        self._torch = torch
        self._network = network
        self._device = device
        self._pooling = pooling

    def start(self, batch: Batch) -> Any:
        torch = self._torch
        with torch.inference_mode():
            ids, mask, types = (
                torch.from_numpy(a).to(self._device, non_blocking=True)
                for a in (batch.ids, batch.mask, batch.types)
            )
            out = self._network(input_ids=ids, attention_mask=mask, token_type_ids=types)
            if self._pooling is None:
                return _to_host(torch, out.logits[:, 0].float(), self._device)
            hidden = out.last_hidden_state
            if self._pooling == "cls":
                pooled = hidden[:, 0]
            else:
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
            return _to_host(torch, pooled.float(), self._device)

    def finish(self, handle: Any) -> np.ndarray:
        return _from_host(handle)


def _to_host(torch: Any, tensor: Any, device: str) -> Any:
    """On a GPU: an asynchronous copy into pinned memory and the event that marks it done."""
    if not device.startswith("cuda"):
        return tensor.numpy()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    return host, done


def _from_host(handle: Any) -> np.ndarray:
    if isinstance(handle, np.ndarray):
        return handle
    host, done = handle
    done.synchronize()
    return np.asarray(host.numpy())


class _OnnxEmbedRunner:
    def __init__(self, session: Any, pooling: str) -> None:
        self._session = session
        self._pooling = pooling
        self._inputs = [i.name for i in session.get_inputs()]

    def start(self, batch: Batch) -> Any:
        given = {
            "input_ids": batch.ids,
            "attention_mask": batch.mask,
            "token_type_ids": batch.types,
        }
        hidden = self._session.run(None, {n: given[n] for n in self._inputs})[0]
        if self._pooling == "cls":
            return np.asarray(hidden[:, 0], dtype=np.float32)
        weights = batch.mask[..., None].astype(np.float32)
        summed = (hidden * weights).sum(axis=1)
        return np.asarray(summed / np.maximum(weights.sum(axis=1), 1.0), dtype=np.float32)

    def finish(self, handle: Any) -> np.ndarray:
        return np.asarray(handle)


# -- tokens ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tokenized:
    ids: np.ndarray
    types: np.ndarray


class Tokenizer:
    """Thread-safe tokenizing with per-request truncation: texts are encoded without special
    tokens, cut, then given their special tokens, so no shared truncation setting is changed
    while other threads encode."""

    def __init__(self, path: str, max_input_length: int) -> None:
        from transformers import AutoTokenizer

        fast = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if not getattr(fast, "is_fast", False):
            raise EngineError(f"{path} has no fast tokenizer; the model server needs one")
        self._tok = fast.backend_tokenizer
        self._tok.no_truncation()
        self._tok.no_padding()
        self.max_input_length = max_input_length
        self.pad_id = int(fast.pad_token_id or 0)
        self._single_extra = self._tok.num_special_tokens_to_add(False)
        self._pair_extra = self._tok.num_special_tokens_to_add(True)

    def texts(self, texts: Sequence[str], truncate: bool, direction: Direction) -> list[Tokenized]:
        if len(texts) == 1:
            # a query: one pass with its special tokens, half the cost of encode then
            # post-process, which only a text that must be cut needs
            whole = self._tok.encode(texts[0])
            if len(whole.ids) <= self.max_input_length:
                return [_tokenized(whole)]
        room = self.max_input_length - self._single_extra
        out = []
        for text, enc in zip(
            texts, self._tok.encode_batch(list(texts), add_special_tokens=False), strict=True
        ):
            if len(enc.ids) > room:
                if not truncate:
                    raise ValidationFailed(
                        f"input of {len(enc.ids) + self._single_extra} tokens is longer than the "
                        f"model's {self.max_input_length}; send `truncate: true` to cut it "
                        f"({text[:40]!r}...)"
                    )
                enc.truncate(room, direction=direction)
            full = self._tok.post_process(enc, None, add_special_tokens=True)
            out.append(_tokenized(full))
        return out

    def pairs(
        self,
        query: str,
        texts: Sequence[str],
        truncate: bool,
        direction: Direction,
        max_tokens_per_text: int | None = None,
    ) -> list[Tokenized]:
        encoded = self._tok.encode_batch([query, *texts], add_special_tokens=False)
        first, rest = encoded[0], encoded[1:]
        room = self.max_input_length - self._pair_extra
        if len(first.ids) >= room:
            if not truncate:
                raise ValidationFailed(
                    f"the query of {len(first.ids)} tokens leaves no room for a passage in the "
                    f"model's {self.max_input_length} tokens; send `truncate: true` to cut it"
                )
            first.truncate(room // 2, direction=direction)
        out = []
        for enc in rest:
            if max_tokens_per_text is not None and len(enc.ids) > max_tokens_per_text:
                enc.truncate(max_tokens_per_text, direction=direction)
            if len(first.ids) + len(enc.ids) > room:
                if not truncate:
                    raise ValidationFailed(
                        f"a query and passage of {len(first.ids) + len(enc.ids)} tokens are longer "
                        f"than the model's {self.max_input_length}; send `truncate: true` to cut "
                        "the passage"
                    )
                enc.truncate(room - len(first.ids), direction=direction)
            full = self._tok.post_process(first, enc, add_special_tokens=True)
            out.append(_tokenized(full))
        return out

    def count(self, texts: Sequence[str]) -> int:
        return sum(len(e.ids) for e in self._tok.encode_batch(list(texts)))


def _tokenized(encoding: Any) -> Tokenized:
    return Tokenized(
        np.asarray(encoding.ids, dtype=np.int64), np.asarray(encoding.type_ids, dtype=np.int64)
    )


# -- the queue -------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Job:
    inputs: list[Tokenized]
    done: Callable[[np.ndarray | BaseException], None]
    rows: np.ndarray | None = None
    left: int = 0


@dataclass(order=True, slots=True)
class _Item:
    length: int
    job: _Job = field(compare=False)
    index: int = field(compare=False)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    kind: Kind
    model_id: str
    path: str
    device: str
    dtype: str
    backend: str
    max_input_length: int
    dimension: int | None
    pooling: str | None


class ModelEngine:
    """One model, its tokenizer, its queue and the thread that runs its batches."""

    def __init__(
        self,
        info: ModelInfo,
        runner: Runner,
        tokenizer: Tokenizer,
        limits: EngineLimits,
        observer: Observer | None = None,
    ) -> None:
        self.info = info
        self.limits = limits
        self.tokenizer = tokenizer
        self._runner = runner
        self.observer = observer
        """Told of every forward pass (the server's metrics); may be set after start."""
        self._pool = ThreadPoolExecutor(limits.tokenization_workers, "tokenize")
        self._cond = threading.Condition()
        self._items: list[_Item] = []
        self._queued_tokens = 0
        self._tokenizing = 0
        self._running_jobs = 0
        self._closing = False
        self._stopped = False
        self._tokens_per_s = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"model-{info.kind}", daemon=True)
        self._thread.start()

    # -- what the server reads

    @property
    def runner(self) -> Runner:
        return self._runner

    @property
    def queue_depth(self) -> int:
        return len(self._items)

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    @property
    def tokens_per_second(self) -> float:
        return self._tokens_per_s

    @property
    def ready(self) -> bool:
        return not self._closing and self._thread.is_alive()

    # -- requests

    async def embed(
        self, texts: Sequence[str], truncate: bool = False, direction: Direction = "right"
    ) -> tuple[np.ndarray, int]:
        """Pooled vectors (not normalised) of `texts` and the tokens they took."""
        self._check(texts, "inputs")
        return await self._run(
            lambda: self.tokenizer.texts(texts, truncate, direction), sum(map(len, texts))
        )

    async def score(
        self,
        query: str,
        texts: Sequence[str],
        truncate: bool = False,
        direction: Direction = "right",
        max_tokens_per_text: int | None = None,
    ) -> tuple[np.ndarray, int]:
        """Raw logits of (query, text) for each text, and the tokens they took."""
        self._check(texts, "texts")
        if not query.strip():
            raise ValidationFailed("`query` is empty")
        return await self._run(
            lambda: self.tokenizer.pairs(query, texts, truncate, direction, max_tokens_per_text),
            len(query) + sum(map(len, texts)),
        )

    def _check(self, texts: Sequence[str], name: str) -> None:
        if self._closing:
            raise ShuttingDown("the model server is shutting down")
        if not texts:
            raise ValidationFailed(f"`{name}` cannot be empty")
        if len(texts) > self.limits.max_client_batch_size:
            raise ValidationFailed(
                f"`{name}` must have at most {self.limits.max_client_batch_size} elements; "
                f"given {len(texts)}"
            )
        if any(not t.strip() for t in texts):
            raise ValidationFailed(f"`{name}` cannot hold an empty text")

    async def _run(
        self, tokenize: Callable[[], list[Tokenized]], chars: int
    ) -> tuple[np.ndarray, int]:
        loop = asyncio.get_running_loop()
        with self._cond:
            self._tokenizing += 1
        try:
            # a query takes tens of microseconds to tokenize: less than the hop to a thread
            small = chars <= INLINE_TOKENIZE_CHARS
            inputs = tokenize() if small else await loop.run_in_executor(self._pool, tokenize)
        except BaseException:
            with self._cond:
                self._tokenizing -= 1
                self._cond.notify_all()
            raise
        future: asyncio.Future[np.ndarray] = loop.create_future()

        def done(result: np.ndarray | BaseException) -> None:
            loop.call_soon_threadsafe(_settle, future, result)

        tokens = sum(len(t.ids) for t in inputs)
        self._enqueue(_Job(inputs, done, left=len(inputs)), tokens)
        return await future, tokens

    def _enqueue(self, job: _Job, tokens: int) -> None:
        with self._cond:
            self._tokenizing -= 1
            try:
                if self._closing:
                    raise ShuttingDown("the model server is shutting down")
                if (
                    self._queued_tokens
                    and self._queued_tokens + tokens > self.limits.max_queued_tokens
                ):
                    rate = self._tokens_per_s or float(self.limits.max_batch_tokens)
                    raise Overloaded(
                        f"the model queue is full ({self._queued_tokens} tokens waiting)",
                        retry_after_s=max(1.0, self._queued_tokens / rate),
                    )
                self._items.extend(_Item(len(t.ids), job, i) for i, t in enumerate(job.inputs))
                self._queued_tokens += tokens
                self._running_jobs += 1
            finally:
                self._cond.notify_all()

    # -- the model thread

    def _loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            self._run_batches(taken)

    def _take(self) -> list[_Item] | None:
        wait_s = self.limits.max_wait_ms / 1000
        with self._cond:
            while not self._items:
                if self._closing and self._tokenizing == 0:
                    self._stopped = True
                    self._cond.notify_all()
                    return None
                self._cond.wait(0.5)
            # more is coming while requests are still being tokenized: wait a little for them
            deadline = time.monotonic() + wait_s
            while (
                self._tokenizing
                and self._queued_tokens < self.limits.max_batch_tokens
                and (left := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(left)
            taken, self._items = self._items, []
            self._queued_tokens -= sum(i.length for i in taken)
            return taken

    def _run_batches(self, items: list[_Item]) -> None:
        items.sort()
        batches: list[list[_Item]] = []
        current: list[_Item] = []
        for item in items:  # ascending length: the last item is the longest of its batch
            if current and (len(current) + 1) * item.length > self.limits.max_batch_tokens:
                batches.append(current)
                current = []
            current.append(item)
        if current:
            batches.append(current)
        pending: tuple[list[_Item], Any, float, int] | None = None
        for batch in batches:
            started = time.perf_counter()
            try:
                collated = self._collate(batch)
                handle = self._runner.start(collated)
            except Exception as exc:  # a failed batch fails its requests, never the thread
                self._fail(batch, exc)
                continue
            if pending is not None:
                self._deliver(*pending)
            pending = (batch, handle, started, int(collated.ids.size))
        if pending is not None:
            self._deliver(*pending)

    def _collate(self, batch: list[_Item]) -> Batch:
        width = max(i.length for i in batch)
        ids = np.full((len(batch), width), self.tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        types = np.zeros((len(batch), width), dtype=np.int64)
        for row, item in enumerate(batch):
            tokens = item.job.inputs[item.index]
            ids[row, : item.length] = tokens.ids
            mask[row, : item.length] = 1
            types[row, : item.length] = tokens.types
        return Batch(ids, mask, types)

    def _deliver(self, batch: list[_Item], handle: Any, started: float, padded: int) -> None:
        try:
            rows = self._runner.finish(handle)
        except Exception as exc:
            self._fail(batch, exc)
            return
        seconds = max(time.perf_counter() - started, 1e-9)
        tokens = sum(i.length for i in batch)
        rate = tokens / seconds
        self._tokens_per_s = (
            rate if not self._tokens_per_s else 0.8 * self._tokens_per_s + 0.2 * rate
        )
        if self.observer is not None:
            self.observer.batch_done(self.info.kind, len(batch), tokens, padded, seconds)
        for row, item in zip(rows, batch, strict=True):
            job = item.job
            if job.rows is None:
                job.rows = np.zeros((len(job.inputs), *np.shape(row)), dtype=np.float32)
            job.rows[item.index] = row
            job.left -= 1
            if job.left == 0:
                self._finished(job, job.rows)

    def _fail(self, batch: list[_Item], exc: Exception) -> None:
        logger.exception("a %s batch failed", self.info.kind, exc_info=exc)
        failed = {id(i.job): i.job for i in batch}
        for job in failed.values():
            if job.left > 0:
                job.left = 0
                self._finished(job, EngineError(f"the model failed on this batch: {exc}"))

    def _finished(self, job: _Job, result: np.ndarray | BaseException) -> None:
        job.done(result)
        with self._cond:
            self._running_jobs -= 1
            self._cond.notify_all()

    # -- lifetime

    def warm_up(self) -> None:
        """One forward pass at a short and at the longest length, so the first request pays
        for no lazy initialisation (kernels, allocator, ONNX Runtime's first run)."""
        for length in (8, self.info.max_input_length):
            ids = np.full((2, length), self.tokenizer.pad_id, dtype=np.int64)
            ones = np.ones_like(ids)
            self._runner.finish(self._runner.start(Batch(ids, ones, np.zeros_like(ids))))

    def close(self, timeout_s: float = 30.0) -> bool:
        """Refuses new work, runs what was accepted, stops the thread; False if the work did
        not finish within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._running_jobs or self._items or self._tokenizing) and (
                left := deadline - time.monotonic()
            ) > 0:
                self._cond.wait(left)
            drained = not (self._running_jobs or self._items)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        return drained


def _settle(future: asyncio.Future[np.ndarray], result: np.ndarray | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


# -- loading ---------------------------------------------------------------------------------


def load_engine(
    kind: Kind,
    model: str,
    device: str = "auto",
    dtype: str = "auto",
    limits: EngineLimits | None = None,
    observer: Observer | None = None,
    onnx_cache: Path | None = None,
    max_input_length: int | None = None,
) -> ModelEngine:
    """The engine for an embedding model (sentence-transformers folder or name in the local
    cache) or a cross-encoder (a sequence-classification model with one label)."""
    limits = limits or EngineLimits()
    device = pick_device(device)
    path = resolve_model_path(model) if kind == "embed" else model
    if kind == "embed":
        runner, info = _embed_runner(model, path, device, dtype, onnx_cache, max_input_length)
    else:
        runner, info = _score_runner(model, path, device, dtype, max_input_length)
    tokenizer = Tokenizer(path, info.max_input_length)
    engine = ModelEngine(info, runner, tokenizer, limits, observer)
    return engine


def _torch_dtype(device: str, dtype: str) -> tuple[Any, str]:
    import torch

    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    if dtype not in ("float16", "bfloat16", "float32"):
        raise EngineError(f"--dtype must be float16, bfloat16, float32 or auto; given {dtype!r}")
    if dtype != "float32" and not device.startswith("cuda"):
        raise EngineError(f"{dtype} runs on a GPU only; on the CPU use float32")
    return getattr(torch, dtype), dtype


def _embed_runner(
    model: str,
    path: str,
    device: str,
    dtype: str,
    onnx_cache: Path | None,
    max_input_length: int | None,
) -> tuple[Runner, ModelInfo]:
    from sentence_transformers import SentenceTransformer

    from retrievers.onnx_encoder import onnx_session, pooling_of

    try:
        st = SentenceTransformer(path, device="cpu", local_files_only=True)
    except Exception as exc:
        raise EngineError(f"Cannot load embedding model {model!r}: {exc}") from exc
    described = pooling_of(st)
    if described is None:
        raise EngineError(
            f"{model!r} is not Transformer + Pooling (mean or CLS) [+ Normalize]; the model "
            "server runs those"
        )
    pooling = described[0]
    longest = int(st.max_seq_length or 512)
    length = min(max_input_length or longest, longest)
    dimension = int(st.get_embedding_dimension() or 0)
    torch_dtype, dtype = _torch_dtype(device, dtype)
    runner: Runner | None = None
    backend = "torch"
    if device == "cpu" and onnx_cache is not None:
        session = onnx_session(st, path, onnx_cache, threads=os.cpu_count() or 1)
        if session is not None:
            runner, backend = _OnnxEmbedRunner(session, pooling), "onnxruntime"
    if runner is None:
        transformer: Any = st[0].auto_model
        network = transformer.to(device=device, dtype=torch_dtype).eval()
        runner = _TorchRunner(network, device, pooling)
    info = ModelInfo("embed", model, path, device, dtype, backend, length, dimension, pooling)
    return runner, info


def _score_runner(
    model: str, path: str, device: str, dtype: str, max_input_length: int | None
) -> tuple[Runner, ModelInfo]:
    from transformers import AutoModelForSequenceClassification

    torch_dtype, dtype = _torch_dtype(device, dtype)
    try:
        network = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True, torch_dtype=torch_dtype
        )
    except Exception as exc:
        raise EngineError(
            f"Cannot load cross-encoder {model!r}: {exc}. Give a local path or a model already in "
            "the Hugging Face cache (nothing is downloaded)."
        ) from exc
    if network.config.num_labels != 1:
        raise EngineError(
            f"{model!r} has {network.config.num_labels} labels; a reranker scores each pair with "
            "one logit"
        )
    network = network.to(device).eval()
    positions = int(getattr(network.config, "max_position_embeddings", 512) or 512)
    length = min(max_input_length or 512, positions)
    info = ModelInfo("rerank", model, path, device, dtype, "torch", length, None, None)
    return _TorchRunner(network, device, None), info


def sigmoid(scores: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-scores)), dtype=np.float32)


def normalized(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
