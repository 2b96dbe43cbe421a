"""The step record every node appends: which node ran, for how long, and what it decided."""

from __future__ import annotations

import time

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
