"""Load on the streaming chat API: many concurrent SSE chats against a real `agentrag serve`.

One command sets everything up in a temporary data dir: the scripted OpenAI-compatible LLM
(`eval.scripted_llm`, as its own process), `agentrag ingest samples/handbook --collection
handbook`, then `agentrag serve` on a free loopback port pointed at the scripted LLM. Once
`/readyz` answers 200, one warm-up turn runs alone, then `--concurrency` clients start at once,
each running `--turns-per-client` turns in one thread (follow-ups reuse the thread id from the
`run` event) against `POST /v1/chat` with `stream: true`, parsing the SSE events as they come.

The LLM answers instantly (or after `--token-delay-ms` per token), so what this measures is
agentrag's own request path: admission, routing, retrieval, grading, streaming and
persistence, not a model. Reported, over the measured turns:

- first event: request sent -> first complete SSE event (the `run` event);
- first token: request sent -> first `token` event;
- turn: request sent -> `done` (or the stream's end);
- turns/s over the load phase, errors (HTTP errors, `error` events, streams without `done`,
  transport failures), LLM calls per turn (the scripted server's counters);
- the server's RSS (`VmRSS`) and CPU time (`/proc/<pid>/stat`) when ready, after the warm-up
  and after the load. The client runs on the same machine and competes for its cores; its own
  CPU time is reported too.

    python bench/chat_load.py --concurrency 100 --turns-per-client 1 --effort low

`--server-url` drives a server that is already running instead (with `--server-pid` for its
memory); the collection `handbook` must exist there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent.ports import free_port
from eval.metrics import percentile

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
COLLECTION = "handbook"
QUESTIONS = (
    "What happens when I ingest the same files again?",
    "How are documents split into chunks?",
    "Which embedding model does agentrag use by default?",
    "What does agentrag do with files it cannot read?",
    "How are tenants kept apart in search?",
    "Where does agentrag keep its data?",
    "How is a question answered, step by step?",
    "How big is a chunk and how much do neighbours overlap?",
    "Can I use a remote embedding service?",
    "What happens to the old chunks when a file changes?",
)
FOLLOW_UPS = (
    "And what about PDF files?",
    "Can you say more about that?",
    "Which setting changes it?",
)
TERMINAL = ("done", "error")


@dataclass
class Turn:
    """One chat turn as the client saw it; times are seconds since the request was sent."""

    client: int
    turn: int
    question: str
    status: int | None = None
    first_event_s: float | None = None
    first_token_s: float | None = None
    total_s: float | None = None
    events: Counter[str] = field(default_factory=Counter)
    thread_id: str | None = None
    answer_chars: int = 0
    citations: int = 0
    error: str | None = None
    """None when the turn ended in one `done`; else what went wrong, for the error table."""


@dataclass
class ServerProcess:
    """What `/proc` says about the server process: resident memory and CPU seconds used."""

    pid: int

    def rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return None

    def cpu_s(self) -> float | None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime

    def open_fds(self) -> int | None:
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return None

    def threads(self) -> int | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        found = [line.split()[1] for line in status.splitlines() if line.startswith("Threads:")]
        return int(found[0]) if found else None

    def snapshot(self) -> dict[str, float | None]:
        cpu = self.cpu_s()
        return {
            "rss_mb": self.rss_mb(),
            "cpu_s": round(cpu, 2) if cpu is not None else None,
            "open_fds": self.open_fds(),
            "threads": self.threads(),
        }


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event type, data object) per SSE message; comments (pings) and ids are skipped."""
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield _sse_message(event, data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield _sse_message(event, data)


def _sse_message(event: str, data: list[str]) -> tuple[str, dict[str, Any]]:
    payload = json.loads("\n".join(data))
    if not isinstance(payload, dict):
        return event, {"data": payload}
    return str(payload.get("type", event)), payload


async def chat_turn(
    http: httpx.AsyncClient,
    base_url: str,
    client: int,
    turn: int,
    question: str,
    thread_id: str | None,
    effort: str,
    headers: dict[str, str],
) -> Turn:
    record = Turn(client=client, turn=turn, question=question)
    body = {
        "message": question,
        "thread_id": thread_id,
        "collections": [COLLECTION],
        "effort": effort,
        "stream": True,
    }
    started = time.perf_counter()
    try:
        async with http.stream(
            "POST", f"{base_url}/v1/chat", json=body, headers=headers
        ) as response:
            record.status = response.status_code
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")[:300]
                record.error = f"http {response.status_code}: {_error_code(detail)}"
                return record
            async for kind, payload in sse_events(response):
                now = time.perf_counter() - started
                if record.first_event_s is None:
                    record.first_event_s = now
                record.events[kind] += 1
                if kind == "run":
                    record.thread_id = payload.get("thread_id")
                elif kind == "token" and record.first_token_s is None:
                    record.first_token_s = now
                elif kind == "done":
                    record.answer_chars = len(payload.get("answer") or "")
                    record.citations = len(payload.get("citations") or [])
                    record.thread_id = payload.get("thread_id") or record.thread_id
                elif kind == "error":
                    record.error = f"error event: {payload.get('code')}"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        record.error = f"transport: {type(exc).__name__}"
    finally:
        record.total_s = time.perf_counter() - started
    terminals = sum(record.events[k] for k in TERMINAL)
    if record.error is None and (record.events["done"] != 1 or terminals != 1):
        record.error = "stream ended without one done" if terminals == 0 else "several terminals"
    return record


def _error_code(body: str) -> str:
    with contextlib.suppress(json.JSONDecodeError, AttributeError, TypeError):
        return str(json.loads(body)["error"]["code"])
    return body[:80]


async def client_session(
    http: httpx.AsyncClient,
    base_url: str,
    client: int,
    turns: int,
    effort: str,
    headers: dict[str, str],
    start: asyncio.Event,
    until: float | None = None,
) -> list[Turn]:
    """One user: a first question, then follow-ups in the same thread; `turns` turns, or, with
    `until` (a `time.perf_counter()` deadline), turns until then, a new thread every `turns`."""
    await start.wait()
    records: list[Turn] = []
    thread_id: str | None = None
    count = 0
    while (count < turns) if until is None else (time.perf_counter() < until):
        turn = count % turns
        count += 1
        if turn == 0:
            thread_id = None
        question = (
            QUESTIONS[client % len(QUESTIONS)]
            if turn == 0
            else FOLLOW_UPS[(client + turn) % len(FOLLOW_UPS)]
        )
        record = await chat_turn(http, base_url, client, turn, question, thread_id, effort, headers)
        records.append(record)
        thread_id = record.thread_id  # None after a failed first turn: the next starts afresh
    return records


def summarize(turns: Sequence[Turn], wall_s: float) -> dict[str, Any]:
    ok = [t for t in turns if t.error is None]

    def stats(values: list[float]) -> dict[str, float | int | None]:
        if not values:
            return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
        return {
            "n": len(values),
            "p50_ms": round(percentile(values, 50) * 1000, 1),
            "p95_ms": round(percentile(values, 95) * 1000, 1),
            "max_ms": round(max(values) * 1000, 1),
        }

    events: Counter[str] = Counter()
    for t in turns:
        events.update(t.events)
    return {
        "turns": len(turns),
        "ok": len(ok),
        "errors": len(turns) - len(ok),
        "error_kinds": dict(Counter(t.error for t in turns if t.error is not None)),
        "first_event": stats([t.first_event_s for t in turns if t.first_event_s is not None]),
        "first_token": stats([t.first_token_s for t in ok if t.first_token_s is not None]),
        "turn": stats([t.total_s for t in ok if t.total_s is not None]),
        "turns_per_s": round(len(ok) / wall_s, 2) if wall_s > 0 else None,
        "wall_s": round(wall_s, 2),
        "events_per_turn": {k: round(v / max(len(turns), 1), 2) for k, v in sorted(events.items())},
        "turns_without_tokens": sum(1 for t in ok if not t.events["token"]),
        "empty_answers": sum(1 for t in ok if t.answer_chars == 0),
        "turns_with_citations": sum(1 for t in ok if t.citations),
    }


def venv_bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else str(REPO / ".venv" / "bin" / name)


@contextlib.contextmanager
def running(
    command: Sequence[str], env: dict[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[str]]:
    """A child process with its output in `log`, terminated (then killed) on the way out."""
    with log.open("w") as out:
        process = subprocess.Popen(
            list(command), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_scripted_llm(token_delay_ms: float, log: Path) -> tuple[subprocess.Popen[str], str]:
    """The scripted LLM on a free port; returns the process and its base URL (…/v1)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "eval.scripted_llm",
            "--port",
            "0",
            "--token-delay-ms",
            str(token_delay_ms),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("scripted LLM at "):
        process.kill()
        raise SystemExit(f"the scripted LLM did not start; see {log}")
    return process, line.split()[-1]


def wait_ready(base_url: str, process: subprocess.Popen[str] | None, timeout_s: float) -> float:
    """Seconds until `/readyz` answered 200; exits if the server dies or never gets ready."""
    started = time.perf_counter()
    deadline = started + timeout_s
    last = "no answer"
    while time.perf_counter() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=2)
            if response.status_code == 200:
                return time.perf_counter() - started
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise SystemExit(f"the server was not ready after {timeout_s:.0f}s ({last})")


async def drive(
    base_url: str,
    args: argparse.Namespace,
    server: ServerProcess | None,
    llm_stats_url: str | None,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.concurrency + 8, max_keepalive_connections=None)
    timeout = httpx.Timeout(args.turn_timeout_s, connect=30)
    report: dict[str, Any] = {}
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
        report["server_ready"] = server.snapshot() if server else None
        warm = await chat_turn(http, base_url, -1, 0, QUESTIONS[0], None, args.effort, headers)
        report["warm_up"] = {
            "error": warm.error,
            "first_event_ms": _ms(warm.first_event_s),
            "turn_ms": _ms(warm.total_s),
        }
        report["healthz_burst"] = await healthz_burst(base_url, args.concurrency, headers)
        report["server_before"] = server.snapshot() if server else None
        llm_before = await _llm_stats(http, llm_stats_url)
        buckets_before = await first_event_buckets(http, base_url, headers)
        tasks_before = await loop_tasks(http, base_url, headers)
        client_cpu_before = _own_cpu_s()

        start = asyncio.Event()
        until = time.perf_counter() + args.duration_s if args.duration_s else None
        sessions = [
            asyncio.create_task(
                client_session(
                    http, base_url, c, args.turns_per_client, args.effort, headers, start, until
                )
            )
            for c in range(args.concurrency)
        ]
        await asyncio.sleep(0)
        began = time.perf_counter()
        start.set()
        samples: list[dict[str, float | None]] = []
        sampler = (
            asyncio.create_task(_sample(server, began, args.sample_s, samples))
            if server is not None and args.duration_s
            else None
        )
        results = await asyncio.gather(*sessions)
        wall = time.perf_counter() - began
        if sampler is not None:
            sampler.cancel()
            report["rss_series"] = samples

        report["client_cpu_s"] = round(_own_cpu_s() - client_cpu_before, 2)
        report["server_after"] = server.snapshot() if server else None
        llm_after = await _llm_stats(http, llm_stats_url)
        buckets_after = await first_event_buckets(http, base_url, headers)
        # the runs' last bookkeeping ends just after their streams: let it finish first
        await asyncio.sleep(1.0)
        report["loop_tasks"] = [tasks_before, await loop_tasks(http, base_url, headers)]
    if buckets_before is not None and buckets_after is not None:
        delta = {le: buckets_after[le] - buckets_before.get(le, 0) for le in buckets_after}
        report["server_first_event"] = {
            "p50_ms": histogram_quantile(0.5, delta),
            "p95_ms": histogram_quantile(0.95, delta),
            "n": int(delta.get(float("inf"), 0)),
        }
    turns = [t for session in results for t in session]
    report["summary"] = summarize(turns, wall)
    if llm_before is not None and llm_after is not None:
        calls = llm_after["requests_total"] - llm_before["requests_total"]
        report["llm"] = {
            "calls": calls,
            "calls_per_turn": round(calls / max(len(turns), 1), 2),
            "max_in_flight": llm_after["max_in_flight"],
            "disconnected": llm_after["disconnected"] - llm_before["disconnected"],
        }
    # not dataclasses.asdict: it rebuilds the Counter from (key, value) pairs, counting pairs
    report["error_samples"] = [
        {**vars(t), "events": dict(t.events)} for t in turns if t.error is not None
    ][:5]
    before, after = report["server_before"], report["server_after"]
    if before and after and before.get("rss_mb") and after.get("rss_mb"):
        report["soak"] = {
            "rss_growth_pct": round(
                (after["rss_mb"] - before["rss_mb"]) * 100 / before["rss_mb"], 1
            ),
            "open_fds": [before.get("open_fds"), after.get("open_fds")],
            "threads": [before.get("threads"), after.get("threads")],
        }
        settled = [s for s in report.get("rss_series", []) if (s["t_s"] or 0) >= SETTLE_S]
        if settled and settled[0]["rss_mb"]:
            # a leak keeps growing; caches filling stop: growth after the first minute tells them
            # apart
            report["soak"]["rss_growth_after_first_minute_pct"] = round(
                (after["rss_mb"] - settled[0]["rss_mb"]) * 100 / settled[0]["rss_mb"], 1
            )
    if before and after and before["cpu_s"] is not None and after["cpu_s"] is not None:
        report["server_cpu_ms_per_turn"] = round(
            (after["cpu_s"] - before["cpu_s"]) * 1000 / max(len(turns), 1), 1
        )
    return report


SETTLE_S = 60.0
"""When the soak's caches are taken to be warm: RSS growth is also reported from here on."""


async def _sample(
    server: ServerProcess, began: float, every_s: float, into: list[dict[str, float | None]]
) -> None:
    """The server's RSS, descriptors and threads every `every_s` seconds of the load."""
    while True:
        await asyncio.sleep(every_s)
        into.append({"t_s": round(time.perf_counter() - began, 1), **server.snapshot()})


async def healthz_burst(base_url: str, n: int, headers: dict[str, str]) -> dict[str, Any]:
    """The floor under "first event": `n` concurrent GET /healthz on new connections from this
    same client (connection set-up, HTTP parsing, one tiny reply), with no agent work at all."""
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=None)
    async with httpx.AsyncClient(limits=limits, timeout=60) as fresh:

        async def one() -> float:
            started = time.perf_counter()
            await fresh.get(f"{base_url}/healthz", headers=headers)
            return time.perf_counter() - started

        times = sorted(await asyncio.gather(*(one() for _ in range(n))))
    return {
        "p50_ms": _ms(times[len(times) // 2]),
        "p95_ms": _ms(times[max(0, int(len(times) * 0.95) - 1)]),
    }


async def loop_tasks(http: httpx.AsyncClient, base_url: str, headers: dict[str, str]) -> int | None:
    """Tasks alive on the server's event loop (its /metrics gauge), or None."""
    response = await http.get(f"{base_url}/metrics", headers=headers)
    if response.status_code != 200:
        return None
    for line in response.text.splitlines():
        if line.startswith("agentrag_event_loop_tasks "):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


async def first_event_buckets(
    http: httpx.AsyncClient, base_url: str, headers: dict[str, str]
) -> dict[float, float] | None:
    """Cumulative bucket counts of the server's own first-event histogram (request received
    -> first SSE bytes sent), read from /metrics; None when the server has no such metric."""
    response = await http.get(f"{base_url}/metrics", headers=headers)
    if response.status_code != 200:
        return None
    buckets: dict[float, float] = {}
    for line in response.text.splitlines():
        if line.startswith("agentrag_first_event_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return buckets or None


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' estimate: linear within the bucket holding the q-th observation (ms)."""
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for le in sorted(buckets):
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return round(lower * 1000, 1)
            share = (rank - below) / (count - below) if count > below else 1.0
            return round((lower + (le - lower) * share) * 1000, 1)
        lower, below = le, count
    return None


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _llm_stats(http: httpx.AsyncClient, url: str | None) -> dict[str, Any] | None:
    if url is None:
        return None
    response = await http.get(url)
    payload: dict[str, Any] = response.json()
    return payload


def render(report: dict[str, Any]) -> str:
    s = report["summary"]
    setup = report["setup"]

    def row(name: str, key: str) -> str:
        v = s[key]
        return f"| {name} | {v['p50_ms']} | {v['p95_ms']} | {v['max_ms']} | {v['n']} |"

    def mem(key: str) -> str:
        snap = report.get(key) or {}
        return f"{snap.get('rss_mb')} MB RSS, {snap.get('cpu_s')} s CPU"

    clients = (
        f"{setup['concurrency']} clients, turns for {setup['duration_s']:.0f} s (a new thread "
        f"every {setup['turns_per_client']}), effort "
        if setup.get("duration_s")
        else f"{setup['concurrency']} clients x {setup['turns_per_client']} turn(s), effort "
    )
    lines = [
        f"# Chat API under load: {setup['concurrency']} concurrent streams",
        "",
        f"`{setup['command']}`",
        "",
        clients + f"`{setup['effort']}`, scripted LLM with {setup['token_delay_ms']} ms per token, "
        f"collection `{COLLECTION}` (samples/handbook); {setup['machine']}.",
        "",
        "| latency | p50 ms | p95 ms | max ms | n |",
        "|---|---|---|---|---|",
        row("first event", "first_event"),
        row("first token", "first_token"),
        row("turn", "turn"),
        "",
    ]
    server_first = report.get("server_first_event")
    if server_first:
        lines.append(
            f"- first event inside the server (request received -> first SSE bytes sent, from "
            f"its /metrics histogram): p50 {server_first['p50_ms']} ms, p95 "
            f"{server_first['p95_ms']} ms (n {server_first['n']})"
        )
    burst = report["healthz_burst"]
    lines += [
        f"- floor: {setup['concurrency']} concurrent GET /healthz on new connections from this "
        f"client: p50 {burst['p50_ms']} ms, p95 {burst['p95_ms']} ms",
        f"- turns: {s['turns']}, ok {s['ok']}, errors {s['errors']}"
        + (f" ({s['error_kinds']})" if s["error_kinds"] else ""),
        f"- throughput: {s['turns_per_s']} turns/s over {s['wall_s']} s",
        f"- events per turn: {s['events_per_turn']}",
        f"- ok turns without tokens: {s['turns_without_tokens']}, empty answers: "
        f"{s['empty_answers']}, with citations: {s['turns_with_citations']}",
    ]
    if "llm" in report:
        llm = report["llm"]
        lines.append(
            f"- LLM calls: {llm['calls']} ({llm['calls_per_turn']} per turn), at most "
            f"{llm['max_in_flight']} at once, {llm['disconnected']} disconnected"
        )
    warm = report["warm_up"]
    lines += [
        f"- warm-up turn alone: first event {warm['first_event_ms']} ms, turn "
        f"{warm['turn_ms']} ms" + (f", error {warm['error']}" if warm["error"] else ""),
        f"- client CPU during load: {report['client_cpu_s']} s",
    ]
    if report.get("server_before"):
        lines.append(
            f"- server when ready: {mem('server_ready')}; before load: {mem('server_before')}; "
            f"after load: {mem('server_after')}"
        )
    if report.get("server_cpu_ms_per_turn") is not None:
        lines.append(f"- server CPU per turn: {report['server_cpu_ms_per_turn']} ms")
    soak = report.get("soak")
    if soak:
        lines.append(
            f"- between before and after the load: RSS {soak['rss_growth_pct']:+}%, open file "
            f"descriptors {soak['open_fds'][0]} -> {soak['open_fds'][1]}, threads "
            f"{soak['threads'][0]} -> {soak['threads'][1]}"
        )
        tasks = report.get("loop_tasks") or [None, None]
        if tasks[0] is not None:
            lines.append(f"- tasks on the server's event loop: {tasks[0]} -> {tasks[1]}")
        if soak.get("rss_growth_after_first_minute_pct") is not None:
            series = ", ".join(f"{s['t_s']:.0f} s {s['rss_mb']}" for s in report["rss_series"])
            lines.append(
                f"- RSS after the first minute of load: "
                f"{soak['rss_growth_after_first_minute_pct']:+}% (MB: {series})"
            )
    if setup.get("ready_s") is not None:
        lines.append(f"- server start to /readyz 200: {setup['ready_s']} s")
    return "\n".join(lines) + "\n"


def run_async(work: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Runs the client on uvloop when installed: 100 streams cost the client less CPU there,
    and the client shares the machine's cores with the server it measures."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--turns-per-client", type=int, default=1)
    parser.add_argument(
        "--duration-s",
        type=float,
        default=0.0,
        help="soak: each client runs turns until then (a new thread every --turns-per-client)",
    )
    parser.add_argument("--effort", choices=("low", "medium"), default="low")
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    parser.add_argument("--turn-timeout-s", type=float, default=120.0)
    parser.add_argument("--ready-timeout-s", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=REPO / "eval" / "results")
    parser.add_argument("--server-url", help="drive this running server instead of starting one")
    parser.add_argument("--server-pid", type=int, help="its process id, for RSS and CPU")
    parser.add_argument(
        "--sample-s", type=float, default=30.0, help="RSS sampling period during a soak"
    )
    parser.add_argument("--api-key", default=os.environ.get("AGENTRAG_BENCH_API_KEY"))
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and its logs")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.turns_per_client < 1:
        parser.error("--concurrency and --turns-per-client must be at least 1")

    setup: dict[str, Any] = {
        "command": " ".join(
            ["python bench/chat_load.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "concurrency": args.concurrency,
        "turns_per_client": args.turns_per_client,
        "duration_s": args.duration_s,
        "effort": args.effort,
        "token_delay_ms": args.token_delay_ms,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
    }
    if args.server_url:
        server = ServerProcess(args.server_pid) if args.server_pid else None
        report = run_async(drive(args.server_url.rstrip("/"), args, server, None))
    else:
        report = run_with_own_server(args, setup)
    report = {"setup": setup, **report}
    args.out.mkdir(parents=True, exist_ok=True)
    name = "chat-load-soak" if args.duration_s else "chat-load"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render(report)
    (args.out / f"{name}.md").write_text(text)
    print(text)


def run_with_own_server(args: argparse.Namespace, setup: dict[str, Any]) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="agentrag-chat-load-"))
    try:
        llm, llm_url = start_scripted_llm(args.token_delay_ms, root / "scripted-llm.log")
        try:
            env = {
                **os.environ,
                "AGENTRAG_DATA_DIR": str(root / "data"),
                "AGENTRAG_LLM_BASE_URL": llm_url,
                "AGENTRAG_LLM_MODEL": "scripted",
                "AGENTRAG_LLM_SUPPORTS_TOOLS": "false",
                "AGENTRAG_CONFIG": str(root / "no-agentrag.toml"),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
            }
            started = time.perf_counter()
            ingest = subprocess.run(
                [
                    venv_bin("agentrag"),
                    "ingest",
                    str(REPO / "samples" / "handbook"),
                    "--collection",
                    COLLECTION,
                    "--description",
                    "agentrag's own documentation: ingestion, configuration, architecture",
                ],
                cwd=root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            if ingest.returncode != 0:
                raise SystemExit(f"agentrag ingest failed:\n{ingest.stderr[-2000:]}")
            setup["ingest_s"] = round(time.perf_counter() - started, 1)
            port = free_port()
            base_url = f"http://{LOOPBACK}:{port}"
            command = [venv_bin("agentrag"), "serve", "--host", LOOPBACK, "--port", str(port)]
            with running(command, env, root, root / "server.log") as process:
                try:
                    ready_s = wait_ready(base_url, process, args.ready_timeout_s)
                except SystemExit:
                    log_tail = (root / "server.log").read_text(errors="replace")[-3000:]
                    print(f"server log:\n{log_tail}", file=sys.stderr)
                    raise
                setup["ready_s"] = round(ready_s, 1)
                server = ServerProcess(process.pid)
                llm_stats = llm_url.removesuffix("/v1") + "/stats"
                report = run_async(drive(base_url, args, server, llm_stats))
                if process.poll() is not None:
                    report["server_exit"] = process.returncode
        finally:
            llm.terminate()
            llm.wait(timeout=15)
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
