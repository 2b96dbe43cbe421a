"""Graph state. Lists that parallel branches append to use reducers; per-turn lists keep only
the entries of the newest turn, so a thread's checkpoint never mixes two turns' evidence.

Entries are plain dicts (TypedDicts): they serialise into checkpoints and show as JSON in Studio.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

RouteKind = Literal["direct", "retrieve", "decompose"]
Grade = Literal["correct", "ambiguous", "incorrect"]


class Evidence(TypedDict):
    id: str
    collection: str
    doc_id: str
    title: str
    source: str
    heading_path: list[str]
    chunk_index: int
    text: str
    retrieval_score: float
    relevance: float
    rank: int


PREVIOUS_HOP = "{previous}"
"""In a sequential plan, where a later hop's query takes what the earlier hop found."""


class SubQuery(TypedDict):
    index: int
    query: str
    depends_on: NotRequired[int | None]


class Research(TypedDict):
    """What one sub-query found: its final query, attempts, grade and kept evidence."""

    turn: str
    index: int
    query: str
    queries_tried: list[str]
    grade: Grade
    evidence: list[Evidence]
    dropped: int
    fallback: bool


class Route(TypedDict):
    kind: RouteKind
    collections: list[str]
    scores: dict[str, float]
    reason: str


class Plan(TypedDict):
    mode: Literal["single", "parallel", "sequential"]
    subqueries: list[SubQuery]
    source: Literal["question", "llm", "heuristic"]


class Citation(TypedDict):
    n: int
    id: str
    doc_id: str
    title: str
    source: str
    chunk_index: int
    collection: str


class ClaimIssue(TypedDict):
    """A fact of an answer sentence its cited evidence does not hold (see `agent.claims`)."""

    kind: Literal["number", "name", "negation", "comparison"]
    claim: str
    detail: str


class SentenceVerdict(TypedDict):
    sentence: str
    cited: list[int]
    support: float
    supported: bool
    problems: NotRequired[list[ClaimIssue]]
    """Numbers, names, negation or comparisons the cited evidence does not hold."""
    recited: NotRequired[int]
    """The evidence number the sentence was cited to instead: its claim holds there, not in the
    chunk it cited."""


class PartVerdict(TypedDict):
    part: str
    covered: bool
    kind: NotRequired[str]
    """`question`, `item`, `subquery`; `focus` when the answer stopped at what a one-part
    question goes through (the part is then the question)."""


class Verdict(TypedDict):
    grounded: bool
    answers_question: bool
    sentences: list[SentenceVerdict]
    method: Literal["similarity", "llm"]
    action: Literal["accept", "regenerate", "give_up"]
    parts: NotRequired[list[PartVerdict]]
    """The question's parts (several questions, compared items, parallel sub-questions) and
    whether a supported sentence addresses each; absent for a one-part question."""
    revised: NotRequired[bool]
    """The answer was changed after the last attempt: unsupported claims removed or marked,
    missing parts said to be missing."""


class UsageEntry(TypedDict):
    turn: str
    node: str
    role: str
    input_tokens: int
    output_tokens: int
    model_ms: float


class StepEntry(TypedDict):
    turn: str
    node: str
    ms: float
    note: NotRequired[str]


def keep_latest_turn(current: list[Any] | None, update: list[Any] | None) -> list[Any]:
    """Append, then keep only entries of the newest turn (the last entry's `turn`)."""
    items = list(current or []) + list(update or [])
    if not items:
        return []
    latest = items[-1]["turn"]
    return [item for item in items if item["turn"] == latest]


class InputState(TypedDict):
    """What a caller sends: the conversation, newest message last."""

    messages: Annotated[list[AnyMessage], add_messages]


class AgentState(InputState, total=False):
    turn: str
    started_at: float
    question: str
    query: str
    route: Route
    plan: Plan
    research: Annotated[list[Research], keep_latest_turn]
    evidence: list[Evidence]
    answer: str
    citations: list[Citation]
    verdict: Verdict
    attempts: int
    usage: Annotated[list[UsageEntry], keep_latest_turn]
    steps: Annotated[list[StepEntry], keep_latest_turn]
    flags: Annotated[list[dict[str, str]], keep_latest_turn]
    error: dict[str, str] | None


class OutputState(TypedDict, total=False):
    messages: list[AnyMessage]
    answer: str
    citations: list[Citation]
    verdict: Verdict
    evidence: list[Evidence]
    route: Route
    plan: Plan
    flags: list[dict[str, str]]
    usage: list[UsageEntry]
    steps: list[StepEntry]
    research: list[Research]
    turn: str
    error: dict[str, str] | None


class ResearchInput(TypedDict):
    """What `Send` hands one sub-query's research."""

    turn: str
    started_at: float
    question: str
    index: int
    query: str
    collections: list[str]
    llm_calls_before: int


class ResearchState(ResearchInput, total=False):
    queries_tried: list[str]
    candidates: list[Evidence]
    kept: list[Evidence]
    grade: Grade
    dropped: int
    rewrites: int
    retry: bool
    fallback: bool
    stalled: bool
    usage: Annotated[list[UsageEntry], keep_latest_turn]
    steps: Annotated[list[StepEntry], keep_latest_turn]
    flags: Annotated[list[dict[str, str]], keep_latest_turn]
    research: Annotated[list[Research], keep_latest_turn]


class ResearchOutput(TypedDict, total=False):
    research: list[Research]
    usage: list[UsageEntry]
    steps: list[StepEntry]
    flags: list[dict[str, str]]
