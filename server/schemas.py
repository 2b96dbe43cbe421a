"""What crosses the chat API's boundary: requests, responses and the SSE events of a turn.

The event models are the documentation of the stream (they appear in the OpenAPI schema); the
server sends plain dicts built by the agent and checked against these shapes in tests.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent.context import Effort

_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(value: Any) -> str | None:
    """The first text in `value` (nested lists and dicts too) that holds a lone surrogate: JSON
    can carry one ("\\ud800"), but it is not a character and nothing downstream (SQLite,
    PostgreSQL, the tokenizer, a trace) can store or encode it."""
    if isinstance(value, str):
        return value if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list):
        for item in value:
            if (found := lone_surrogate(item)) is not None:
                return found
    return None


class RequestModel(BaseModel):
    """A request body: every text in it must be valid Unicode (422, not a 500 further on)."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if lone_surrogate(data) is not None:
            raise ValueError(
                "the request holds a lone UTF-16 surrogate (such as \\ud800), which is not a "
                "character; send valid Unicode"
            )
        return data


class ChatRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(description="The user's message. Must contain text.")
    thread_id: str | None = Field(
        default=None, description="Continue this thread; omitted: a new thread is created."
    )
    collections: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Collections to search (default: all the caller may use); not empty.",
    )
    effort: Effort | None = Field(default=None, description="low | medium | high (default medium).")
    stream: bool = Field(default=True, description="Server-Sent Events (true) or one JSON reply.")
    user: str | None = Field(
        default=None,
        max_length=200,
        description="Who is asking, recorded as the trace's user (default: the key's tenant).",
    )
    trace: bool = Field(
        default=True,
        description="false: no Langfuse trace for this turn (when tracing is on at all).",
    )

    @field_validator("message")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message is empty")
        return value


class FeedbackRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    trace_id: str | None = Field(
        default=None, max_length=64, description="The turn's trace id (`done.trace_id`)."
    )
    run_id: str | None = Field(
        default=None, max_length=64, description="Or its run id (the same value)."
    )
    thumbs: Literal["up", "down"] | None = Field(default=None, description="up or down.")
    score: float | None = Field(
        default=None, ge=-1e6, le=1e6, description="Or a number (e.g. 1-5 stars)."
    )
    comment: str | None = Field(default=None, max_length=4_000, description="Free text.")
    name: str | None = Field(
        default=None,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Score name in Langfuse (default `user_feedback`).",
    )

    @model_validator(mode="after")
    def _one_each(self) -> FeedbackRequest:
        if (self.trace_id is None) == (self.run_id is None):
            raise ValueError("give the turn's trace_id or its run_id (one of them)")
        if (self.thumbs is None) == (self.score is None):
            raise ValueError("give thumbs (up or down) or a score (one of them)")
        return self


class FeedbackResponse(BaseModel):
    trace_id: str
    name: str
    value: float
    url: str | None = Field(default=None, description="The trace in Langfuse's web UI.")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


# -- SSE events, in the order they appear in a turn -------------------------------------------
class RunEvent(BaseModel):
    type: Literal["run"] = "run"
    run_id: str
    thread_id: str


class RouteEvent(BaseModel):
    type: Literal["route"] = "route"
    kind: str = Field(description="direct | retrieve | decompose")
    collections: list[str]
    scores: dict[str, float] = Field(description="Similarity of the query to each collection.")
    reason: str


class SubQueryModel(BaseModel):
    index: int
    query: str
    depends_on: int | None = None


class PlanEvent(BaseModel):
    type: Literal["plan"] = "plan"
    mode: Literal["single", "parallel", "sequential"]
    subqueries: list[SubQueryModel]
    source: str = Field(description="question | llm | heuristic")


class RetrievedChunkModel(BaseModel):
    id: str
    title: str
    collection: str
    relevance: float
    retrieval_score: float


class RetrievalEvent(BaseModel):
    type: Literal["retrieval"] = "retrieval"
    index: int = Field(description="Sub-query index.")
    query: str
    chunks: list[RetrievedChunkModel]


class GradeEvent(BaseModel):
    type: Literal["grade"] = "grade"
    index: int
    grade: Literal["correct", "ambiguous", "incorrect"]
    kept: int
    dropped: int


class RewriteEvent(BaseModel):
    type: Literal["rewrite"] = "rewrite"
    index: int
    query: str
    how: str


class TokenEvent(BaseModel):
    type: Literal["token"] = "token"
    text: str = Field(description="Answer text only; planner and judge output never streams.")


class CitationModel(BaseModel):
    n: int = Field(description="The number cited inline as [n].")
    id: str = Field(description="Chunk id.")
    doc_id: str
    title: str
    source: str
    chunk_index: int
    collection: str
    text: str = Field(default="", description="The cited chunk's text.")


class CitationEvent(CitationModel):
    type: Literal["citation"] = "citation"


class SentenceVerdictModel(BaseModel):
    sentence: str
    cited: list[int]
    support: float
    supported: bool


class VerdictEvent(BaseModel):
    type: Literal["verdict"] = "verdict"
    grounded: bool
    answers_question: bool
    sentences: list[SentenceVerdictModel]
    method: str
    action: Literal["accept", "regenerate", "give_up"] = Field(
        description="`regenerate`: the answer streamed so far is replaced by the next tokens."
    )


class FlagEvent(BaseModel):
    type: Literal["flag"] = "flag"
    flag: str = Field(description="e.g. incomplete, llm_error, fallback")
    reason: str


class Usage(BaseModel):
    llm_calls: int
    input_tokens: int
    output_tokens: int
    model_ms: float


class Timings(BaseModel):
    total_ms: float
    first_token_ms: float | None


class DoneEvent(BaseModel):
    """Also the body of a non-streaming `/v1/chat` reply."""

    model_config = ConfigDict(extra="allow")

    type: Literal["done"] = "done"
    run_id: str
    thread_id: str
    answer: str
    citations: list[CitationModel]
    verdict: dict[str, Any] | None
    route: dict[str, Any] | None
    plan: dict[str, Any] | None
    flags: list[dict[str, Any]]
    error: dict[str, str] | None
    usage: Usage
    timings: Timings
    steps: list[dict[str, Any]]
    trace_id: str | None = Field(
        default=None, description="The turn's Langfuse trace; null when the turn is not traced."
    )
    trace_url: str | None = Field(default=None, description="The trace in Langfuse's web UI.")


class ErrorEvent(BaseModel):
    type: Literal["error"] = "error"
    code: str = Field(
        description="e.g. cancelled, llm_unavailable, llm_failed (after the evidence quoted in "
        "`token` events), internal_error"
    )
    message: str


class QueuedEvent(BaseModel):
    """The turn waits for a free slot (the server runs `max_concurrent_turns` at once); sent
    again whenever its place changes."""

    type: Literal["queued"] = "queued"
    position: int = Field(description="1: next to start.")
    running: int = Field(description="Turns running now.")


STREAM_EVENTS: list[type[BaseModel]] = [
    RunEvent,
    QueuedEvent,
    RouteEvent,
    PlanEvent,
    RetrievalEvent,
    GradeEvent,
    RewriteEvent,
    TokenEvent,
    CitationEvent,
    VerdictEvent,
    FlagEvent,
    DoneEvent,
    ErrorEvent,
]


# -- threads, collections, runs --------------------------------------------------------------
class ThreadModel(BaseModel):
    thread_id: str
    title: str
    created_at: float
    updated_at: float


class ThreadList(BaseModel):
    threads: list[ThreadModel]


class CreateThreadRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(default="", max_length=200)


class ThreadMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str
    citations: list[CitationModel] = Field(default_factory=list)


class ThreadHistory(ThreadModel):
    messages: list[ThreadMessage]


class CancelResponse(BaseModel):
    run_id: str
    cancelled: bool


class CollectionModel(BaseModel):
    name: str
    description: str
    points: int | None = None


class CollectionList(BaseModel):
    collections: list[CollectionModel]


class UploadReport(BaseModel):
    collection: str
    files: list[str]
    documents: int
    chunks_added: int
    unchanged: int
    skipped: list[dict[str, str]]


class ReadyReport(BaseModel):
    ready: bool
    checks: dict[str, str]
    circuits: dict[str, str] = Field(
        default_factory=dict,
        description="Each remote dependency called so far (llm, embeddings, reranker, qdrant, "
        "web_search): `closed`, or why its circuit is open. An open circuit of the LLM or the "
        "vector store makes the instance not ready; the others degrade turns.",
    )
