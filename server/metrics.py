"""Prometheus metrics of the chat server, in a registry per app so tests see only their own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.resilience import STATE_VALUES, breakers

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.turn_seconds = Histogram(
            "agentrag_turn_seconds",
            "Chat turn latency, request to final event.",
            ["effort"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_token_seconds = Histogram(
            "agentrag_time_to_first_token_seconds",
            "Time from request to the first answer token.",
            ["effort"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.turns = Counter(
            "agentrag_turns_total", "Chat turns by outcome.", ["outcome"], registry=self.registry
        )
        self.llm_calls = Counter(
            "agentrag_llm_calls_total", "LLM calls made by chat turns.", registry=self.registry
        )
        self.tokens = Counter(
            "agentrag_llm_tokens_total",
            "LLM tokens of chat turns.",
            ["direction"],
            registry=self.registry,
        )
        self.errors = Counter(
            "agentrag_errors_total", "Errors by code.", ["code"], registry=self.registry
        )
        self.first_event_seconds = Histogram(
            "agentrag_first_event_seconds",
            "Time from a chat request reaching the server to its first SSE bytes leaving it.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5),
            registry=self.registry,
        )
        self.runs_in_flight = Gauge(
            "agentrag_runs_in_flight", "Chat turns running now.", registry=self.registry
        )
        self.runs_waiting = Gauge(
            "agentrag_runs_waiting",
            "Chat turns in line for a free slot (max_concurrent_turns); counted in flight too.",
            registry=self.registry,
        )
        self.registry.register(CircuitCollector())
        self.registry.register(TaskCollector())


class TaskCollector(Collector):
    """Tasks alive on the server's event loop, read at each scrape: a count that keeps rising
    under steady load is a task leak (`bench/chat_load.py` reads it before and after)."""

    def collect(self) -> Iterator[Metric]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped from outside the loop (a test's registry read)
            return
        yield GaugeMetricFamily(
            "agentrag_event_loop_tasks", "Tasks alive on the server's event loop.", value=tasks
        )


class CircuitCollector(Collector):
    """The process's circuit breakers (agent/resilience.py), read at each scrape."""

    def collect(self) -> Iterator[Metric]:
        labels = ["dependency", "endpoint"]
        state = GaugeMetricFamily(
            "agentrag_dependency_circuit_state",
            "Circuit of each remote dependency endpoint: 0 closed, 1 half open, 2 open.",
            labels=labels,
        )
        failures = CounterMetricFamily(
            "agentrag_dependency_failures",
            "Failed calls to a dependency (after retries).",
            labels=labels,
        )
        retries = CounterMetricFamily(
            "agentrag_dependency_retries", "Calls retried after a failure.", labels=labels
        )
        rejected = CounterMetricFamily(
            "agentrag_dependency_rejected",
            "Calls refused at once because the circuit was open.",
            labels=labels,
        )
        for snap in breakers():
            key = [snap.dependency, snap.endpoint]
            state.add_metric(key, STATE_VALUES[snap.state])
            failures.add_metric(key, snap.failures_total)
            retries.add_metric(key, snap.retries_total)
            rejected.add_metric(key, snap.rejected_total)
        yield from (state, failures, retries, rejected)
