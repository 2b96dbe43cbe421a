"""The main agent graph, read top to bottom like its diagram.

contextualize_query -> route_query -+-> generate_answer (direct)
                                    +-> research (Send, one per sub-query) --+
                                    +-> decompose_query -+-> research (Send) -+-> collect_evidence
                                                         +-> research_chain --+
collect_evidence -> generate_answer -> reflect_answer -+-> END
                          ^                            |
                          +------- (regenerate) -------+

A branching node returns a `Command` whose destination a function of `agent/edges.py` reads from
what the node decided; `destinations` below names each one, so `get_graph()` and LangGraph Studio
draw the graph that runs.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agent.context import AgentContext
from agent.edges import RESEARCH
from agent.nodes.chain import research_chain
from agent.nodes.collect import collect_evidence
from agent.nodes.contextualize import contextualize_query
from agent.nodes.decompose import decompose_query
from agent.nodes.generate import generate_answer
from agent.nodes.reflect import reflect_answer
from agent.nodes.route import route_query
from agent.services import Services
from agent.settings import get_settings
from agent.state import AgentState, InputState, OutputState
from graphs.research import build_research_graph


def build_graph(
    services: Services, checkpointer: BaseCheckpointSaver[Any] | None = None
) -> CompiledStateGraph[Any, Any, Any, Any]:
    research = build_research_graph(services)
    builder = StateGraph(
        AgentState, context_schema=AgentContext, input_schema=InputState, output_schema=OutputState
    )
    builder.add_node(
        "contextualize_query",
        partial(
            contextualize_query,
            models=services.models,
            prompts=services.prompts,
            usage=services.usage,
        ),
    )
    builder.add_node(
        "route_query",
        partial(
            route_query,
            catalog=services.catalog,
            models=services.models,
            prompts=services.prompts,
            vectors=services.vectors,
            usage=services.usage,
        ),
        destinations=("generate_answer", "decompose_query", RESEARCH),
    )
    builder.add_node(
        "decompose_query",
        partial(
            decompose_query, models=services.models, prompts=services.prompts, usage=services.usage
        ),
        destinations=(RESEARCH, "research_chain"),
    )
    builder.add_node(RESEARCH, research)
    builder.add_node("research_chain", partial(research_chain, research=research))
    builder.add_node("collect_evidence", collect_evidence)
    builder.add_node(
        "generate_answer",
        partial(
            generate_answer,
            models=services.models,
            prompts=services.prompts,
            vectors=services.vectors,
            usage=services.usage,
        ),
    )
    builder.add_node(
        "reflect_answer",
        partial(
            reflect_answer,
            models=services.models,
            prompts=services.prompts,
            vectors=services.vectors,
            usage=services.usage,
        ),
        destinations=("generate_answer", END),
    )
    builder.add_edge(START, "contextualize_query")
    builder.add_edge("contextualize_query", "route_query")
    builder.add_edge(RESEARCH, "collect_evidence")
    builder.add_edge("research_chain", "collect_evidence")
    builder.add_edge("collect_evidence", "generate_answer")
    builder.add_edge("generate_answer", "reflect_answer")
    return builder.compile(checkpointer=checkpointer, name="agentrag")


def recursion_limit(ctx: AgentContext) -> int:
    """Explicit and generous: budgets end every turn long before LangGraph's limit would."""
    return ctx.max_steps * 2 + 25


@lru_cache(maxsize=1)
def shared_services() -> Services:
    """One `Services` per process, shared by the graph `langgraph.json` serves and the chat API
    mounted next to it: the embedded store has a single owner."""
    return Services(get_settings())


@lru_cache(maxsize=1)
def make_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    """Entry point for `langgraph.json`; the server adds persistence. Built once per process:
    the server asks for the graph on every run, and the embedded store serves one owner.
    With tracing on, every run (a turn asked in Studio) is a Langfuse trace of its own."""
    services = shared_services()
    graph = build_graph(services)
    if services.tracing.enabled:
        return graph.with_config(callbacks=[services.tracing.handler(standalone=True)])
    return graph
