"""rewrite_query: a better query after poor evidence, then retrieve again.

Below effort `high` no LLM is asked: the new query is the question's key terms plus the titles
of the most relevant chunks seen so far (names the first attempt surfaced are often exactly
what the query lacked). At `high` the planner rewrites. A query already tried means the loop
is stalling: research ends there with what it has.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from langchain_core.messages import SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.budget import flag, research_budget
from agent.chat_models import ChatModels
from agent.context import AgentContext
from agent.edges import after_rewrite
from agent.nodes.common import step
from agent.prompt_source import PromptSource
from agent.state import ResearchState
from agent.text import keywords, message_text
from agent.usage import UsageMeter


def keyword_rewrite(question: str, titles: list[str]) -> str:
    terms = keywords(question)
    extra = [t for t in titles if t and t.lower() not in question.lower()][:2]
    return " ".join([*terms, *extra])


async def rewrite_query(
    state: ResearchState,
    runtime: Runtime[AgentContext],
    *,
    models: ChatModels,
    prompts: PromptSource,
    usage: UsageMeter,
) -> Command[Literal["retrieve_chunks", "finish_research"]]:
    """A new query, or `stalled` when it repeats one already tried; `after_rewrite` reads it."""
    started = time.perf_counter()
    ctx = runtime.context
    turn = state["turn"]
    titles = list(dict.fromkeys(c["title"] for c in state.get("candidates") or []))
    original = state["query"]
    new_query = keyword_rewrite(original, titles)
    update: dict[str, Any] = {"rewrites": state.get("rewrites", 0) + 1}
    how = "keywords"
    if ctx.effort == "high" and not research_budget(state, ctx, 1):
        template = prompts.get("rewrite")
        prompt = template.format(
            question=state["question"], query=original, terms=", ".join(titles[:5])
        )
        messages = [SystemMessage(prompt)]
        call_started = time.perf_counter()
        try:
            reply = await (await models.aget("planner", ctx)).ainvoke(
                messages, config=template.call_config()
            )
            lines = message_text(reply).strip().strip('"').splitlines()
            if lines and lines[0].strip():
                new_query, how = lines[0].strip(), "planner"
            update["usage"] = [
                await usage.aentry(turn, "rewrite_query", "planner", messages, reply, call_started)
            ]
        except Exception as exc:
            update["flags"] = [flag(turn, "llm_error", f"rewrite: {exc}")]
    tried = {q.lower() for q in state.get("queries_tried") or []}
    if not new_query.strip() or new_query.lower() in tried:
        update["stalled"] = True
        update["flags"] = [
            *update.get("flags", []),
            flag(turn, "stalled", f"rewrite repeated {new_query!r}"),
        ]
        update["steps"] = [step(turn, "rewrite_query", started, "stalled: query already tried")]
        return Command(update=update, goto=after_rewrite(update))
    update["query"] = new_query
    runtime.stream_writer(
        {"type": "rewrite", "index": state["index"], "query": new_query, "how": how}
    )
    update["steps"] = [step(turn, "rewrite_query", started, f"{how}: {new_query!r}")]
    return Command(update=update, goto=after_rewrite(update))
