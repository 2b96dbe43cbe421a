"""Langfuse tracing of chat turns: one trace per turn, every decision in it, verdicts as scores.

A turn's trace is opened where the turn runs (inside the stream, not around an endpoint): its
root observation is the turn, and the graph runs under it with a Langfuse callback handler in
the run's config (never on the models, which would make each LLM call a trace of its own).
The handler makes a span per node, a generation per LLM call and a retriever observation per
search; the turn's own verdicts, flags and counts are posted as scores when it ends.

Tracing is on when the Langfuse keys and base URL are set, and then costs nothing on the
request path: spans and scores leave in background threads, in bounded queues, and nothing
on the request path flushes. Off, nothing of Langfuse is even imported. Every text a trace
records goes through `TraceMask` first: cut to `trace_max_chars`, secrets replaced, and the
configured per-tenant hook applied.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import logging
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.runnables.config import get_async_callback_manager_for_config
from langgraph.config import get_config
from pydantic import BaseModel

from agent.errors import ConfigError
from agent.settings import Settings

if TYPE_CHECKING:
    from langfuse import Langfuse

log = logging.getLogger("agentrag.tracing")

TURN_NAME = "chat turn"
"""The name of every turn's trace and of its root observation."""
REDACTED = "[redacted]"
SECRET_KEY = re.compile(
    r"(^|[_-])(authorization|api[_-]?key|secret|secret[_-]?key|password|passwd|bearer|"
    r"access[_-]?token|auth[_-]?token|cookie)$",
    re.IGNORECASE,
)
"""Names of fields whose values are never recorded (`max_tokens` and `input_tokens` stay)."""
SECRET_TEXT = re.compile(
    r"(Bearer\s+)[^\s\"',;]+|\b(?:sk|pk)-(?:lf-)?[A-Za-z0-9_-]{8,}|\bar-[A-Za-z0-9_-]{20,}",
    re.IGNORECASE,
)
"""Tokens that look like credentials wherever they appear in a text: bearer tokens, OpenAI and
Langfuse style keys, agentrag API keys."""
MAX_ITEMS = 200
"""Longest list a trace records in full."""
_MAYBE_SECRET = ("earer", "EARER", "k-", "K-", "r-", "R-")
"""Substrings every `SECRET_TEXT` match contains: texts without any skip the regex."""

_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "agentrag_trace_tenant", default=None
)


def package_version() -> str:
    try:
        return version("agentrag")
    except PackageNotFoundError:
        return "0+unknown"


def tracing_configured(settings: Settings) -> bool:
    return bool(
        settings.langfuse_tracing_enabled
        and settings.langfuse_public_key
        and settings.langfuse_secret_key
        and settings.langfuse_base_url
    )


def load_mask_hook(spec: str) -> Callable[[str, str | None], str]:
    """`module:function` -> the function; a bad spec fails at start, not in a trace."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"trace_mask {spec!r} must look like `module:function`.")
    try:
        hook = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"trace_mask {spec!r} cannot be loaded: {exc}") from None
    if not callable(hook):
        raise ConfigError(f"trace_mask {spec!r} is not a function.")
    return hook  # type: ignore[no-any-return]


class TraceMask:
    """What a trace may record of a value: JSON-like data, texts cut to `max_chars`, credentials
    replaced, the tenant's masking hook applied to every text. Langfuse calls it on the input,
    output and metadata of every observation before anything is serialised."""

    def __init__(
        self,
        max_chars: int,
        secrets: Sequence[str] = (),
        hook: Callable[[str, str | None], str] | None = None,
    ) -> None:
        self.max_chars = max_chars
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
        self._hook = hook

    def __call__(self, *, data: Any, **_: Any) -> Any:
        return self.clean(data)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if any(marker in value for marker in _MAYBE_SECRET):
            value = SECRET_TEXT.sub(lambda m: (m.group(1) or "") + REDACTED, value)
        if self._hook is not None:
            value = self._hook(value, _tenant.get())
        if len(value) > self.max_chars:
            cut = len(value) - self.max_chars
            value = f"{value[: self.max_chars]}... [{cut} more characters]"
        return value

    def clean(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        if depth > 12:
            return "..."
        if isinstance(value, Mapping):
            return {
                str(k): REDACTED if SECRET_KEY.search(str(k)) else self.clean(v, depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            items = list(value)
            out = [self.clean(v, depth + 1) for v in items[:MAX_ITEMS]]
            if len(items) > MAX_ITEMS:
                out.append(f"... [{len(items) - MAX_ITEMS} more items]")
            return out
        if isinstance(value, BaseMessage):
            return {"role": value.type, "content": self.clean(value.content, depth + 1)} | (
                {"tool_calls": self.clean(value.tool_calls, depth + 1)}  # type: ignore[attr-defined]
                if getattr(value, "tool_calls", None)
                else {}
            )
        if isinstance(value, Document):
            return {
                "page_content": self.text(value.page_content),
                "metadata": self.clean(value.metadata, depth + 1),
            }
        if isinstance(value, BaseModel):
            return self.clean(value.model_dump(mode="json"), depth + 1)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return {
                "type": type(value).__name__,
                **{k: self.clean(v, depth + 1) for k, v in fields.items() if v not in (None, ())},
            }
        return self.text(repr(value))


@dataclasses.dataclass
class TurnTrace:
    """One turn's trace. A turn that is not traced has no `trace_id`, adds no callbacks and
    records nothing."""

    trace_id: str | None = None
    url: str | None = None
    handler: BaseCallbackHandler | None = None
    root: Any = None
    tracing: Tracing | None = None

    @property
    def callbacks(self) -> list[BaseCallbackHandler]:
        return [self.handler] if self.handler is not None else []

    def with_callbacks(self, config: dict[str, Any]) -> dict[str, Any]:
        """`config` with this trace's handler added (a graph run's config)."""
        if self.handler is None:
            return config
        return {**config, "callbacks": [*(config.get("callbacks") or []), self.handler]}

    def finish(self, values: Mapping[str, Any]) -> None:
        """Record the turn's outcome on its root observation and post its scores."""
        if self.tracing is None or self.trace_id is None:
            return
        try:
            self.root.update(output=turn_output(values))
            for score in turn_scores(values):
                self.tracing.score(self.trace_id, **score)
        except Exception:  # tracing never fails a turn
            log.exception("recording the turn's outcome in its trace failed")

    def fail(self, code: str, message: str) -> None:
        if self.root is None:
            return
        try:
            self.root.update(level="ERROR", status_message=f"{code}: {message}")
        except Exception:
            log.exception("recording the turn's error in its trace failed")


class Tracing:
    """The process's Langfuse client and what turns need of it. Made once per process (the
    server's lifespan, a CLI command); the client itself is made on first use."""

    def __init__(
        self, settings: Settings, count_tokens: Callable[[Sequence[str]], int] | None = None
    ) -> None:
        """`count_tokens`: counts a call's tokens when the model reports none."""
        self.settings = settings
        self._count_tokens = count_tokens
        self.enabled = tracing_configured(settings)
        self.sample_rate = settings.langfuse_sample_rate
        self._client: Langfuse | None = None
        self._lock = threading.Lock()
        self._hook = load_mask_hook(settings.trace_mask) if settings.trace_mask else None
        secrets = [
            s.get_secret_value()
            for s in (
                settings.langfuse_secret_key,
                settings.llm_api_key,
                settings.qdrant_api_key,
                settings.embedding_api_key,
                settings.reranker_api_key,
                settings.web_search_api_key,
            )
            if s is not None
        ]
        self.mask = TraceMask(settings.trace_max_chars, secrets, self._hook)

    @property
    def client(self) -> Langfuse:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Langfuse:
        """The client exports through a tracer provider of its own, not the process's global
        one: agentrag's spans go to Langfuse whatever else the process traces, and nothing
        else of the process's does."""
        from langfuse import Langfuse
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        release = package_version()
        secret = self.settings.langfuse_secret_key
        # traces hold text only: the SDK's search of every recorded value for media to upload
        # would walk each observation's data once more for nothing
        os.environ.setdefault("LANGFUSE_MEDIA_UPLOAD_ENABLED", "false")
        return Langfuse(
            public_key=self.settings.langfuse_public_key,
            secret_key=secret.get_secret_value() if secret is not None else None,
            base_url=self.settings.langfuse_base_url,
            release=release,
            # sampling is decided per turn here, so a trace id sent to a client is a trace
            sample_rate=1.0,
            mask=self.mask,
            tracer_provider=TracerProvider(
                resource=Resource.create({"langfuse.release": release, "service.name": "agentrag"}),
                shutdown_on_exit=False,
            ),
        )

    def start(self) -> None:
        """Make the client now (a server at start), not inside the first turn."""
        if self.enabled:
            self.client  # noqa: B018

    def sampled(self, wanted: bool = True) -> bool:
        """Whether a turn is traced: tracing is on, the caller did not turn it off, and the
        turn falls in the sample."""
        if not (self.enabled and wanted):
            return False
        return self.sample_rate >= 1.0 or random.random() < self.sample_rate

    def url(self, trace_id: str) -> str | None:
        base = (self.settings.langfuse_ui_url or self.settings.langfuse_base_url or "").rstrip("/")
        if not base:
            return None
        project = self.settings.langfuse_project_id
        if project:
            return f"{base}/project/{project}/traces/{trace_id}"
        return f"{base}/trace/{trace_id}"

    def handler(self, standalone: bool = False) -> BaseCallbackHandler:
        """A callback handler for one turn's graph run; `standalone`: one for a graph whose
        runs are turns with no trace of ours around them (`langgraph dev`), kept on the graph:
        each run becomes a trace of its own, scored when it ends."""
        from agent.langfuse_handler import TurnCallbackHandler

        return TurnCallbackHandler(
            public_key=self.settings.langfuse_public_key,
            count_tokens=self._count_tokens,
            finish_root=self._score_run if standalone else None,
        )

    def _score_run(self, trace_id: str, values: Mapping[str, Any]) -> None:
        try:
            for score in turn_scores(values):
                self.score(trace_id, **score)
        except Exception:
            log.exception("scoring the run failed")

    @contextlib.contextmanager
    def turn(
        self,
        *,
        question: str,
        session_id: str,
        user_id: str,
        trace_id: str | None = None,
        traced: bool = True,
        tags: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
        tenant: str | None = None,
        nested: bool = False,
    ) -> Iterator[TurnTrace]:
        """Open a turn's trace around the code that runs the turn; its root observation is
        current inside, so the graph's spans nest under it. `trace_id` (32 hex digits) lets
        a caller hand the id out before the turn starts; `traced=False` (the caller turned
        tracing off, or the turn fell out of the sample) yields an untraced turn. `nested`:
        the turn is part of a trace already open here (an experiment's item), not its own."""
        if not (self.enabled and traced):
            yield TurnTrace()
            return
        trace_id = None if nested else trace_id or new_trace_id()
        tenant_token = _tenant.set(tenant or user_id)
        try:
            with contextlib.ExitStack() as stack:
                try:
                    root, handler = self._open(
                        stack, question, session_id, user_id, trace_id, tags, metadata
                    )
                except Exception:
                    log.exception("opening the turn's trace failed; the turn runs untraced")
                    stack.close()
                    yield TurnTrace()
                    return
                trace_id = str(root.trace_id)
                yield TurnTrace(trace_id, self.url(trace_id), handler, root, self)
        finally:
            _tenant.reset(tenant_token)

    def _open(
        self,
        stack: contextlib.ExitStack,
        question: str,
        session_id: str,
        user_id: str,
        trace_id: str | None,
        tags: Sequence[str],
        metadata: Mapping[str, str] | None,
    ) -> tuple[Any, BaseCallbackHandler]:
        from langfuse import propagate_attributes

        client = self.client
        root = stack.enter_context(
            client.start_as_current_observation(
                name=TURN_NAME,
                as_type="agent",
                trace_context={"trace_id": trace_id} if trace_id else None,
                input={"message": question},
                metadata=dict(metadata or {}),
            )
        )
        stack.enter_context(
            propagate_attributes(
                session_id=_ascii(session_id),
                user_id=_ascii(user_id),
                tags=[_ascii(t) for t in tags],
                metadata={k: _ascii(v) for k, v in (metadata or {}).items()},
                trace_name=TURN_NAME,
                version=package_version(),
            )
        )
        return root, self.handler()

    def score(
        self,
        trace_id: str,
        *,
        name: str,
        value: float,
        data_type: Literal["NUMERIC", "BOOLEAN"] = "NUMERIC",
        comment: str | None = None,
    ) -> None:
        """Queued, never sent on the caller's path."""
        if not self.enabled:
            return
        self.client.create_score(
            trace_id=trace_id,
            name=name,
            value=value,
            data_type=data_type,
            comment=self.mask.text(comment) if comment else None,
        )

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send what is queued, waiting at most `timeout_s` (default `trace_flush_timeout_s`):
        an unreachable Langfuse delays the caller by that much, never more. True when all was
        sent in time. Never called on a turn's path."""
        client = self._client
        if client is None:
            return True
        from agent.langfuse_handler import counted_generations_done

        limit = timeout_s if timeout_s is not None else self.settings.trace_flush_timeout_s
        started = time.monotonic()
        if not counted_generations_done(limit):
            return False
        return self._bounded(client.flush, max(0.0, limit - (time.monotonic() - started)))

    def shutdown(self, timeout_s: float | None = None) -> bool:
        """At the end of a process: `flush`; if Langfuse did not take everything in time, stop
        the client too, so that the SDK's exit hook does not wait on it without limit."""
        client = self._client
        if client is None:
            return True
        if self.flush(timeout_s):
            return True
        threading.Thread(target=client.shutdown, name="agentrag-trace-stop", daemon=True).start()
        return False

    def _bounded(self, work: Callable[[], None], timeout_s: float | None) -> bool:
        done = threading.Event()

        def run() -> None:
            try:
                work()
            except Exception:
                log.exception("sending traces failed")
            finally:
                done.set()

        threading.Thread(target=run, name="agentrag-trace-flush", daemon=True).start()
        limit = timeout_s if timeout_s is not None else self.settings.trace_flush_timeout_s
        sent = done.wait(limit)
        if not sent:
            log.warning("traces not sent within %.1f s were left behind", limit)
        return sent


async def observed_search(
    name: str,
    query: str,
    search: Awaitable[list[dict[str, Any]]],
    metadata: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Run a search a node makes as a LangChain retriever run: a trace shows it as a retriever
    observation (the query in; chunk ids, titles, scores and texts out) under the node. With
    nobody listening to retriever runs (tracing off) it is just the search."""
    try:
        config = get_config()
    except RuntimeError:  # outside a graph run
        return await search
    # the run's handlers are looked at before a callback manager is made for them: untraced,
    # a search pays for nothing
    callbacks = config.get("callbacks")
    handlers = callbacks.handlers if isinstance(callbacks, BaseCallbackManager) else callbacks
    if not any(_hears_retrievers(h) for h in handlers or []):
        return await search
    manager = get_async_callback_manager_for_config(config)
    manager.add_metadata(dict(metadata), inherit=False)
    run = await manager.on_retriever_start(None, query, name=name)
    try:
        found = await search
    except BaseException as exc:
        await run.on_retriever_error(exc)
        raise
    await run.on_retriever_end(
        [
            Document(
                page_content=str(item.get("text", "")),
                metadata={k: v for k, v in item.items() if k != "text"},
            )
            for item in found
        ]
    )
    return found


def _hears_retrievers(handler: BaseCallbackHandler) -> bool:
    return not handler.ignore_retriever and (
        type(handler).on_retriever_start is not BaseCallbackHandler.on_retriever_start
    )


def new_trace_id() -> str:
    """A W3C/OpenTelemetry trace id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


def _ascii(value: str) -> str:
    """Trace attributes Langfuse aggregates on must be US-ASCII, at most 200 characters."""
    return value.encode("ascii", "replace").decode()[:200]


def turn_output(values: Mapping[str, Any]) -> dict[str, Any]:
    """What the turn's root observation shows as its output: the answer, what it cites, the
    verdict and this turn's flags."""
    turn = values.get("turn")
    verdict = values.get("verdict") or {}
    return {
        "answer": values.get("answer", ""),
        "citations": [
            {k: c.get(k) for k in ("n", "id", "title", "collection")}
            for c in values.get("citations") or []
        ],
        "verdict": {k: v for k, v in verdict.items() if k != "sentences"} if verdict else None,
        "flags": [f for f in values.get("flags") or [] if f.get("turn") == turn],
        "error": values.get("error"),
    }


def turn_scores(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The turn's own verdicts as Langfuse scores: grounded and answers-the-question (BOOLEAN),
    the share of answer sentences found supported, one score per flag raised (with its
    reason), LLM calls and evidence size."""
    turn = values.get("turn")
    scores: list[dict[str, Any]] = []
    verdict = values.get("verdict") or {}
    for name in ("grounded", "answers_question"):
        if name in verdict:
            scores.append(
                {"name": name, "value": float(bool(verdict[name])), "data_type": "BOOLEAN"}
            )
    sentences = verdict.get("sentences") or []
    if sentences:
        supported = sum(1 for s in sentences if s.get("supported"))
        scores.append({"name": "supported_sentences", "value": supported / len(sentences)})
    for f in values.get("flags") or []:
        if f.get("turn") == turn:
            scores.append(
                {
                    "name": f"flag_{f['flag']}",
                    "value": 1.0,
                    "data_type": "BOOLEAN",
                    "comment": f.get("reason"),
                }
            )
    usage = [u for u in values.get("usage") or [] if u.get("turn") == turn]
    scores.append({"name": "llm_calls", "value": float(len(usage))})
    evidence = values.get("evidence") or []
    scores.append({"name": "evidence_chunks", "value": float(len(evidence))})
    return scores
