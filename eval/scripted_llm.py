"""A scripted LLM: a real OpenAI-compatible HTTP endpoint, or the same in-process, no model.

Benchmarks and tests of the request path (the chat API under load, cancellation, streaming)
need an LLM that answers over HTTP exactly like vLLM or OpenAI do, but instantly, cheaply and
predictably, so what they measure is agentrag and not the model. This server speaks the
`/v1/chat/completions` protocol (plain JSON, or SSE `chat.completion.chunk`s ending in
`data: [DONE]`, with the usage chunk when `stream_options.include_usage` is set) and
`/v1/models`, and counts requests at `/stats` so a test can check that no LLM call is made
after a run is cancelled.

The default reply reads like a grounded answer: when the system prompt fences numbered evidence
(`<evidence>` ... `[1] title` ... `</evidence>`, as agentrag's answer prompts do), it quotes the
first sentence of evidence [1] and cites it, so reflection accepts it and a turn costs the one
LLM call a real turn costs; otherwise it echoes the opening words of the last user message and
cites [1]. Token counts are whitespace words, not a real tokenizer's.

Served in-process (tests)::

    with ScriptedLLM(reply="Paris [1].", token_delay_s=0.001) as llm:
        ChatOpenAI(base_url=llm.base_url, api_key="x", model="scripted").invoke("hi")

As a LangChain chat model, no HTTP (graph tests and benchmarks)::

    ScriptedChatModel(replies=["Paris [1]."], repeat=True)

As a process (benchmarks)::

    python -m eval.scripted_llm --port 8001 --token-delay-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Literal

import uvicorn
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent.text import message_text, split_sentences

__all__ = [
    "DEFAULT_MODEL",
    "Fault",
    "LLMStats",
    "Reply",
    "Script",
    "ScriptedChatModel",
    "ScriptedLLM",
    "create_app",
    "evidence_reply",
    "split_tokens",
]

DEFAULT_MODEL = "scripted"
LOOPBACK = "127.0.0.1"

Message = dict[str, Any]
Reply = str | Callable[[Sequence[Message]], str]
"""A fixed reply, or a function of the request's messages (OpenAI dicts) returning one."""

_EVIDENCE = re.compile(r"<evidence>\s*(.*?)\s*</evidence>", re.DOTALL)
_FIRST_BLOCK = re.compile(r"^\[1\][^\n]*\n(.+?)(?:\n\s*\n\[\d+\]|\Z)", re.DOTALL)
_TOKEN = re.compile(r"\s*\S+")
ECHO_WORDS = 12
QUOTE_WORDS = 40


def evidence_reply(messages: Sequence[Message]) -> str:
    """Quote evidence [1] when the prompt fences evidence, else echo the user; cite [1] anyway."""
    for message in messages:
        if message.get("role") not in ("system", "developer"):
            continue
        fenced = _EVIDENCE.search(message_text(message))
        block = _FIRST_BLOCK.match(fenced.group(1)) if fenced else None
        if block:
            text = " ".join(block.group(1).split())
            sentence = (split_sentences(text) or [text])[0]
            words = sentence.split()[:QUOTE_WORDS]
            return f"According to the documents, {' '.join(words).rstrip('.!?')} [1]."
    users = [m for m in messages if m.get("role") == "user"]
    words = message_text(users[-1]).split()[:ECHO_WORDS] if users else []
    return f"According to the documents, {' '.join(words).rstrip('.!?')} [1]."


def split_tokens(text: str) -> list[str]:
    """Word-sized stream deltas, each with its leading whitespace, as BPE tokens come."""
    return _TOKEN.findall(text)


@dataclass
class LLMStats:
    """Counters of chat completion requests; read them at `GET /stats` or `ScriptedLLM.stats`.

    `disconnected` counts streams the client closed before the last chunk, which is what a
    cancelled agent run does to its in-flight LLM call.
    """

    requests_total: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    completed: int = 0
    disconnected: int = 0
    streamed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    faults: int = 0


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        },
        status_code=status,
    )


def _prompt_tokens(messages: Sequence[Message]) -> int:
    return sum(len(message_text(m).split()) + 3 for m in messages)


Fault = Literal["error", "garbage", "hang", "stall", "truncate"]
"""How the server misbehaves, for fault tests: `error` answers `fault_status` with an OpenAI
error body; `garbage` answers 200 with a body that is not the protocol (plain JSON requests get
HTML, streams get SSE lines that are not JSON); `hang` never answers; `stall` streams the start
of the answer and then nothing; `truncate` streams half the answer and closes without a finish
reason or `[DONE]`. A plain (not streamed) request to `stall` or `truncate` hangs or is cut."""

STALL_S = 3600.0
"""How long `hang` and `stall` wait: until the client gives up or the server stops."""


@dataclass
class Script:
    """What the server answers; read on every request, so changing it takes effect at once.

    `fault` makes the next `faults` requests (all of them when None) misbehave; each faulty
    request lowers `faults` by one."""

    reply: Reply = evidence_reply
    token_delay_s: float = 0.0
    fault: Fault | None = None
    fault_status: int = 500
    faults: int | None = None

    def text_for(self, messages: Sequence[Message]) -> str:
        return self.reply(messages) if callable(self.reply) else self.reply

    def take_fault(self) -> Fault | None:
        if self.fault is None or self.faults == 0:
            return None
        if self.faults is not None:
            self.faults -= 1
        return self.fault


def create_app(
    script: Script | None = None,
    *,
    model: str = DEFAULT_MODEL,
    stats: LLMStats | None = None,
) -> Starlette:
    """The ASGI app answering from `script`, counting into `stats`."""
    script = script if script is not None else Script()
    counters = stats if stats is not None else LLMStats()
    ids = itertools.count(1)

    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty list of messages.")
        if not all(isinstance(m, dict) for m in messages):
            return _error(400, "Every message must be an object with a role and content.")

        text = script.text_for(messages)
        fault = script.take_fault()
        counters.requests_total += 1
        if fault == "error":
            counters.faults += 1
            return _error(script.fault_status, "Scripted failure.")
        if fault == "garbage" and not body.get("stream"):
            counters.faults += 1
            return Response("<html>502 Bad Gateway</html>", media_type="application/json")
        if fault == "hang" or (fault in ("stall", "truncate") and not body.get("stream")):
            counters.faults += 1
            await asyncio.sleep(STALL_S)
        counters.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        tokens = split_tokens(text)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish_reason = "stop"
        if isinstance(limit, int) and 0 < limit < len(tokens):
            tokens, finish_reason = tokens[:limit], "length"
        usage = {
            "prompt_tokens": _prompt_tokens(messages),
            "completion_tokens": len(tokens),
            "total_tokens": _prompt_tokens(messages) + len(tokens),
        }
        completion_id = f"chatcmpl-scripted-{next(ids)}"
        created = int(time.time())
        name = str(body.get("model") or model)

        if not body.get("stream"):
            try:
                if script.token_delay_s > 0:
                    await asyncio.sleep(script.token_delay_s * len(tokens))
            except asyncio.CancelledError:
                counters.in_flight -= 1
                counters.disconnected += 1
                raise
            counters.in_flight -= 1
            counters.completed += 1
            counters.prompt_tokens += usage["prompt_tokens"]
            counters.completion_tokens += usage["completion_tokens"]
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": name,
                    "system_fingerprint": None,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "".join(tokens),
                                "refusal": None,
                            },
                            "logprobs": None,
                            "finish_reason": finish_reason,
                        }
                    ],
                    "usage": usage,
                }
            )

        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            payload: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                payload["usage"] = None
            return f"data: {json.dumps(payload)}\n\n"

        async def faulty_events() -> AsyncIterator[str]:
            counters.faults += 1
            try:
                yield chunk({"role": "assistant", "content": ""})
                if fault == "garbage":
                    yield "data: {this is not json\n\n"
                    yield "data: [DONE]\n\n"
                    return
                half = tokens[: max(1, len(tokens) // 2)]
                for token in half if fault == "truncate" else half[:1]:
                    yield chunk({"content": token})
                if fault == "stall":
                    await asyncio.sleep(STALL_S)
            finally:
                counters.in_flight -= 1
                counters.streamed += 1
                counters.disconnected += 1

        async def events() -> AsyncIterator[str]:
            finished = False
            try:
                yield chunk({"role": "assistant", "content": ""})
                for token in tokens:
                    if script.token_delay_s > 0:
                        await asyncio.sleep(script.token_delay_s)
                    yield chunk({"content": token})
                yield chunk({}, finish_reason)
                if include_usage:
                    last = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": name,
                        "system_fingerprint": None,
                        "choices": [],
                        "usage": usage,
                    }
                    yield f"data: {json.dumps(last)}\n\n"
                yield "data: [DONE]\n\n"
                finished = True
            finally:
                counters.in_flight -= 1
                counters.streamed += 1
                if finished:
                    counters.completed += 1
                    counters.prompt_tokens += usage["prompt_tokens"]
                    counters.completion_tokens += usage["completion_tokens"]
                else:
                    counters.disconnected += 1

        return StreamingResponse(
            faulty_events() if fault is not None else events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def list_models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": model, "object": "model", "created": 0, "owned_by": "agentrag"}],
            }
        )

    async def read_stats(request: Request) -> Response:
        return JSONResponse(asdict(counters))

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/stats", read_stats, methods=["GET"]),
        ]
    )


ModelReply = str | AIMessage | Callable[[list[BaseMessage]], str]
"""A fixed text, a message (with tool calls, for structured output), or a function of the
conversation returning the text."""


class ScriptedChatModel(BaseChatModel):
    """The scripted LLM as a LangChain chat model: each call answers with the next of
    `replies` (the last one again and again when `repeat`), streamed a word at a time, every
    `token_delay_s`. Like the bundled model when streaming, it reports no token usage, so the
    agent counts tokens itself. `seen` keeps every conversation it was sent; `calls` counts
    them."""

    replies: list[Any] = Field(default_factory=list)
    repeat: bool = False
    token_delay_s: float = 0.0
    calls: int = 0
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, Any]:
        """Tools are accepted and ignored: a scripted reply carries its own tool calls."""
        return self.bind(**{k: v for k, v in kwargs.items() if k != "ls_structured_output_format"})

    def _next(self, messages: list[BaseMessage]) -> AIMessage:
        if not self.replies:
            raise RuntimeError("the scripted model has no reply left for this call")
        self.calls += 1
        self.seen.append(messages)
        reply = self.replies.pop(0)
        if self.repeat:
            self.replies.append(reply)
        if isinstance(reply, AIMessage):
            return reply
        return AIMessage(reply(messages) if callable(reply) else reply)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(messages))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._next(messages)
        if message.tool_calls:
            calls = [
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": n}
                for n, c in enumerate(message.tool_calls)
            ]
            chunk = AIMessageChunk(content=message.content, tool_call_chunks=calls)  # type: ignore[arg-type]
            yield ChatGenerationChunk(message=chunk)
            return
        for token in split_tokens(str(message.content)):
            yield ChatGenerationChunk(message=AIMessageChunk(content=token))
        # the last chunk says why the reply ended, as an OpenAI-compatible stream's does
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata={"finish_reason": "stop"})
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._stream(messages, stop, **kwargs):
            if self.token_delay_s:
                await asyncio.sleep(self.token_delay_s)
            yield chunk


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), handed to uvicorn so the port is known up front.

    It listens before uvicorn starts, so a client that connects early waits in the backlog
    instead of being refused.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


class ScriptedLLM:
    """The scripted server on a loopback port, run by uvicorn in a background thread.

    `reply` and `token_delay_s` may be reassigned while it runs; the next request uses them.
    """

    def __init__(
        self,
        reply: Reply = evidence_reply,
        token_delay_s: float = 0.0,
        *,
        model: str = DEFAULT_MODEL,
        host: str = LOOPBACK,
        port: int = 0,
    ) -> None:
        self.script = Script(reply, token_delay_s)
        self.model = model
        self.stats = LLMStats()
        self._host, self._port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def reply(self) -> Reply:
        return self.script.reply

    @reply.setter
    def reply(self, value: Reply) -> None:
        self.script.reply = value

    @property
    def token_delay_s(self) -> float:
        return self.script.token_delay_s

    @token_delay_s.setter
    def token_delay_s(self, value: float) -> None:
        self.script.token_delay_s = value

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("The scripted LLM is not running: call start() first.")
        return int(self._sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ending in /v1."""
        return f"http://{self._host}:{self.port}/v1"

    def start(self, timeout_s: float = 10.0) -> ScriptedLLM:
        if self._thread is not None:
            return self
        app = create_app(self.script, model=self.model, stats=self.stats)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._sock = _bind(self._host, self._port)
        sock = self._sock
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="scripted-llm", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("The scripted LLM server did not start.")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> ScriptedLLM:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m eval.scripted_llm",
        description="Serve scripted chat completions on an OpenAI-compatible endpoint.",
    )
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="pause before each token")
    parser.add_argument("--reply", default=None, help="fixed reply (default: quote evidence [1])")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="name listed at /v1/models")
    args = parser.parse_args(argv)

    script = Script(token_delay_s=args.token_delay_ms / 1000.0)
    if args.reply is not None:
        script.reply = args.reply
    app = create_app(script, model=args.model)
    sock = _bind(args.host, args.port)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    # the bound port is printed first, so a parent that asked for port 0 can read it
    print(f"scripted LLM at http://{args.host}:{sock.getsockname()[1]}/v1", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
