"""Admission: a turn waits for a slot only as long as the line lets it finish in time."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from server.errors import ApiError
from server.metrics import Metrics
from server.runs import Run, RunManager


def manager(**kwargs: Any) -> RunManager:
    graph: Any = None
    threads: Any = None
    return RunManager(graph, threads, Metrics(), **kwargs)


def test_a_turn_that_would_wait_too_long_is_refused_with_retry_after() -> None:
    runs = manager(max_concurrent=2, max_queued=100, max_wait_s=30.0)
    runs._active = 2  # both slots busy
    runs._turn_s = 10.0  # recent turns took 10 s
    runs._pending = {f"run-{i}" for i in range(5)}
    runs._check_capacity()  # a sixth would wait (5 + 1) * 10 / 2 = 30 s: let in
    runs._pending.add("run-5")
    with pytest.raises(ApiError) as refused:
        runs._check_capacity()  # (6 + 1) * 10 / 2 = 35 s
    assert refused.value.status == 429 and refused.value.code == "overloaded"
    assert refused.value.headers == {"Retry-After": "35"}


def test_fast_turns_let_a_long_line_wait_and_the_cap_still_holds() -> None:
    runs = manager(max_concurrent=16, max_queued=100, max_wait_s=60.0)
    runs._active = 16
    runs._turn_s = 0.2
    runs._pending = {f"run-{i}" for i in range(99)}
    runs._check_capacity()  # 100 in line at 0.2 s each over 16 slots: about 1.3 s
    runs._pending.add("run-99")
    with pytest.raises(ApiError):
        runs._check_capacity()  # the line is full
    idle = manager(max_concurrent=2, max_queued=0)
    idle._check_capacity()  # a free slot needs no line


async def test_a_waiting_turn_hears_of_its_place_on_joining_and_near_the_front() -> None:
    runs = manager(max_concurrent=1)
    line = [Run(run_id=f"r{i}", thread_id=f"t{i}", tenant="a", effort="low") for i in range(30)]
    loop = asyncio.get_running_loop()
    runs._line = collections.deque((r, loop.create_future()) for r in line)
    runs._announce()
    assert [r.queue.qsize() for r in line] == [1] * 30  # each told its place on joining
    for _ in range(29):  # the line moves up one place at a time
        runs._line.popleft()
        runs._announce()
    last = line[-1]
    places = [last.queue.get_nowait()["position"] for _ in range(last.queue.qsize())]
    assert places == [30, 20, 10, 5, 4, 3, 2, 1]
