"""The per-sub-query research subgraph: retrieve, grade, rewrite and retry, finish.

retrieve_chunks -> grade_evidence -+-> finish_research -> END
        ^                          +-> rewrite_query -+-> retrieve_chunks (retry)
        +---------------------------------------------+-> finish_research (stalled)
"""

from __future__ import annotations

from functools import partial
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agent.context import AgentContext
from agent.nodes.finish import finish_research
from agent.nodes.grade import grade_evidence
from agent.nodes.retrieve import retrieve_chunks
from agent.nodes.rewrite import rewrite_query
from agent.services import Services
from agent.state import ResearchInput, ResearchOutput, ResearchState


def build_research_graph(services: Services) -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(
        ResearchState,
        context_schema=AgentContext,
        input_schema=ResearchInput,
        output_schema=ResearchOutput,
    )
    builder.add_node("retrieve_chunks", partial(retrieve_chunks, catalog=services.catalog))
    builder.add_node(
        "grade_evidence",
        partial(
            grade_evidence,
            catalog=services.catalog,
            models=services.models,
            prompts=services.prompts,
            vectors=services.vectors,
            usage=services.usage,
        ),
        destinations=("rewrite_query", "finish_research"),
    )
    builder.add_node(
        "rewrite_query",
        partial(
            rewrite_query, models=services.models, prompts=services.prompts, usage=services.usage
        ),
        destinations=("retrieve_chunks", "finish_research"),
    )
    builder.add_node("finish_research", finish_research)
    builder.add_edge(START, "retrieve_chunks")
    builder.add_edge("retrieve_chunks", "grade_evidence")
    builder.add_edge("finish_research", END)
    return builder.compile(name="research")
