"""Per-turn budgets: every loop in the graph asks here before spending another step or LLM call.

When a budget runs out the turn still ends normally, with the best answer so far and an
`incomplete` flag that names the budget, never with an exception or a recursion-limit crash.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from agent.context import AgentContext


def this_turn(state: Mapping[str, Any], key: str) -> list[Any]:
    """Entries of a per-turn list that belong to the running turn (older ones may linger)."""
    turn = state.get("turn")
    return [item for item in state.get(key) or [] if item.get("turn") == turn]


def llm_calls_used(state: Mapping[str, Any]) -> int:
    return len(this_turn(state, "usage"))


def tokens_used(state: Mapping[str, Any]) -> int:
    return sum(u["input_tokens"] + u["output_tokens"] for u in this_turn(state, "usage"))


def steps_used(state: Mapping[str, Any]) -> int:
    return len(this_turn(state, "steps"))


def exhausted(state: Mapping[str, Any], ctx: AgentContext, *, llm_calls: int = 0) -> str | None:
    """The name of the first budget that the next action (needing `llm_calls`) would exceed."""
    return over_budget(
        ctx,
        steps=steps_used(state),
        llm_calls=llm_calls_used(state),
        tokens=tokens_used(state),
        started_at=state.get("started_at"),
        needed_llm_calls=llm_calls,
    )


def over_budget(
    ctx: AgentContext,
    *,
    steps: int,
    llm_calls: int,
    tokens: int,
    started_at: float | None,
    needed_llm_calls: int = 0,
) -> str | None:
    if steps >= ctx.max_steps:
        return "max_steps"
    if needed_llm_calls and llm_calls + needed_llm_calls > ctx.max_llm_calls:
        return "max_llm_calls"
    if needed_llm_calls and tokens >= ctx.max_tokens:
        return "max_tokens"
    if started_at is not None and time.time() - float(started_at) >= ctx.deadline_s:
        return "deadline"
    return None


def flag(turn: str, name: str, reason: str) -> dict[str, str]:
    return {"turn": turn, "flag": name, "reason": reason}


def incomplete(turn: str, budget: str, where: str) -> dict[str, str]:
    return flag(turn, "incomplete", f"{budget} reached in {where}")


def research_budget(state: Mapping[str, Any], ctx: AgentContext, llm_calls: int) -> str | None:
    """Budgets as seen from one sub-query: the turn's LLM calls before it, plus its own."""
    own = state.get("usage") or []
    return over_budget(
        ctx,
        steps=len(state.get("steps") or []),
        llm_calls=state.get("llm_calls_before", 0) + len(own),
        tokens=sum(u["input_tokens"] + u["output_tokens"] for u in own),
        started_at=state["started_at"],
        needed_llm_calls=llm_calls,
    )
