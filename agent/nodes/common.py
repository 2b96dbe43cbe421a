"""Small helpers shared by nodes: step records and reading the conversation."""

from __future__ import annotations

import time
from collections.abc import Sequence

from langchain_core.messages import AnyMessage, HumanMessage

from agent.state import StepEntry


def step(turn: str, node: str, started: float, note: str = "") -> StepEntry:
    entry: StepEntry = {
        "turn": turn,
        "node": node,
        "ms": round((time.perf_counter() - started) * 1000, 2),
    }
    if note:
        entry["note"] = note
    return entry


def message_text(message: AnyMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
    return " ".join(part for part in parts if part)


def last_question(messages: Sequence[AnyMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message_text(message).strip()
    return ""
