"""contextualize_query: turn a follow-up into a standalone query using the thread's history.

Opens every turn: stamps the turn id and start time (budgets count from here) and clears the
previous turn's answer. Only a message that reads like a follow-up (short, or leaning on a
pronoun) in a thread with history costs an LLM call, and never at effort `low`.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.runtime import Runtime

from agent.budget import exhausted, flag
from agent.chat_models import ChatModels
from agent.context import AgentContext
from agent.nodes.common import step
from agent.prompt_source import PromptSource
from agent.state import AgentState
from agent.text import message_text
from agent.usage import UsageMeter

_FOLLOW_UP = re.compile(
    r"\b(it|its|they|them|their|this|that|these|those|he|him|his|she|her|there|then|the same|"
    r"what about|how about|and\b)",
    re.IGNORECASE,
)


def looks_like_follow_up(question: str) -> bool:
    return len(question.split()) <= 4 or bool(_FOLLOW_UP.search(question))


async def contextualize_query(
    state: AgentState,
    runtime: Runtime[AgentContext],
    *,
    models: ChatModels,
    prompts: PromptSource,
    usage: UsageMeter,
) -> dict[str, Any]:
    started = time.perf_counter()
    ctx = runtime.context
    turn = uuid.uuid4().hex[:12]
    messages = state.get("messages") or []
    question = message_text(messages[-1]).strip() if messages else ""
    update: dict[str, Any] = {
        "turn": turn,
        "started_at": time.time(),
        "question": question,
        "query": question,
        "evidence": [],
        "answer": "",
        "citations": [],
        "attempts": 0,
        "error": None,
        "plan": {"mode": "single", "subqueries": [], "source": "question"},
    }
    history = [m for m in messages[:-1] if isinstance(m, HumanMessage | AIMessage)][-6:]
    note = "standalone"
    if history and looks_like_follow_up(question):
        budget = exhausted({"started_at": time.time()}, ctx, llm_calls=1)
        if ctx.effort == "low" or budget:
            previous = next(
                (message_text(m) for m in reversed(history) if isinstance(m, HumanMessage)), ""
            )
            update["query"] = f"{previous} {question}".strip()
            note = "joined with the previous question"
        else:
            template = prompts.get("contextualize")
            prompt = template.format(
                history="\n".join(
                    f"{'User' if isinstance(m, HumanMessage) else 'Assistant'}: {message_text(m)}"
                    for m in history
                ),
                question=question,
            )
            llm_messages = [SystemMessage(prompt)]
            call_started = time.perf_counter()
            try:
                reply = await (await models.aget("planner", ctx)).ainvoke(
                    llm_messages, config=template.call_config()
                )
                rewritten = message_text(reply).strip().strip('"').splitlines()
                update["query"] = (
                    rewritten[0].strip() if rewritten and rewritten[0].strip() else question
                )
                update["usage"] = [
                    await usage.aentry(
                        turn, "contextualize_query", "planner", llm_messages, reply, call_started
                    )
                ]
                note = "rewritten by the planner"
            except Exception as exc:  # the endpoint being down must not end the turn here
                update["flags"] = [flag(turn, "llm_error", f"contextualize: {exc}")]
                note = "planner failed; used the question as is"
    update["steps"] = [step(turn, "contextualize_query", started, note)]
    return update
