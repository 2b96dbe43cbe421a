"""LLM usage accounting: tokens in and out and model time for each call a node makes.

Budgets count tokens, so a model that reports no usage (the bundled one, when streaming) has
its prompt and reply counted with the bundled tokenizer instead.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from agent.state import UsageEntry
from retrievers.chunking import TokenCounter, bundled_token_counter

TOKEN_CACHE_SIZE = 20_000
"""Token counts of paragraphs kept (evidence blocks recur when an answer is regenerated and
when a follow-up retrieves the same chunks)."""


class UsageMeter:
    """Makes the usage entries nodes append to the state; one per process, its paragraph token
    counts cached and shared by concurrent turns."""

    def __init__(self, counter: TokenCounter | None = None) -> None:
        self._counter = counter
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Counted paragraph by paragraph (split at blank lines), each paragraph once: the
        tokenizer splits at whitespace anyway, so the sum is the count of the whole text."""
        pieces = [p for text in texts for p in text.split("\n\n") if p]
        if not pieces:
            return 0
        with self._lock:
            known = {p: self._counts[p] for p in pieces if p in self._counts}
        missing = list(dict.fromkeys(p for p in pieces if p not in known))
        if missing:
            counter = self._counter or bundled_token_counter()
            fresh = dict(zip(missing, counter.count(missing), strict=True))
            with self._lock:
                for piece, tokens in fresh.items():
                    self._counts[piece] = tokens
                    self._counts.move_to_end(piece)
                while len(self._counts) > TOKEN_CACHE_SIZE:
                    self._counts.popitem(last=False)
            known.update(fresh)
        return sum(known[p] for p in pieces)

    def entry(
        self,
        turn: str,
        node: str,
        role: str,
        messages: Sequence[BaseMessage],
        reply: Any,
        started: float,
        finished: float | None = None,
    ) -> UsageEntry:
        """Usage as the model reported it, else counted; model time measured around the call
        (`started` to `finished`, default now, before any counting: counting is the agent's
        work)."""
        model_ms = round(((finished or time.perf_counter()) - started) * 1000, 2)
        reported = reported_usage(reply)
        if reported is not None:
            tokens_in, tokens_out = reported
        else:
            tokens_in = self.count_tokens([str(m.content) for m in messages])
            text = reply.content if isinstance(reply, BaseMessage) else str(reply or "")
            tokens_out = self.count_tokens([str(text)])
        return {
            "turn": turn,
            "node": node,
            "role": role,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "model_ms": model_ms,
        }

    async def aentry(
        self,
        turn: str,
        node: str,
        role: str,
        messages: Sequence[BaseMessage],
        reply: Any,
        started: float,
        finished: float | None = None,
    ) -> UsageEntry:
        """`entry` off the event loop when it has to count (counting may load the tokenizer
        from disk); usage the model reported is read in place."""
        finished = finished or time.perf_counter()
        if reported_usage(reply) is not None:
            return self.entry(turn, node, role, messages, reply, started, finished)
        return await asyncio.to_thread(
            self.entry, turn, node, role, messages, reply, started, finished
        )


def reported_usage(reply: Any) -> tuple[int, int] | None:
    meta = getattr(reply, "usage_metadata", None) if isinstance(reply, AIMessage) else None
    if meta and (meta.get("input_tokens") or meta.get("output_tokens")):
        return int(meta.get("input_tokens", 0)), int(meta.get("output_tokens", 0))
    return None
