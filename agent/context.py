"""Per-request configuration: what a caller (CLI, API, LangGraph Studio) may set for one run.

Read in nodes through `runtime.context`. Every field carries a description so Studio shows it.
Effort tiers trade LLM calls for quality: `low` never asks an LLM to plan, grade or judge;
`medium` lets the planner decompose and rewrite when the model can do structured output;
`high` adds the LLM judge for ambiguous evidence and for reflection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

Effort = Literal["low", "medium", "high"]
EFFORTS: tuple[Effort, ...] = get_args(Effort)


def _doc(text: str) -> dict[str, str]:
    return {"description": text}


@dataclass(kw_only=True)
class AgentContext:
    effort: Effort = field(default="medium", metadata=_doc("low | medium | high: LLM calls spent."))
    collections: list[str] | None = field(
        default=None, metadata=_doc("Collections the agent may search (default: all).")
    )
    tenant: str = field(default="public", metadata=_doc("Tenant whose documents are searched."))
    groups: list[str] | None = field(
        default=None,
        metadata=_doc(
            "The reader's groups: documents given groups are searched only by their members "
            "(default: no restriction)."
        ),
    )
    generator_model: str | None = field(
        default=None, metadata=_doc("Model that writes answers (default: settings).")
    )
    planner_model: str | None = field(
        default=None, metadata=_doc("Model for decomposition and rewrites (default: settings).")
    )
    judge_model: str | None = field(
        default=None, metadata=_doc("Model for the LLM judge at effort high (default: settings).")
    )
    k: int = field(default=10, metadata=_doc("Chunks kept per sub-query after grading."))
    candidates: int = field(default=24, metadata=_doc("Chunks retrieved before reranking."))
    linked_docs: int = field(
        default=4,
        metadata=_doc("Chunks of documents whose titles the query or top chunks name (not low)."),
    )
    link_from: int = field(
        default=6, metadata=_doc("Top chunks per collection whose named titles are followed.")
    )
    max_evidence: int = field(default=14, metadata=_doc("Chunks given to the answer writer."))
    max_subqueries: int = field(default=4, metadata=_doc("Most sub-questions per turn."))
    max_rewrites: int = field(default=1, metadata=_doc("Query rewrites per sub-question."))
    max_steps: int = field(default=40, metadata=_doc("Most graph steps per turn."))
    max_llm_calls: int = field(default=8, metadata=_doc("Most LLM calls per turn."))
    max_tokens: int = field(default=12_000, metadata=_doc("Most LLM tokens per turn."))
    deadline_s: float = field(default=120.0, metadata=_doc("Wall-clock budget per turn."))
    answer_max_tokens: int = field(default=400, metadata=_doc("Longest answer, in tokens."))
    relevance_threshold: float = field(
        default=0.45, metadata=_doc("Rerank score at or above which a chunk is relevant.")
    )
    ambiguous_threshold: float = field(
        default=0.10, metadata=_doc("Below this a chunk is irrelevant; between: ambiguous.")
    )
    support_threshold: float = field(
        default=0.55, metadata=_doc("Similarity an answer sentence needs to its evidence.")
    )
    route_threshold: float = field(
        default=0.25, metadata=_doc("Collection similarity below which a query is chit-chat.")
    )
