"""Retries, backoff and circuit breakers of outbound calls, against transports that fail on
purpose; time is a counter the test steps, never a sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from agent.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    ResilientAsyncTransport,
    ResilientTransport,
    RetryPolicy,
    breaker,
    collect_skipped,
    dependency_states,
    note_skipped,
)

NO_WAIT = RetryPolicy(retries=2, backoff_s=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def scripted(
    *outcomes: int | Exception,
) -> tuple[httpx.MockTransport, list[int | Exception]]:
    """A transport answering each request with the next status (or raising the next error);
    the last outcome repeats. Returns it and the list of outcomes it served."""
    served: list[int | Exception] = []

    def handle(request: httpx.Request) -> httpx.Response:
        outcome = outcomes[min(len(served), len(outcomes) - 1)]
        served.append(outcome)
        if isinstance(outcome, Exception):
            raise outcome
        return httpx.Response(outcome, json={"ok": outcome < 400})

    return httpx.MockTransport(handle), served


def client(
    inner: httpx.BaseTransport, circuit: CircuitBreaker, policy: RetryPolicy = NO_WAIT
) -> httpx.Client:
    waits: list[float] = []
    return httpx.Client(
        transport=ResilientTransport(circuit, policy, inner, sleep=waits.append),
        base_url="http://dep.test",
    )


def test_retries_a_refused_connection_and_a_503_then_succeeds() -> None:
    inner, served = scripted(httpx.ConnectError("refused"), 503, 200)
    circuit = CircuitBreaker("llm", "http://dep.test")
    with client(inner, circuit) as c:
        assert c.post("/v1/chat").status_code == 200
    assert len(served) == 3
    snap = circuit.snapshot()
    assert (snap.state, snap.retries_total, snap.failures_total) == ("closed", 2, 0)


def test_a_timeout_waiting_for_the_reply_is_not_retried() -> None:
    inner, served = scripted(httpx.ReadTimeout("slow"), 200)
    circuit = CircuitBreaker("llm", "http://dep.test")
    with client(inner, circuit) as c, pytest.raises(httpx.ReadTimeout):
        c.post("/v1/chat")
    assert len(served) == 1
    assert circuit.snapshot().failures_total == 1


def test_client_errors_are_neither_retried_nor_failures() -> None:
    inner, served = scripted(404)
    circuit = CircuitBreaker("llm", "http://dep.test", failures=1)
    with client(inner, circuit) as c:
        assert c.get("/nope").status_code == 404
    assert len(served) == 1
    assert circuit.state == "closed"


def test_the_circuit_opens_after_failures_in_a_row_and_then_fails_fast() -> None:
    inner, served = scripted(500)
    clock = Clock()
    circuit = CircuitBreaker("llm", "http://dep.test", failures=3, reset_s=30, clock=clock)
    with client(inner, circuit) as c:
        for _ in range(3):
            assert c.post("/v1/chat").status_code == 500
        assert circuit.state == "open"
        sent = len(served)
        with pytest.raises(CircuitOpenError, match="circuit open"):
            c.post("/v1/chat")
        assert len(served) == sent, "an open circuit sends nothing"
        assert circuit.snapshot().rejected_total == 1
        assert "3 failed calls in a row" in circuit.snapshot().describe()


def test_half_open_lets_one_trial_through_and_its_outcome_decides() -> None:
    clock = Clock()
    circuit = CircuitBreaker("llm", "http://dep.test", failures=1, reset_s=30, clock=clock)
    circuit.acquire()
    circuit.failure("HTTP 500")
    assert circuit.state == "open"
    clock.now += 30
    assert circuit.state == "half_open"
    circuit.acquire()  # the trial
    with pytest.raises(CircuitOpenError):
        circuit.acquire()  # only one at a time
    circuit.failure("HTTP 500")
    assert circuit.state == "open", "a failed trial opens it again"
    clock.now += 30
    circuit.acquire()
    circuit.success()
    assert circuit.state == "closed"
    circuit.acquire()


def test_a_trial_whose_caller_went_away_frees_the_next_trial() -> None:
    clock = Clock()
    circuit = CircuitBreaker("llm", "http://dep.test", failures=1, reset_s=1, clock=clock)
    circuit.failure("x")
    clock.now += 1
    circuit.acquire()
    circuit.release()
    circuit.acquire()


def test_a_stream_that_breaks_after_its_headers_counts_as_a_failure() -> None:
    class Broken(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield b"data: {}\n\n"
            raise httpx.ReadTimeout("stalled")

    inner = httpx.MockTransport(lambda r: httpx.Response(200, stream=Broken()))
    circuit = CircuitBreaker("llm", "http://dep.test", failures=1)
    with (
        client(inner, circuit) as c,
        pytest.raises(httpx.ReadTimeout),
        c.stream("POST", "/v1/chat") as response,
    ):
        assert response.status_code == 200
        assert circuit.state == "closed", "headers alone are not a success yet"
        for _ in response.iter_raw():
            pass
    assert circuit.state == "open"


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(retries=1, backoff_s=0.5)
    assert policy.delay(0, httpx.Response(429, headers={"Retry-After": "2"})) == 2.0
    assert policy.delay(0, httpx.Response(429, headers={"Retry-After": "600"})) == 8.0
    jittered = [policy.delay(3, None) for _ in range(200)]
    assert all(0 <= d <= 4.0 for d in jittered)
    assert len(set(jittered)) > 1, "backoff is jittered"


def test_waits_follow_the_policy() -> None:
    inner, _ = scripted(503, 503, 200)
    waits: list[float] = []
    circuit = CircuitBreaker("llm", "http://dep.test")
    transport = ResilientTransport(
        circuit, RetryPolicy(retries=2, backoff_s=1.0, max_backoff_s=1.5), inner, waits.append
    )
    with httpx.Client(transport=transport, base_url="http://dep.test") as c:
        assert c.get("/").status_code == 200
    assert len(waits) == 2 and 0 <= waits[0] <= 1.0 and 0 <= waits[1] <= 1.5


def test_async_transport_retries_opens_and_counts_streams() -> None:
    async def main() -> None:
        outcomes: list[Callable[[], httpx.Response]] = [
            lambda: httpx.Response(502),
            lambda: httpx.Response(200, json={"ok": True}),
        ]
        served = 0

        def handle(request: httpx.Request) -> httpx.Response:
            nonlocal served
            served += 1
            return outcomes[min(served - 1, len(outcomes) - 1)]()

        circuit = CircuitBreaker("embeddings", "http://dep.test", failures=2)
        transport = ResilientAsyncTransport(circuit, NO_WAIT, httpx.MockTransport(handle))
        async with httpx.AsyncClient(transport=transport, base_url="http://dep.test") as c:
            assert (await c.post("/embeddings")).json() == {"ok": True}
            assert served == 2 and circuit.snapshot().retries_total == 1
            outcomes[:] = [lambda: httpx.Response(500)]
            for _ in range(2):
                assert (await c.post("/embeddings")).status_code == 500
            with pytest.raises(CircuitOpenError):
                await c.post("/embeddings")

    asyncio.run(main())


def test_breakers_are_per_endpoint_and_readiness_sees_the_worst() -> None:
    good = breaker("llm", "http://a.test:8000/v1")
    bad = breaker("llm", "http://b.test:8000/v1", failures=1)
    assert breaker("llm", "http://a.test:8000/v1/chat") is good
    bad.failure("HTTP 503")
    good.success()
    assert dependency_states()["llm"].endpoint == "http://b.test:8000"
    assert dependency_states()["llm"].state == "open"


def test_skipped_steps_are_collected_from_tasks_and_only_once() -> None:
    async def search() -> None:
        note_skipped("rerank_skipped", "down")

    async def main() -> list[tuple[str, str]]:
        with collect_skipped() as notes:
            await asyncio.gather(search(), search())
        return notes

    assert asyncio.run(main()) == [("rerank_skipped", "down")]
    note_skipped("rerank_skipped", "nobody listening")  # outside a collection: ignored


def test_a_stream_its_reader_closes_after_some_bytes_is_a_success() -> None:
    """An SSE client stops reading at `[DONE]` and closes the reply: that closes a half-open
    circuit; a reply closed before any byte says nothing."""
    clock = Clock()
    circuit = CircuitBreaker("llm", "http://dep.test", failures=1, reset_s=5, clock=clock)
    circuit.failure("HTTP 500")
    clock.now += 5
    body = httpx.MockTransport(lambda r: httpx.Response(200, content=b"data: [DONE]\n\n" * 50))
    with client(body, circuit) as c:
        with c.stream("POST", "/v1/chat") as response:
            next(response.iter_raw(16))
        assert circuit.state == "closed"
        circuit.failure("HTTP 500")
        clock.now += 5
        with c.stream("POST", "/v1/chat"):
            pass  # closed unread
        assert circuit.state == "half_open"
        c.get("/")  # the trial was freed, so this one goes out


def test_a_trial_that_never_settles_is_taken_as_lost_after_reset_s() -> None:
    clock = Clock()
    circuit = CircuitBreaker("llm", "http://dep.test", failures=1, reset_s=10, clock=clock)
    circuit.failure("HTTP 500")
    clock.now += 10
    circuit.acquire()  # a trial whose reply is never closed
    with pytest.raises(CircuitOpenError):
        circuit.acquire()
    clock.now += 10
    circuit.acquire()


def test_a_504_is_not_retried_and_a_429_is_not_a_failure() -> None:
    inner, served = scripted(504)
    circuit = CircuitBreaker("llm", "http://dep.test", failures=1)
    with client(inner, circuit) as c:
        assert c.post("/v1/chat").status_code == 504
    assert len(served) == 1 and circuit.state == "open"

    inner, served = scripted(429)
    circuit = CircuitBreaker("llm", "http://dep.test", failures=1)
    with client(inner, circuit) as c:
        assert c.post("/v1/chat").status_code == 429
    assert len(served) == 3, "retried twice"
    assert circuit.state == "closed", "a rate limit does not open the circuit"
