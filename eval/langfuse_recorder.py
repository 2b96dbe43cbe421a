"""A Langfuse server stand-in on loopback: the real SDK talks to it, tests read what it sent.

Tracing is only trustworthy when it is tested with the SDK that ships it: the span tree, the
attribute names, the compression, the batching and the retries all live in the SDK (v5), not in
agentrag. This recorder speaks the part of Langfuse's public API the SDK calls and keeps what
arrives, decoded, so a test can assert the trace shape, the scores, the prompt fetches and the
experiment links, and scan every byte sent for a leaked secret:

- ``POST /api/public/otel/v1/traces``: OTLP/HTTP protobuf, gzip or not, decoded into
  `RecordedSpan`s (the SDK's only way of sending traces and observations);
- ``POST /api/public/scores``: the v5 batch (a JSON list) and a single score object;
- ``GET/POST /api/public/v2/prompts[/{name}]`` and ``PATCH .../versions/{version}``: prompts by
  label or version, as `get_prompt`, `create_prompt` and `update_prompt` call them;
- ``/api/public/v2/datasets`` and ``/api/public/dataset-items``: datasets and their items, with
  the page-numbered listing `get_dataset` walks;
- ``GET /api/public/projects`` (trace and experiment URLs) and ``GET /api/public/health``.

Experiment runs have no endpoint of their own in v5: `run_experiment` writes
``langfuse.experiment.*`` attributes on the spans of each item's trace, and the server derives
its experiment items from them. `LangfuseRecorder.run_items` does the same.

Every ``/api/public`` request needs HTTP Basic auth with the recorder's keys (401 otherwise).
`LangfuseRecorder.mode` switches the whole API to answering 500 (``"error"``) or to holding
every reply until the mode changes or the recorder closes (``"hang"``), for tests that tracing
never gets in the user's way.

The server is the standard library's threaded HTTP server rather than uvicorn: each request has
its own thread, so a held reply is a plain wait on a condition, and `close` can release them all
at once and stop within one poll interval.

Usage::

    with LangfuseRecorder(public_key=f"pk-lf-{uuid.uuid4().hex}") as rec:
        client = Langfuse(public_key=rec.public_key, secret_key=rec.secret_key,
                          base_url=rec.base_url, tracer_provider=TracerProvider())
        with client.start_as_current_observation(name="turn"):
            ...
        client.flush()
        assert rec.root(rec.trace_ids()[0]).name == "turn"
"""

from __future__ import annotations

import base64
import binascii
import gzip
import itertools
import json
import math
import sys
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = [
    "LangfuseRecorder",
    "Mode",
    "RecordedRequest",
    "RecordedSpan",
    "RunItem",
]

LOOPBACK = "127.0.0.1"
PUBLIC_API = "/api/public"
OTLP_TRACES_PATH = f"{PUBLIC_API}/otel/v1/traces"
SERVER_VERSION = "3.0.0-recorder"
POLL_INTERVAL_S = 0.05
"""How often the accept loop checks for `close`; bounds how long closing takes."""

Mode = Literal["ok", "error", "hang"]
Json = dict[str, Any]

# Span attribute names the SDK writes (langfuse/_client/attributes.py); they are the wire format.
OBSERVATION_TYPE = "langfuse.observation.type"
OBSERVATION_INPUT = "langfuse.observation.input"
OBSERVATION_OUTPUT = "langfuse.observation.output"
OBSERVATION_METADATA = "langfuse.observation.metadata"
OBSERVATION_LEVEL = "langfuse.observation.level"
OBSERVATION_MODEL = "langfuse.observation.model.name"
OBSERVATION_USAGE_DETAILS = "langfuse.observation.usage_details"
OBSERVATION_PROMPT_NAME = "langfuse.observation.prompt.name"
OBSERVATION_PROMPT_VERSION = "langfuse.observation.prompt.version"
AS_ROOT = "langfuse.internal.as_root"
EXPERIMENT_ID = "langfuse.experiment.id"
EXPERIMENT_NAME = "langfuse.experiment.name"
EXPERIMENT_DATASET_ID = "langfuse.experiment.dataset.id"
EXPERIMENT_ITEM_ID = "langfuse.experiment.item.id"
EXPERIMENT_ITEM_ROOT_OBSERVATION_ID = "langfuse.experiment.item.root_observation_id"


def _json_value(raw: Any) -> Any:
    """A string attribute as JSON when it parses, else as the text it is.

    The SDK sends a string input or output as it is and anything else JSON-encoded, so the two
    cannot be told apart: the string ``"42"`` comes back as the number 42.
    """
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@dataclass(frozen=True)
class RecordedSpan:
    """One span as the OTLP export carried it; ids are lowercase hex, times Unix nanoseconds.

    Attribute values are decoded from OTLP's AnyValue (arrays become lists); the Langfuse ones
    the SDK JSON-encodes stay strings here and are decoded by the properties below.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(hash=False)
    resource: dict[str, Any] = field(hash=False)
    scope: str
    status_code: int

    @property
    def observation_type(self) -> str | None:
        """The Langfuse type ("span", "generation", "retriever", ...); None on foreign spans."""
        value = self.attributes.get(OBSERVATION_TYPE)
        return value if isinstance(value, str) else None

    @property
    def input(self) -> Any:
        return _json_value(self.attributes.get(OBSERVATION_INPUT))

    @property
    def output(self) -> Any:
        return _json_value(self.attributes.get(OBSERVATION_OUTPUT))

    @property
    def metadata(self) -> Any:
        """The observation metadata: a dict of the per-key attributes the SDK flattens a dict
        into (each value JSON-decoded), or the value itself when it was not a dict."""
        if OBSERVATION_METADATA in self.attributes:
            return _json_value(self.attributes[OBSERVATION_METADATA])
        prefix = OBSERVATION_METADATA + "."
        return {
            key.removeprefix(prefix): _json_value(value)
            for key, value in self.attributes.items()
            if key.startswith(prefix)
        }

    @property
    def level(self) -> str | None:
        value = self.attributes.get(OBSERVATION_LEVEL)
        return value if isinstance(value, str) else None

    @property
    def model(self) -> str | None:
        value = self.attributes.get(OBSERVATION_MODEL)
        return value if isinstance(value, str) else None

    @property
    def usage_details(self) -> dict[str, int]:
        value = _json_value(self.attributes.get(OBSERVATION_USAGE_DETAILS))
        return dict(value) if isinstance(value, dict) else {}

    @property
    def prompt_name(self) -> str | None:
        """The linked prompt; the SDK sets it on generations given a non-fallback prompt."""
        value = self.attributes.get(OBSERVATION_PROMPT_NAME)
        return value if isinstance(value, str) else None

    @property
    def prompt_version(self) -> int | None:
        value = self.attributes.get(OBSERVATION_PROMPT_VERSION)
        return value if isinstance(value, int) else None

    @property
    def is_root(self) -> bool:
        """No parent, or the SDK marked it root: a span started with a `trace_context` has a
        parent id (the caller's, or a random one) that never arrives, and carries
        ``langfuse.internal.as_root``."""
        return self.parent_span_id is None or self.attributes.get(AS_ROOT) is True


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived and how it was answered.

    `body` is the payload after undoing its Content-Encoding; `text` is what it says as text:
    the body itself for JSON, and every string of the decoded spans (names, attribute keys and
    values, resource and scope) for OTLP protobuf, so a secret in any of them shows up as is.
    Header names are lowercase.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str] = field(hash=False)
    body: bytes
    text: str
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class RunItem:
    """One dataset item (or local item) run in an experiment, linked to the trace it ran in.

    `item_id` is the dataset item id when the item came from a dataset; for local data the SDK
    uses a hash of the input. `run_name` is what Langfuse shows as the experiment name.
    """

    run_name: str
    experiment_id: str
    dataset_id: str | None
    item_id: str
    trace_id: str
    root_observation_id: str | None


class _Request(NamedTuple):
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    spans: list[RecordedSpan] | None
    """The decoded OTLP export, for the traces endpoint when the body parses."""


class _Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str = "application/json"


def _json_reply(status: int, payload: Any) -> _Reply:
    return _Reply(status, json.dumps(payload, default=str).encode())


def _error(status: int, error: str, message: str) -> _Reply:
    """Langfuse's error body: the error class name and what went wrong."""
    return _json_reply(status, {"error": error, "message": message})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _any_value(value: AnyValue) -> Any:
    match value.WhichOneof("value"):
        case "string_value":
            return value.string_value
        case "bool_value":
            return value.bool_value
        case "int_value":
            return value.int_value
        case "double_value":
            return value.double_value
        case "bytes_value":
            return value.bytes_value
        case "array_value":
            return [_any_value(item) for item in value.array_value.values]
        case "kvlist_value":
            return _attributes(value.kvlist_value.values)
        case _:
            return None


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _any_value(pair.value) for pair in pairs}


def _decode_spans(body: bytes) -> list[RecordedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[RecordedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    RecordedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        resource=dict(resource),
                        scope=scope_spans.scope.name,
                        status_code=span.status.code,
                    )
                )
    return spans


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif value is not None:
        yield str(value)


def _spans_text(spans: Sequence[RecordedSpan]) -> str:
    return "\n".join(
        text
        for span in spans
        for text in itertools.chain(
            [span.name, span.scope], _strings(span.attributes), _strings(span.resource)
        )
    )


def _undo_content_encoding(body: bytes, encoding: str | None) -> bytes:
    match (encoding or "identity").strip().lower():
        case "gzip" | "x-gzip":
            return gzip.decompress(body)
        case "deflate":
            return zlib.decompress(body)
        case "identity" | "":
            return body
        case other:
            raise ValueError(f"unsupported Content-Encoding {other!r}")


def _basic_auth_keys(header: str) -> tuple[str, str] | None:
    """The (public, secret) pair of a Basic Authorization header, or None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        public, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return public, secret


def _str_param(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _int_param(query: Mapping[str, list[str]], name: str) -> int | None:
    value = _str_param(query, name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _page(query: Mapping[str, list[str]], rows: Sequence[Json]) -> Json:
    """Langfuse's page-numbered listing (``page`` from 1, ``limit`` 50 by default)."""
    page = max(_int_param(query, "page") or 1, 1)
    limit = max(_int_param(query, "limit") or 50, 1)
    start = (page - 1) * limit
    return {
        "data": list(rows[start : start + limit]),
        "meta": {
            "page": page,
            "limit": limit,
            "totalItems": len(rows),
            "totalPages": math.ceil(len(rows) / limit),
        },
    }


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets the recorder answer it, writes the answer; one thread per request.

    HTTP/1.0: every connection closes after its reply, so no idle keep-alive thread outlives
    `close`.
    """

    protocol_version = "HTTP/1.0"
    timeout = 30

    def do_GET(self) -> None:
        self._exchange()

    def do_POST(self) -> None:
        self._exchange()

    def do_PATCH(self) -> None:
        self._exchange()

    def do_PUT(self) -> None:
        self._exchange()

    def do_DELETE(self) -> None:
        self._exchange()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _exchange(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = server.recorder._handle(self.command, self.path, headers, self._read_body())
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a failing test shows its own assertion, not an access log."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], recorder: LangfuseRecorder) -> None:
        self.recorder = recorder
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-reply (a timed-out SDK call) is not the recorder's error;
        anything else is, and is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LangfuseRecorder:
    """The Langfuse API stand-in, served on a loopback port by a background thread.

    Everything is guarded by one condition, notified on every answered request and mode change,
    so reads are safe from any thread and `wait_for` wakes exactly when something arrives.

    Give each test its own `public_key`: the SDK keeps one client state per public key for the
    whole process, so a second `Langfuse(...)` with the same key reuses the first one's base
    URL, secret and exporter.
    """

    def __init__(
        self,
        public_key: str = "pk-lf-test",
        secret_key: str = "sk-lf-test",
        project_id: str = "proj-test",
        *,
        host: str = LOOPBACK,
        port: int = 0,
    ) -> None:
        self.public_key = public_key
        self.secret_key = secret_key
        self.project_id = project_id
        self._host, self._port = host, port
        self._cond = threading.Condition(threading.RLock())
        self._mode: Mode = "ok"
        self._closing = False
        self._held = 0
        self._requests: list[RecordedRequest] = []
        self._spans: list[RecordedSpan] = []
        self._trace_ids: dict[str, None] = {}
        self._scores: list[Json] = []
        self._prompts: dict[str, dict[int, Json]] = {}
        self._prompt_fetches: Counter[str] = Counter()
        self._datasets: dict[str, Json] = {}
        self._items: dict[str, Json] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> LangfuseRecorder:
        """Listen at once (clients that connect early wait in the backlog), serve in a thread."""
        if self._server is not None:
            return self
        with self._cond:
            self._closing = False
        server = _Server((self._host, self._port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_S},
            name="langfuse-recorder",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Release every held request (answered 500), stop serving, free the port. Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> LangfuseRecorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("The Langfuse recorder is not running: call start() first.")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What `Langfuse(base_url=...)` takes: no trailing slash, no /api."""
        return f"http://{self._host}:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment a `Langfuse()` built from the environment needs to reach this."""
        return {
            "LANGFUSE_PUBLIC_KEY": self.public_key,
            "LANGFUSE_SECRET_KEY": self.secret_key,
            "LANGFUSE_BASE_URL": self.base_url,
        }

    @property
    def mode(self) -> Mode:
        with self._cond:
            return self._mode

    @mode.setter
    def mode(self, value: Mode) -> None:
        if value not in ("ok", "error", "hang"):
            raise ValueError(f"mode must be 'ok', 'error' or 'hang', not {value!r}")
        with self._cond:
            self._mode = value
            self._cond.notify_all()

    @property
    def held_requests(self) -> int:
        """Requests waiting for their reply in "hang" mode right now."""
        with self._cond:
            return self._held

    # what was sent

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every answered request in order, refused ones included."""
        with self._cond:
            return list(self._requests)

    def all_sent_text(self) -> str:
        """Everything the SDK sent, as text, for leak scans: request lines, headers except
        Authorization (which carries the keys by design), and each body's `text`."""
        with self._cond:
            parts: list[str] = []
            for request in self._requests:
                parts.append(f"{request.method} {request.path}?{request.query}")
                parts.extend(
                    f"{name}: {value}"
                    for name, value in request.headers.items()
                    if name != "authorization"
                )
                parts.append(request.text)
            return "\n".join(parts)

    def spans(self, trace_id: str | None = None) -> list[RecordedSpan]:
        """Stored spans (of one trace, or all) in the order they started."""
        with self._cond:
            spans = [s for s in self._spans if trace_id is None or s.trace_id == trace_id]
        return sorted(spans, key=lambda s: s.start_ns)

    def span(self, name: str, trace_id: str | None = None) -> RecordedSpan:
        """The one span with this name; an error when there is none or more than one."""
        found = [s for s in self.spans(trace_id) if s.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one span named {name!r}, found {len(found)}")
        return found[0]

    def trace_ids(self) -> list[str]:
        """Trace ids in the order their first span arrived."""
        with self._cond:
            return list(self._trace_ids)

    def children(self, span: RecordedSpan) -> list[RecordedSpan]:
        return [s for s in self.spans(span.trace_id) if s.parent_span_id == span.span_id]

    def root(self, trace_id: str) -> RecordedSpan:
        """The trace's root: marked as root by the SDK, or without a parent in the trace."""
        spans = self.spans(trace_id)
        ids = {s.span_id for s in spans}
        roots = [s for s in spans if s.is_root or s.parent_span_id not in ids]
        if not roots:
            raise LookupError(f"no span of trace {trace_id!r} has arrived")
        marked = [s for s in roots if s.attributes.get(AS_ROOT) is True]
        return (marked or roots)[0]

    def scores(self, trace_id: str | None = None) -> list[Json]:
        """Stored scores as the SDK sent them (camelCase keys: traceId, observationId, ...)."""
        with self._cond:
            return [
                dict(s) for s in self._scores if trace_id is None or s.get("traceId") == trace_id
            ]

    @property
    def prompt_fetches(self) -> dict[str, int]:
        """GETs per prompt name, misses included; the SDK's cache makes repeats rare."""
        with self._cond:
            return dict(self._prompt_fetches)

    def datasets(self) -> list[Json]:
        with self._cond:
            return [dict(d) for d in self._datasets.values()]

    def dataset_items(self, dataset_name: str) -> list[Json]:
        """A dataset's items in the order they were first created."""
        with self._cond:
            return [dict(i) for i in self._items.values() if i["datasetName"] == dataset_name]

    def run_items(self, run_name: str | None = None) -> list[RunItem]:
        """Experiment items derived from the spans, as Langfuse derives them: one per
        (experiment, item, trace), from the ``langfuse.experiment.*`` attributes that
        `run_experiment` puts on the spans of each item's trace."""
        seen: dict[tuple[str, str, str], RunItem] = {}
        for span in self.spans():
            experiment_id = span.attributes.get(EXPERIMENT_ID)
            item_id = span.attributes.get(EXPERIMENT_ITEM_ID)
            if not isinstance(experiment_id, str) or not isinstance(item_id, str):
                continue
            key = (experiment_id, item_id, span.trace_id)
            if key in seen:
                continue
            dataset_id = span.attributes.get(EXPERIMENT_DATASET_ID)
            root_id = span.attributes.get(EXPERIMENT_ITEM_ROOT_OBSERVATION_ID)
            seen[key] = RunItem(
                run_name=str(span.attributes.get(EXPERIMENT_NAME, "")),
                experiment_id=experiment_id,
                dataset_id=dataset_id if isinstance(dataset_id, str) else None,
                item_id=item_id,
                trace_id=span.trace_id,
                root_observation_id=root_id if isinstance(root_id, str) else None,
            )
        return [item for item in seen.values() if run_name is None or item.run_name == run_name]

    def wait_for(
        self, predicate: Callable[[LangfuseRecorder], bool], timeout: float = 10.0
    ) -> bool:
        """Block until `predicate(self)` holds, re-checked on every request and mode change;
        False if `timeout` seconds pass first."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    # what the server holds

    def add_prompt(
        self,
        name: str,
        text: str,
        *,
        version: int = 1,
        labels: Sequence[str] = ("production",),
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Store a text prompt version; its labels move off any other version, as in Langfuse."""
        with self._cond:
            self._store_prompt(
                {
                    "type": "text",
                    "prompt": text,
                    "name": name,
                    "version": version,
                    "config": dict(config or {}),
                    "labels": list(labels),
                    "tags": [],
                    "commitMessage": None,
                }
            )

    def _store_prompt(self, prompt: Json) -> None:
        versions = self._prompts.setdefault(prompt["name"], {})
        for other in versions.values():
            other["labels"] = [label for label in other["labels"] if label not in prompt["labels"]]
        versions[prompt["version"]] = prompt

    def _prompt_json(self, prompt: Json) -> Json:
        """A version as the API returns it; "latest" labels the newest version, as in Langfuse."""
        newest = max(self._prompts[prompt["name"]])
        labels = [label for label in prompt["labels"] if label != "latest"]
        if prompt["version"] == newest:
            labels.append("latest")
        return {**prompt, "labels": labels, "resolutionGraph": None}

    # request handling

    def _handle(self, method: str, target: str, headers: dict[str, str], raw_body: bytes) -> _Reply:
        """Answer one request and record it, whatever the answer."""
        split = urlsplit(target)
        spans: list[RecordedSpan] | None = None
        try:
            body = _undo_content_encoding(raw_body, headers.get("content-encoding"))
        except (OSError, EOFError, ValueError, zlib.error) as error:
            body, reply = raw_body, _error(400, "BadRequest", f"Cannot decode the body: {error}")
        else:
            if split.path == OTLP_TRACES_PATH:
                try:
                    spans = _decode_spans(body)
                except DecodeError:
                    spans = None
            request = _Request(method, split.path, parse_qs(split.query), headers, body, spans)
            reply = self._answer(request)
        text = _spans_text(spans) if spans is not None else body.decode("utf-8", "replace")
        with self._cond:
            self._requests.append(
                RecordedRequest(method, split.path, split.query, headers, body, text, reply.status)
            )
            self._cond.notify_all()
        return reply

    def _answer(self, request: _Request) -> _Reply:
        path = request.path
        if path != PUBLIC_API and not path.startswith(PUBLIC_API + "/"):
            return _error(404, "NotFoundError", f"No route {path}")
        with self._cond:
            if self._mode == "hang" and not self._closing:
                self._held += 1
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._mode != "hang" or self._closing)
                self._held -= 1
            mode, closing = self._mode, self._closing
        if closing:
            return _error(500, "InternalServerError", "The Langfuse recorder closed.")
        if mode == "error":
            return _error(500, "InternalServerError", "The Langfuse recorder is in error mode.")
        keys = _basic_auth_keys(request.headers.get("authorization", ""))
        if keys != (self.public_key, self.secret_key):
            return _error(
                401, "UnauthorizedError", "Invalid credentials: check the public and secret key."
            )
        segments = [unquote(part) for part in path[len(PUBLIC_API) + 1 :].split("/")]
        try:
            return self._route(request, segments)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            return _error(400, "InvalidRequestError", f"Malformed request: {error!r}")

    def _route(self, request: _Request, segments: list[str]) -> _Reply:
        query, body = request.query, request.body
        match (request.method, segments):
            case ("POST", ["otel", "v1", "traces"]):
                return self._ingest_spans(request.spans)
            case ("POST", ["scores"]):
                return self._ingest_scores(json.loads(body))
            case ("GET", ["health"]):
                return _json_reply(200, {"status": "OK", "version": SERVER_VERSION})
            case ("GET", ["projects"]):
                return _json_reply(200, {"data": [self._project()]})
            case ("GET", ["v2", "prompts", name]):
                return self._get_prompt(name, query)
            case ("POST", ["v2", "prompts"]):
                return self._create_prompt(json.loads(body))
            case ("PATCH", ["v2", "prompts", name, "versions", version]):
                return self._label_prompt(name, int(version), json.loads(body))
            case ("GET", ["v2", "datasets"]):
                with self._cond:
                    return _json_reply(200, _page(query, list(self._datasets.values())))
            case ("POST", ["v2", "datasets"]):
                return self._create_dataset(json.loads(body))
            case ("GET", ["v2", "datasets", name]):
                with self._cond:
                    dataset = self._datasets.get(name)
                if dataset is None:
                    return _error(404, "LangfuseNotFoundError", f"Dataset {name!r} not found")
                return _json_reply(200, dataset)
            case ("GET", ["dataset-items"]):
                return self._list_items(query)
            case ("POST", ["dataset-items"]):
                return self._upsert_item(json.loads(body))
            case ("GET", ["dataset-items", item_id]):
                with self._cond:
                    item = self._items.get(item_id)
                if item is None:
                    return _error(
                        404, "LangfuseNotFoundError", f"Dataset item {item_id!r} not found"
                    )
                return _json_reply(200, item)
            case ("DELETE", ["dataset-items", item_id]):
                with self._cond:
                    deleted = self._items.pop(item_id, None)
                if deleted is None:
                    return _error(
                        404, "LangfuseNotFoundError", f"Dataset item {item_id!r} not found"
                    )
                return _json_reply(200, {"message": "Dataset item successfully deleted"})
            case _:
                return _error(404, "NotFoundError", f"No route {request.method} {request.path}")

    def _project(self) -> Json:
        return {
            "id": self.project_id,
            "name": "agentrag-recorder",
            "organization": {"id": "org-recorder", "name": "agentrag"},
            "metadata": {},
        }

    def _ingest_spans(self, spans: list[RecordedSpan] | None) -> _Reply:
        if spans is None:
            return _error(400, "InvalidRequestError", "The body is not an OTLP protobuf export.")
        with self._cond:
            for span in spans:
                self._spans.append(span)
                self._trace_ids.setdefault(span.trace_id)
        return _Reply(
            200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
        )

    def _ingest_scores(self, payload: Any) -> _Reply:
        """v5 sends a list and expects 202 "Accepted"; one object is the older single-score
        call, answered with the score's id."""
        scores = payload if isinstance(payload, list) else [payload]
        if not all(isinstance(score, dict) and "name" in score for score in scores):
            return _error(400, "InvalidRequestError", "Every score needs at least a name.")
        stored = [{"id": score.get("id") or uuid.uuid4().hex, **score} for score in scores]
        with self._cond:
            self._scores.extend(stored)
        if isinstance(payload, list):
            return _json_reply(202, {"message": "Accepted"})
        return _json_reply(200, {"id": stored[0]["id"]})

    def _get_prompt(self, name: str, query: dict[str, list[str]]) -> _Reply:
        version = _int_param(query, "version")
        label = _str_param(query, "label")
        with self._cond:
            self._prompt_fetches[name] += 1
            versions = self._prompts.get(name, {})
            prompt: Json | None
            if version is not None:
                prompt = versions.get(version)
            elif label == "latest":
                prompt = versions[max(versions)] if versions else None
            else:
                wanted = label or "production"
                prompt = next((p for p in versions.values() if wanted in p["labels"]), None)
            if prompt is None:
                return _error(404, "LangfuseNotFoundError", f"Prompt not found: {name!r}")
            return _json_reply(200, self._prompt_json(prompt))

    def _create_prompt(self, payload: Json) -> _Reply:
        """A new version after the newest one, as the real server numbers them."""
        name, text = payload["name"], payload["prompt"]
        prompt_type = payload.get("type") or ("chat" if isinstance(text, list) else "text")
        with self._cond:
            version = max(self._prompts.get(name, {0: {}})) + 1
            prompt = {
                "type": prompt_type,
                "prompt": text,
                "name": name,
                "version": version,
                "config": payload.get("config") or {},
                "labels": list(payload.get("labels") or []),
                "tags": list(payload.get("tags") or []),
                "commitMessage": payload.get("commitMessage"),
            }
            self._store_prompt(prompt)
            return _json_reply(201, self._prompt_json(prompt))

    def _label_prompt(self, name: str, version: int, payload: Json) -> _Reply:
        with self._cond:
            prompt = self._prompts.get(name, {}).get(version)
            if prompt is None:
                return _error(404, "LangfuseNotFoundError", f"Prompt not found: {name!r}")
            new_labels = [label for label in payload["newLabels"] if label not in prompt["labels"]]
            self._store_prompt({**prompt, "labels": prompt["labels"] + new_labels})
            return _json_reply(200, self._prompt_json(self._prompts[name][version]))

    def _create_dataset(self, payload: Json) -> _Reply:
        """Upsert by name, as Langfuse does: creating a dataset again updates it."""
        name = payload["name"]
        now = _now()
        with self._cond:
            existing = self._datasets.get(name)
            dataset = {
                "id": existing["id"] if existing else uuid.uuid4().hex,
                "name": name,
                "description": payload.get("description"),
                "metadata": payload.get("metadata"),
                "inputSchema": payload.get("inputSchema"),
                "expectedOutputSchema": payload.get("expectedOutputSchema"),
                "projectId": self.project_id,
                "createdAt": existing["createdAt"] if existing else now,
                "updatedAt": now,
            }
            self._datasets[name] = dataset
            return _json_reply(200, dataset)

    def _upsert_item(self, payload: Json) -> _Reply:
        """Create an item, or update the one with the same id (ids are global, as in Langfuse)."""
        dataset_name = payload["datasetName"]
        item_id = payload.get("id") or str(uuid.uuid4())
        now = _now()
        with self._cond:
            dataset = self._datasets.get(dataset_name)
            if dataset is None:
                return _error(404, "LangfuseNotFoundError", f"Dataset {dataset_name!r} not found")
            existing = self._items.get(item_id)
            if existing is not None and existing["datasetId"] != dataset["id"]:
                return _error(
                    400,
                    "InvalidRequestError",
                    f"Dataset item id {item_id!r} belongs to another dataset; ids are global.",
                )
            item = {
                "id": item_id,
                "status": payload.get("status") or "ACTIVE",
                "input": payload.get("input"),
                "expectedOutput": payload.get("expectedOutput"),
                "metadata": payload.get("metadata"),
                "sourceTraceId": payload.get("sourceTraceId"),
                "sourceObservationId": payload.get("sourceObservationId"),
                "datasetId": dataset["id"],
                "datasetName": dataset_name,
                "createdAt": existing["createdAt"] if existing else now,
                "updatedAt": now,
                "version": now,
                "mediaReferences": [],
            }
            self._items[item_id] = item
            return _json_reply(200, item)

    def _list_items(self, query: dict[str, list[str]]) -> _Reply:
        """Items in creation order; a `version` query is accepted and the latest items served."""
        dataset_name = _str_param(query, "datasetName")
        with self._cond:
            if dataset_name is not None and dataset_name not in self._datasets:
                return _error(404, "LangfuseNotFoundError", f"Dataset {dataset_name!r} not found")
            rows = [
                item
                for item in self._items.values()
                if dataset_name is None or item["datasetName"] == dataset_name
            ]
            return _json_reply(200, _page(query, rows))
