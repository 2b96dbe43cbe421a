"""What every outbound call shares: retries with backoff and jitter, and a circuit breaker per
dependency and endpoint.

The LLM, the embedding and rerank services, Qdrant and web search are all reached over httpx,
so one transport wraps them all (`ResilientTransport`, `ResilientAsyncTransport`):

- **Retries** where they are safe: a connection that could not be made or was dropped before a
  reply, and 429/502/503 replies (which say "not now"), up to `retries` more times, waiting
  `backoff_s * 2**n` with full jitter, or what `Retry-After` asks (capped). A request that timed
  out waiting for its reply is not retried: the endpoint is slow, and trying again doubles the
  wait. A reply's body is never retried: a stream that broke half way cannot be resumed.
- **A circuit breaker**: after `failures` failed calls in a row (after their retries; a 5xx,
  a connection or timeout error, a body broken while read; not a 4xx or 429) the
  endpoint is left alone for `reset_s`; calls meanwhile fail at once with `CircuitOpenError`
  rather than each waiting out its own timeout. Then one trial call goes through: success closes
  the circuit, failure opens it again. A stream counts when it ends: headers followed by a stall
  are a failure.

The client libraries' own retries are turned off where this transport is used, so one policy
holds for every dependency. Breakers live for the process (`breakers()`); `/readyz` and
`/metrics` read them.

Degraded turns: where a dependency can be done without (the reranker, the query embedding for
the dense half of hybrid search), callers note what they skipped with `note_skipped`; a node
that opened `collect_skipped()` turns the notes into flags.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Literal

import httpx

if TYPE_CHECKING:
    from agent.settings import Settings

CircuitState = Literal["closed", "open", "half_open"]
STATE_VALUES: dict[CircuitState, int] = {"closed": 0, "half_open": 1, "open": 2}
"""Gauge values of `agentrag_dependency_circuit_state`: higher is worse."""

RETRY_STATUSES = frozenset({429, 502, 503})
"""Replies that say "not now": the request did not run, or may run again safely. A 504 is not
among them: the upstream timed out and may still be working, and trying again doubles the
wait."""
RETRY_AFTER_CAP_S = 8.0
"""The longest a `Retry-After` is honoured: longer, and the turn waiting on it is better failed."""


class CircuitOpenError(httpx.TransportError):
    """A call refused without being sent: its endpoint failed too often just now."""


@dataclass(frozen=True)
class BreakerSnapshot:
    dependency: str
    endpoint: str
    state: CircuitState
    consecutive_failures: int
    failures_total: int
    retries_total: int
    rejected_total: int
    retry_in_s: float
    last_error: str

    def describe(self) -> str:
        """One line for `/readyz`: `closed`, or why and for how long it is open."""
        if self.state == "closed":
            return "closed"
        if self.state == "half_open":
            return f"half_open: trying {self.endpoint} again after {self.last_error}"
        return (
            f"open: {self.consecutive_failures} failed calls in a row to {self.endpoint} "
            f"(last: {self.last_error}); next try in {self.retry_in_s:.0f} s"
        )


class CircuitBreaker:
    """Consecutive-failure breaker with one trial call after `reset_s` (half open).

    `clock` is injectable so tests step time instead of sleeping through it."""

    def __init__(
        self,
        dependency: str,
        endpoint: str,
        *,
        failures: int = 5,
        reset_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dependency, self.endpoint = dependency, endpoint
        self.failures, self.reset_s, self.clock = failures, reset_s, clock
        self._lock = threading.Lock()
        self._state: CircuitState = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_out = False
        self._trial_at = 0.0
        self.failures_total = 0
        self.retries_total = 0
        self.rejected_total = 0
        self.last_error = ""

    @property
    def state(self) -> CircuitState:
        with self._lock:
            return self._current()

    def _current(self) -> CircuitState:
        if self._state == "open" and self.clock() - self._opened_at >= self.reset_s:
            self._state, self._trial_out = "half_open", False
        return self._state

    def acquire(self) -> None:
        """Raise `CircuitOpenError` unless a call may go out now (in half open, only one; a
        trial that has not settled within `reset_s` is taken as lost, and another may go)."""
        with self._lock:
            state = self._current()
            stale = self._trial_out and self.clock() - self._trial_at >= self.reset_s
            if state == "closed" or (state == "half_open" and (not self._trial_out or stale)):
                self._trial_out = state == "half_open"
                self._trial_at = self.clock()
                return
            self.rejected_total += 1
            wait = max(0.0, self.reset_s - (self.clock() - self._opened_at))
        raise CircuitOpenError(
            f"{self.dependency} at {self.endpoint} is failing ({self.last_error}); "
            f"calls are paused for {wait:.0f} s more (circuit open)"
        )

    def success(self) -> None:
        with self._lock:
            self._state, self._consecutive, self._trial_out = "closed", 0, False

    def failure(self, error: str) -> None:
        with self._lock:
            self.failures_total += 1
            self._consecutive += 1
            self.last_error = error[:200]
            if self._state == "half_open" or self._consecutive >= self.failures:
                self._state, self._opened_at, self._trial_out = "open", self.clock(), False

    def release(self) -> None:
        """A call that ended without a verdict (the caller went away): let another trial go."""
        with self._lock:
            self._trial_out = False

    def retried(self) -> None:
        with self._lock:
            self.retries_total += 1

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            state = self._current()
            retry_in = (
                max(0.0, self.reset_s - (self.clock() - self._opened_at)) if state == "open" else 0
            )
            return BreakerSnapshot(
                self.dependency,
                self.endpoint,
                state,
                self._consecutive,
                self.failures_total,
                self.retries_total,
                self.rejected_total,
                retry_in,
                self.last_error,
            )


_breakers: dict[tuple[str, str], CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker(
    dependency: str, endpoint: str, *, failures: int = 5, reset_s: float = 30.0
) -> CircuitBreaker:
    """The process's breaker for one endpoint of a dependency (made on first use)."""
    key = (dependency, _origin(endpoint))
    with _breakers_lock:
        found = _breakers.get(key)
        if found is None:
            found = _breakers[key] = CircuitBreaker(
                dependency, key[1], failures=failures, reset_s=reset_s
            )
        return found


def breakers() -> list[BreakerSnapshot]:
    with _breakers_lock:
        current = list(_breakers.values())
    return [b.snapshot() for b in current]


def reset_breakers() -> None:
    """Forget every breaker (tests; a process that reconfigured its endpoints)."""
    with _breakers_lock:
        _breakers.clear()


def dependency_states() -> dict[str, BreakerSnapshot]:
    """The worst breaker of each dependency: what `/readyz` reports."""
    worst: dict[str, BreakerSnapshot] = {}
    for snap in breakers():
        seen = worst.get(snap.dependency)
        if seen is None or STATE_VALUES[snap.state] > STATE_VALUES[seen.state]:
            worst[snap.dependency] = snap
    return worst


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    if not parsed.host:
        return url
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2
    backoff_s: float = 0.25
    max_backoff_s: float = 4.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        asked = _retry_after(response) if response is not None else None
        if asked is not None:
            return min(asked, RETRY_AFTER_CAP_S)
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _retryable(exc: Exception) -> bool:
    """Errors where the request cannot have run, or was cut before any reply."""
    if isinstance(exc, CircuitOpenError):
        return False
    if isinstance(exc, httpx.TimeoutException):
        return isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
    return isinstance(exc, httpx.TransportError)


def _failed(status: int) -> bool:
    """A reply that says the endpoint is failing. A 429 is not: the endpoint is up and pacing
    one caller (one role's rate limit must not stop every model on the host)."""
    return status >= 500


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _failed_call(circuit: CircuitBreaker, exc: Exception) -> None:
    """A call that raised: the endpoint's failure, except a full local connection pool (this
    process is busy, the endpoint may be fine)."""
    if isinstance(exc, httpx.PoolTimeout | CircuitOpenError):
        circuit.release()
    else:
        circuit.failure(_describe(exc))


class _Tracked:
    """What a reply's body tells the breaker: read to its end, or closed by its reader after
    some bytes (an SSE client stops at `[DONE]`), it answered; broken while read, it failed;
    closed before any byte, it says nothing (the caller went away)."""

    def __init__(self, circuit: CircuitBreaker) -> None:
        self._circuit, self._settled, self._got_bytes = circuit, False, False

    def _settle(self, error: str | None) -> None:
        if not self._settled:
            self._settled = True
            self._circuit.failure(error) if error else self._circuit.success()

    def _closed(self) -> None:
        if not self._settled:
            self._settled = True
            self._circuit.success() if self._got_bytes else self._circuit.release()


class _TrackedSyncStream(_Tracked, httpx.SyncByteStream):
    def __init__(
        self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, circuit: CircuitBreaker
    ) -> None:
        assert isinstance(inner, httpx.SyncByteStream)
        super().__init__(circuit)
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                self._got_bytes = True
                yield chunk
        except Exception as exc:
            self._settle(_describe(exc))
            raise
        self._settle(None)

    def close(self) -> None:
        self._closed()
        self._inner.close()


class _TrackedAsyncStream(_Tracked, httpx.AsyncByteStream):
    def __init__(
        self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, circuit: CircuitBreaker
    ) -> None:
        assert isinstance(inner, httpx.AsyncByteStream)
        super().__init__(circuit)
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._got_bytes = True
                yield chunk
        except Exception as exc:
            self._settle(_describe(exc))
            raise
        self._settle(None)

    async def aclose(self) -> None:
        self._closed()
        await self._inner.aclose()


class _Attempts:
    """One request's tries: whether to try again and after how long, and what its last reply
    tells the breaker. Shared by the sync and the async transport, which differ only in how
    they send and sleep."""

    def __init__(self, circuit: CircuitBreaker, policy: RetryPolicy) -> None:
        self.circuit, self.policy, self.attempt = circuit, policy, 0

    def after_error(self, exc: Exception) -> float | None:
        """The wait before trying again, or None: give up (the failure is recorded)."""
        if self.attempt < self.policy.retries and _retryable(exc):
            return self._next(None)
        _failed_call(self.circuit, exc)
        return None

    def after_reply(self, response: httpx.Response) -> float | None:
        """The wait before trying again (the caller closes the reply), or None: keep it."""
        if response.status_code in RETRY_STATUSES and self.attempt < self.policy.retries:
            return self._next(response)
        return None

    def _next(self, response: httpx.Response | None) -> float:
        self.circuit.retried()
        wait = self.policy.delay(self.attempt, response)
        self.attempt += 1
        return wait

    def kept(
        self,
        response: httpx.Response,
        request: httpx.Request,
        tracked: type[_TrackedSyncStream] | type[_TrackedAsyncStream],
    ) -> httpx.Response:
        """The reply handed back: a failing status is recorded now; any other is settled by
        how its body is read (through `tracked`)."""
        if _failed(response.status_code):
            self.circuit.failure(f"HTTP {response.status_code}")
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=tracked(response.stream, self.circuit),
            extensions=response.extensions,
            request=request,
        )


class ResilientTransport(httpx.BaseTransport):
    """Retries and a circuit breaker around another transport (sync clients)."""

    def __init__(
        self,
        circuit: CircuitBreaker,
        policy: RetryPolicy | None = None,
        inner: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.circuit, self.policy = circuit, policy or RetryPolicy()
        self.inner = inner or httpx.HTTPTransport()
        self._sleep = sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.circuit.acquire()
        tries = _Attempts(self.circuit, self.policy)
        while True:
            try:
                response = self.inner.handle_request(request)
            except Exception as exc:
                wait = tries.after_error(exc)
                if wait is None:
                    raise
                self._sleep(wait)
                continue
            wait = tries.after_reply(response)
            if wait is None:
                return tries.kept(response, request, _TrackedSyncStream)
            response.close()
            self._sleep(wait)

    def close(self) -> None:
        self.inner.close()


class ResilientAsyncTransport(httpx.AsyncBaseTransport):
    """Retries and a circuit breaker around another transport (async clients)."""

    def __init__(
        self,
        circuit: CircuitBreaker,
        policy: RetryPolicy | None = None,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.circuit, self.policy = circuit, policy or RetryPolicy()
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.circuit.acquire()
        tries = _Attempts(self.circuit, self.policy)
        try:
            while True:
                try:
                    response = await self.inner.handle_async_request(request)
                except Exception as exc:
                    wait = tries.after_error(exc)
                    if wait is None:
                        raise
                    await asyncio.sleep(wait)
                    continue
                wait = tries.after_reply(response)
                if wait is None:
                    return tries.kept(response, request, _TrackedAsyncStream)
                await response.aclose()
                await asyncio.sleep(wait)
        except asyncio.CancelledError:
            self.circuit.release()
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


def resilient_transports(
    dependency: str,
    endpoint: str,
    *,
    retries: int = 2,
    failures: int = 5,
    reset_s: float = 30.0,
) -> tuple[ResilientTransport, ResilientAsyncTransport]:
    """The sync and async transports of one endpoint, sharing its breaker."""
    circuit = breaker(dependency, endpoint, failures=failures, reset_s=reset_s)
    policy = RetryPolicy(retries=retries)
    return ResilientTransport(circuit, policy), ResilientAsyncTransport(circuit, policy)


def transports_for(
    settings: Settings, dependency: str, endpoint: str
) -> tuple[ResilientTransport, ResilientAsyncTransport]:
    """`resilient_transports` configured by `dependency_retries`, `circuit_failures` and
    `circuit_reset_s`."""
    return resilient_transports(
        dependency,
        endpoint,
        retries=settings.dependency_retries,
        failures=settings.circuit_failures,
        reset_s=settings.circuit_reset_s,
    )


_skipped: ContextVar[list[tuple[str, str]] | None] = ContextVar("agentrag_skipped", default=None)


@contextmanager
def collect_skipped() -> Iterator[list[tuple[str, str]]]:
    """Gather `(what, why)` notes of steps skipped for a failing dependency, in this context and
    the tasks it starts (they share the list)."""
    notes: list[tuple[str, str]] = []
    token = _skipped.set(notes)
    try:
        yield notes
    finally:
        _skipped.reset(token)


def note_skipped(what: str, why: str) -> None:
    notes = _skipped.get()
    if notes is not None and (what, why) not in notes:
        notes.append((what, why))
