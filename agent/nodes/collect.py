"""collect_evidence: merge every sub-query's kept chunks into the numbered final evidence.

Round-robin across sub-queries (best first within each), so no sub-question is crowded out,
deduplicated by chunk, capped at `max_evidence`.
"""

from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.budget import flag, this_turn
from agent.context import AgentContext
from agent.nodes.common import step
from agent.state import AgentState, Evidence, Research


def interleave(research: list[Research], limit: int) -> list[Evidence]:
    queues = [list(r["evidence"]) for r in sorted(research, key=lambda r: r["index"])]
    out: list[Evidence] = []
    seen: set[str] = set()
    while len(out) < limit and any(queues):
        for queue in queues:
            while queue:
                item = queue.pop(0)
                if item["id"] not in seen:
                    seen.add(item["id"])
                    out.append(item)
                    break
            if len(out) >= limit:
                break
    return out


async def collect_evidence(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    started = time.perf_counter()
    ctx = runtime.context
    research = this_turn(state, "research")
    evidence = interleave(research, ctx.max_evidence)
    update: dict[str, Any] = {"evidence": evidence}
    if research and all(r["fallback"] for r in research):
        update["flags"] = [
            flag(state["turn"], "weak_evidence", "no sub-query found relevant evidence")
        ]
    update["steps"] = [step(state["turn"], "collect_evidence", started, f"{len(evidence)} chunks")]
    return update
