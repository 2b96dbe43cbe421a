"""decompose_query: split a complex question into sub-queries.

Independent parts (comparisons, several questions) run in parallel through `Send`; a bridge
question ("the director of the film that ...") runs hop by hop, each later hop's query filled
with what the earlier hop found. The planner writes the plan with structured output when the
model can; when it cannot, fails, or returns something unusable, a deterministic plan takes
over, so a malformed model reply never ends the turn.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import Command
from pydantic import BaseModel, Field

from agent.budget import exhausted, flag
from agent.chat_models import ChatModels
from agent.context import AgentContext
from agent.edges import after_decompose
from agent.nodes.common import step
from agent.prompt_source import PromptSource
from agent.state import PREVIOUS_HOP, AgentState, Plan, SubQuery
from agent.text import COMPARISON
from agent.usage import UsageMeter

MIN_SUBQUESTION_WORDS = 4
"""Shorter parts ("Which year and which conference ...") are fragments of one question."""


class Decomposition(BaseModel):
    """Structured output asked of the planner."""

    mode: Literal["parallel", "sequential"] = Field(
        description="parallel: independent sub-questions; "
        "sequential: later ones need earlier answers"
    )
    subquestions: list[str] = Field(description="Simple search questions, in order")


def heuristic_plan(question: str, max_subqueries: int) -> Plan:
    """No-LLM plan: split several questions; pair up comparisons; otherwise two hops."""
    parts = [
        p.strip(" ,;")
        for p in re.split(r"\?\s+|\band (?=(?:what|who|when|where|why|how|which)\b)", question)
        if p.strip(" ,;")
    ]
    if len(parts) > 1 and min(len(p.split()) for p in parts) >= MIN_SUBQUESTION_WORDS:
        subs = [p if p.endswith("?") else p + "?" for p in parts][:max_subqueries]
        return _plan("parallel", subs, "heuristic")
    options = re.search(r"[,:]?\s*([^,?]+?)\s+or\s+([^,?]+?)\s*\??$", question)
    if options and COMPARISON.search(question):
        stem = question[: options.start()].strip()
        subs = [f"{stem} {options.group(1)}".strip(), f"{stem} {options.group(2)}".strip()]
        return _plan("parallel", subs[:max_subqueries], "heuristic")
    # a bridge: search the question, then search again with what the first hop found
    return _plan(
        "sequential", [question, f"{question} {PREVIOUS_HOP}"][:max_subqueries], "heuristic"
    )


def _plan(mode: Literal["parallel", "sequential"], subs: list[str], source: Any) -> Plan:
    subqueries: list[SubQuery] = [
        {"index": i, "query": q, "depends_on": i - 1 if mode == "sequential" and i else None}
        for i, q in enumerate(subs)
    ]
    return {"mode": mode, "subqueries": subqueries, "source": source}


def validate(decomposition: Decomposition, question: str, max_subqueries: int) -> Plan | None:
    seen: set[str] = set()
    subs: list[str] = []
    for raw in decomposition.subquestions:
        text = " ".join(str(raw).split())
        if len(text) < 3 or text.lower() in seen:
            continue
        seen.add(text.lower())
        subs.append(text)
    if not subs:
        return None
    subs = subs[:max_subqueries]
    if decomposition.mode == "sequential":
        subs = [
            s if i == 0 or PREVIOUS_HOP in s else f"{s} {PREVIOUS_HOP}" for i, s in enumerate(subs)
        ]
    if len(subs) == 1 and subs[0].lower() != question.lower():
        subs = [question, *subs][:max_subqueries] if decomposition.mode == "parallel" else subs
    return _plan(decomposition.mode, subs, "llm")


async def decompose_query(
    state: AgentState,
    runtime: Runtime[AgentContext],
    *,
    models: ChatModels,
    prompts: PromptSource,
    usage: UsageMeter,
) -> Command[Literal["research", "research_chain"]]:
    """Records the plan; `after_decompose` runs its sub-queries in parallel or hop by hop."""
    started = time.perf_counter()
    ctx = runtime.context
    turn, question = state["turn"], state["query"]
    update: dict[str, Any] = {}
    plan: Plan | None = None
    note = "heuristic plan"
    if models.supports_tools and not exhausted(state, ctx, llm_calls=1):
        template = prompts.get("decompose")
        prompt = template.format(question=question, max_subqueries=ctx.max_subqueries)
        messages = [SystemMessage(prompt), HumanMessage(question)]
        call_started = time.perf_counter()
        try:
            model = (await models.aget("planner", ctx)).with_structured_output(
                Decomposition, method="function_calling", include_raw=True
            )
            result: Any = await model.ainvoke(messages, config=template.call_config())
            update["usage"] = [
                await usage.aentry(
                    turn, "decompose_query", "planner", messages, result.get("raw"), call_started
                )
            ]
            parsed = result.get("parsed")
            if isinstance(parsed, Decomposition):
                plan = validate(parsed, question, ctx.max_subqueries)
            if plan is None:
                update["flags"] = [
                    flag(
                        turn,
                        "planner_output_invalid",
                        str(result.get("parsing_error") or "empty plan"),
                    )
                ]
            else:
                note = f"planner: {plan['mode']}"
        except Exception as exc:
            update["flags"] = [flag(turn, "planner_output_invalid", f"{type(exc).__name__}: {exc}")]
    if plan is None:
        plan = heuristic_plan(question, ctx.max_subqueries)
    update["plan"] = plan
    update["steps"] = [step(turn, "decompose_query", started, note)]
    return Command(update=update, goto=after_decompose(state, update))
