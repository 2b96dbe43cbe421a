"""Prometheus metrics of the chat server, in a registry per app so tests see only their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
