"""One chat turn as a cancellable task whose events flow through a queue.

The task runs the graph no matter how the result is consumed (SSE, one JSON reply, the OpenAI
shape); consumers read the queue. Cancelling the task (the client went away, or asked) stops the
graph at its next await, so no further LLM call starts. Every run ends with exactly one `done`
or `error` event, then the queue's end marker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

from langgraph.graph.state import CompiledStateGraph

from agent.context import AgentContext
from agent.errors import AgentragError, CollectionNotFoundError, EmbeddingError, StoreError
from agent.tracing import Tracing, TurnTrace
from graphs.rag import recursion_limit
from server.errors import ApiError
from server.events import (
    Event,
    closing_events,
    error_event,
    final_payload,
    run_event,
    turn_events,
)
from server.logs import log, run_id_var, thread_id_var
from server.metrics import Metrics
from server.persistence import ThreadIndex, store_errors, title_of

THREAD_STORE_ERRORS = store_errors()

END = None
FINISHED_KEPT_S = 300.0
"""How long a finished run's id still answers a cancel (with "not cancelled") rather than 404."""
CONSUMER_WAIT_S = 2.0
"""Longest a run waits for its stream to open before it starts anyway."""


async def _logged(work: Awaitable[None]) -> None:
    try:
        await work
    except Exception:
        logging.getLogger("agentrag.server").warning("thread index update failed", exc_info=True)


@dataclass
class Run:
    run_id: str
    thread_id: str
    tenant: str
    effort: str
    owner: str = ""
    """Whose thread and run this is (`Principal.owner`): the tenant, or the tenant and the
    asking key's groups."""
    started: float = field(default_factory=time.perf_counter)
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    first_token_ms: float | None = None
    tokens: int = 0
    consumer_ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by a streaming consumer once the `run` event is on the wire (see `_execute`)."""
    finished: bool = False
    result: Event | None = None
    user: str | None = None
    """Who asked, for the trace (default: the tenant)."""
    trace_id: str | None = None
    """The turn's Langfuse trace (the run id), when the turn is traced."""
    trace_url: str | None = None
    place: int = 0
    """Its place in line for a slot (0: not waiting)."""

    def emit(self, event: Event) -> None:
        if event.get("type") in ("done", "error"):
            self.result = event
            self.finished = True
        self.queue.put_nowait(event)

    async def events(self) -> AsyncIterator[Event]:
        async for batch in self.batches():
            for event in batch:
                yield event

    async def batches(self) -> AsyncIterator[list[Event]]:
        """Events as they come, grouped with those already waiting: a burst of tokens goes
        out in one write instead of one write each."""
        while True:
            batch: list[Event] = []
            event = await self.queue.get()
            while event is not END:
                batch.append(event)
                if self.queue.empty():
                    break
                event = self.queue.get_nowait()
            if batch:
                yield batch
            if event is END:
                return

    def cancel(self) -> bool:
        if self.task is None or self.task.done():
            return False
        self.task.cancel()
        return True


class RunManager:
    def __init__(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        threads: ThreadIndex,
        metrics: Metrics,
        max_concurrent: int = 16,
        tracing: Tracing | None = None,
        max_queued: int = 256,
        max_wait_s: float = 60.0,
    ) -> None:
        self.graph = graph
        self.threads = threads
        self.metrics = metrics
        self.tracing = tracing
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self.max_wait_s = max_wait_s
        self._active = 0
        self._line: collections.deque[tuple[Run, asyncio.Future[None]]] = collections.deque()
        self._pending: set[str] = set()
        """Runs started that have not reached a slot yet (in line or about to be)."""
        self._turn_s = 0.0
        """Moving average of a turn's time in its slot, for Retry-After."""
        self.runs: dict[str, Run] = {}
        """Runs in progress."""
        self._finished: dict[str, str] = {}
        """Runs finished in the last `FINISHED_KEPT_S`, and their tenant: enough to answer a late
        cancel ("already finished") without holding each turn's answer and events for minutes
        (under sustained load that held about 100 MB)."""
        self._busy_threads: dict[str, str] = {}
        """Threads with a run in progress, and their tenant."""

    def thread_busy(self, thread_id: str, tenant: str) -> bool:
        """Only the thread's own tenant learns it is busy; to another it does not exist."""
        return self._busy_threads.get(thread_id) == tenant

    def _check_capacity(self) -> None:
        """Refuses a turn (429 with Retry-After) when every slot is busy and it would wait
        longer than `max_wait_s` (from recent turns' times) or find the line full: waiting
        longer helps no one, and the client should back off. A fast LLM lets a long line
        through; the bundled one, a short one."""
        waiting = len(self._pending)
        if self._active + waiting < self.max_concurrent:
            return
        wait_s = (self._turn_s or 0.0) * (waiting + 1) / self.max_concurrent
        if waiting < self.max_queued and wait_s <= self.max_wait_s:
            return
        self.metrics.errors.labels(code="overloaded").inc()
        raise ApiError(
            429,
            "overloaded",
            f"The server is running {self._active} turns with {waiting} waiting; retry later.",
            headers={"Retry-After": str(max(1, math.ceil(wait_s or 1.0)))},
        )

    def get(self, run_id: str, tenant: str) -> Run | None:
        """The run `run_id` if `tenant` (a `Principal.owner`) started it."""
        run = self.runs.get(run_id)
        if run is not None:
            return run if run.owner == tenant else None
        if self._finished.get(run_id) == tenant:
            return Run(
                run_id=run_id, thread_id="", tenant=tenant, effort="", owner=tenant, finished=True
            )
        return None

    def start(
        self,
        *,
        message: str,
        thread_id: str,
        ctx: AgentContext,
        history: list[Any],
        new_thread: bool = False,
        streaming: bool = True,
        traced: bool = False,
        user: str | None = None,
        owner: str | None = None,
    ) -> Run:
        """`history`: earlier messages sent with the request (OpenAI clients send the whole
        conversation); the checkpointed thread's own history is added by the graph.
        `new_thread`: the run records the thread after its `run` event is out, so that a burst
        of new chats gets its first events without waiting on the database.
        `traced`: the turn gets a Langfuse trace whose id is the run id, known (and sent to
        the client) before the turn starts."""
        self._check_capacity()
        run = Run(
            run_id=uuid.uuid4().hex,
            thread_id=thread_id,
            tenant=ctx.tenant,
            effort=ctx.effort,
            owner=owner or ctx.tenant,
            user=user,
        )
        if traced and self.tracing is not None and self.tracing.enabled:
            run.trace_id = run.run_id
            run.trace_url = self.tracing.url(run.run_id)
        if not streaming:
            run.consumer_ready.set()
        self.runs[run.run_id] = run
        self._pending.add(run.run_id)
        self._busy_threads[thread_id] = run.owner
        run.task = asyncio.create_task(self._execute(run, message, ctx, history, new_thread))
        return run

    async def _execute(
        self, run: Run, message: str, ctx: AgentContext, history: list[Any], new_thread: bool
    ) -> None:
        run_id_var.set(run.run_id)
        thread_id_var.set(run.thread_id)
        self.metrics.runs_in_flight.inc()
        outcome = "ok"
        try:
            run.emit(run_event(run.run_id, run.thread_id))
            log(logging.INFO, "run started", effort=ctx.effort, tenant=ctx.tenant)
            if new_thread:
                await self.threads.create(run.thread_id, run.owner, title_of(message))
            # The graph's first steps flood the event loop with work; a burst of new chats
            # would wait behind it for its first bytes. Start once the stream is open.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.consumer_ready.wait(), timeout=CONSUMER_WAIT_S)
            async with self._turn_slot(run):
                values = await self._stream_graph(run, message, ctx, history)
            # the answer is written; bookkeeping that fails (a locked index) must not lose it
            await _logged(self.threads.touch(run.thread_id, run.owner, title_of(message)))
            if run.trace_id is not None:
                await _logged(self.threads.record_trace(run.trace_id, run.owner, run.thread_id))
            self._finish(run, values)
            if values.get("error"):
                outcome = "degraded"
        except asyncio.CancelledError:
            outcome = "cancelled"
            self.metrics.errors.labels(code="cancelled").inc()
            run.emit(error_event("cancelled", "The run was cancelled."))
            log(logging.INFO, "run cancelled")
            raise
        except CollectionNotFoundError as exc:
            outcome = "error"
            # the store's message lists every collection; the caller hears only of its own
            self._fail(run, "collection_not_found", f"No collection {exc.name!r}.")
        except (EmbeddingError, StoreError) as exc:
            outcome = "error"
            # the detail (an internal URL, a proxy's words) is the operator's, in the log
            log(logging.WARNING, "dependency failed", error=f"{type(exc).__name__}: {exc}")
            what = "embedding service" if isinstance(exc, EmbeddingError) else "vector store"
            self._fail(
                run,
                "dependency_unavailable",
                f"The {what} is unavailable; the turn could not run. Try again shortly.",
            )
        except AgentragError as exc:
            outcome = "error"
            self._fail(run, "agent_error", str(exc))
        except THREAD_STORE_ERRORS as exc:
            outcome = "error"
            log(logging.WARNING, "thread store failed", error=f"{type(exc).__name__}: {exc}")
            self._fail(
                run,
                "thread_store_unavailable",
                "The conversation store is unavailable, so the turn could not be kept. "
                "Try again shortly.",
            )
        except Exception as exc:
            outcome = "error"
            logging.getLogger("agentrag.server").exception("run failed")
            self._fail(run, "internal_error", f"The agent failed: {type(exc).__name__}: {exc}")
        finally:
            self.metrics.runs_in_flight.dec()
            self.metrics.turns.labels(outcome=outcome).inc()
            self.metrics.turn_seconds.labels(effort=run.effort).observe(
                time.perf_counter() - run.started
            )
            self._busy_threads.pop(run.thread_id, None)
            self._pending.discard(run.run_id)
            run.finished = True
            run.queue.put_nowait(END)
            # whoever streams or awaits the run holds it; the table keeps only that it finished
            self.runs.pop(run.run_id, None)
            self._finished[run.run_id] = run.owner
            asyncio.get_running_loop().call_later(
                FINISHED_KEPT_S, self._finished.pop, run.run_id, None
            )

    @contextlib.asynccontextmanager
    async def _turn_slot(self, run: Run) -> AsyncIterator[None]:
        """One of the `max_concurrent` slots, first come first served; a turn in line is told
        its place (a `queued` event) whenever it changes, and counted (a gauge)."""
        if self._active < self.max_concurrent and not self._line:
            self._active += 1
        else:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._line.append((run, turn))
            self._announce()
            try:
                with self.metrics.runs_waiting.track_inprogress():
                    await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # the slot was handed over as the turn was cancelled
                else:
                    self._line = collections.deque(w for w in self._line if w[0] is not run)
                    self._announce()
                raise
        self._pending.discard(run.run_id)
        started = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - started
            self._turn_s = took if not self._turn_s else 0.8 * self._turn_s + 0.2 * took
            self._release()

    def _release(self) -> None:
        """Hands the slot to the first turn in line that still waits, or frees it."""
        while self._line:
            _, turn = self._line.popleft()
            if not turn.done():
                turn.set_result(None)
                self._announce()
                return
        self._active -= 1

    def _announce(self) -> None:
        """Tells each waiting turn its place when it joins the line, then as it nears the front
        (every tenth place, then each of the last five): with a hundred waiting, telling every
        turn of every step would send thousands of events for nothing."""
        for place, (run, _) in enumerate(self._line, 1):
            if run.place == place:
                continue
            joined = run.place == 0
            run.place = place
            if joined or place <= 5 or place % 10 == 0:
                run.emit({"type": "queued", "position": place, "running": self._active})

    async def _stream_graph(
        self, run: Run, message: str, ctx: AgentContext, history: list[Any]
    ) -> dict[str, Any]:
        with self._trace(run, message, ctx) as trace:
            config: Any = trace.with_callbacks(
                {
                    "configurable": {"thread_id": run.thread_id},
                    "recursion_limit": recursion_limit(ctx),
                    "metadata": {"run_id": run.run_id, "tenant": ctx.tenant},
                }
            )
            turn_input = {"messages": [*history, ("user", message)]}
            try:
                async for event in turn_events(self.graph, turn_input, config, ctx):
                    if event["type"] == "token":
                        if run.first_token_ms is None:
                            run.first_token_ms = (time.perf_counter() - run.started) * 1000
                            self.metrics.first_token_seconds.labels(effort=run.effort).observe(
                                run.first_token_ms / 1000
                            )
                        run.tokens += 1
                    run.emit(event)
            except asyncio.CancelledError:
                trace.fail("cancelled", "The run was cancelled.")
                raise
            except Exception as exc:
                trace.fail(type(exc).__name__, str(exc))
                raise
            state = await self.graph.aget_state(config)
            values = dict(state.values)
            trace.finish(values)
            return values

    def _trace(self, run: Run, message: str, ctx: AgentContext) -> Any:
        """The turn's trace, opened inside the run's task: the graph's spans nest under it, and
        concurrent turns (each its own task) never share one."""
        if self.tracing is None or run.trace_id is None:
            return contextlib.nullcontext(TurnTrace())
        return self.tracing.turn(
            question=message,
            session_id=run.thread_id,
            user_id=run.user or ctx.tenant,
            tenant=ctx.tenant,
            trace_id=run.trace_id,
            tags=[f"effort:{ctx.effort}", *(f"collection:{c}" for c in ctx.collections or [])],
            metadata={"run_id": run.run_id, "thread_id": run.thread_id, "entry": "api"},
        )

    def _finish(self, run: Run, values: dict[str, Any]) -> None:
        first = run.first_token_ms
        total_ms = (time.perf_counter() - run.started) * 1000
        events = closing_events(
            values,
            run_id=run.run_id,
            thread_id=run.thread_id,
            tokens_streamed=run.tokens > 0,
            total_ms=total_ms,
            first_token_ms=first,
            trace_id=run.trace_id,
            trace_url=run.trace_url,
        )
        usage = final_payload(values)["usage"]
        self.metrics.llm_calls.inc(usage["llm_calls"])
        self.metrics.tokens.labels(direction="input").inc(usage["input_tokens"])
        self.metrics.tokens.labels(direction="output").inc(usage["output_tokens"])
        if values.get("error"):
            self.metrics.errors.labels(code=values["error"].get("code", "agent_error")).inc()
        log(logging.INFO, "run finished", ms=round(total_ms, 1), llm_calls=usage["llm_calls"])
        for event in events:
            run.emit(event)

    def _fail(self, run: Run, code: str, message: str) -> None:
        self.metrics.errors.labels(code=code).inc()
        log(logging.WARNING, "run failed", code=code, error=message)
        run.emit(error_event(code, message))

    async def shutdown(self) -> None:
        tasks = [r.task for r in self.runs.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
