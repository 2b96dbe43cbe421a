"""Agent benchmark: the same questions through a naive RAG baseline and the agent at each effort.

The baseline is what the agent has to beat: one hybrid search (top 10 chunks, no reranking) and
one answer from the same generator model with the same `generate` prompt and evidence layout the
agent's answer writer uses. The agent runs its full graph at each effort tier, one fresh thread
per question, so nothing carries over between questions.

Per system it reports what decides whether the agent is worth its calls:

- evidence quality: whether every gold document reached the answer writer (the share of
  questions, and per gold document), and whether a gold answer string is in that evidence
  (non yes/no questions only: "yes" is in almost any text);
- answer quality: SQuAD EM and F1 against the gold aliases, plus whether the answer contains a
  gold alias at all (long-form answers score EM 0 by construction);
- cost: LLM calls and tokens per turn, and turn latency split into model time (the sum of the
  turn's LLM calls) and everything else, the orchestration overhead (retrieval, reranking,
  grading, reflection embeddings, graph bookkeeping).

Systems run one after another, each over all questions, one question at a time: a single user's
latency, and no system's LLM calls warm the server's prompt cache for another on the same
question. Model time sums the turn's calls; calls that overlap (parallel sub-queries judged at
effort high) can make it exceed the turn, and the overhead is then negative, not clipped.

With Langfuse tracing configured, each agent turn is one trace, as a chat turn is (user "eval",
one session per effort tier and run, the question id in its metadata); the baseline is not
traced, it is not the agent. With a Langfuse dataset named, the questions become that dataset's
items and each effort tier one experiment run over them (see `eval.langfuse_experiment`): each
turn's trace is its item's, scored with the question's metrics, and the run is scored with the
means this report shows. The baseline then runs for the report only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import platform
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from agent.context import EFFORTS, AgentContext, Effort
from agent.errors import ConfigError
from agent.llm import ROLES
from agent.services import Services
from agent.settings import Settings
from agent.state import Evidence, UsageEntry
from agent.text import format_evidence, message_text
from agent.tracing import Tracing, TurnTrace, package_version, tracing_configured
from eval.answer_metrics import answer_in_text, exact_match, is_yes_no, token_f1
from eval.datasets import DatasetError, Question, iter_corpus, load_retrieval_dataset
from eval.langfuse_experiment import (
    ExperimentDataset,
    ExperimentRun,
    prepare_dataset,
    run_dataset_experiment,
)
from eval.metrics import percentile
from eval.retrieval import corpus_documents
from graphs.rag import build_graph, recursion_limit
from prompts.loader import load_prompt
from retrievers.ingest import ProgressSink
from server.events import final_payload
from tools.collection_search import chunk_record

__all__ = [
    "BASELINE",
    "AgentEvalResult",
    "EvalTraces",
    "LangfuseLinks",
    "QuestionRecord",
    "SystemSummary",
    "run_agent_eval",
    "write_agent_report",
]

BASELINE = "baseline"
BASELINE_K = 10
"""Chunks the baseline hands the answer writer. The agent hands up to `max_evidence`, which may
differ: the report shows both systems' evidence size next to their gold recall."""
QUALITY_METRICS: tuple[tuple[str, str], ...] = (
    ("gold_recall_all", "gold recall (all gold docs)"),
    ("gold_recall_docs", "gold recall (per gold doc)"),
    ("answer_in_evidence", "answer in evidence"),
    ("em", "EM"),
    ("f1", "F1"),
    ("answer_in_prediction", "answer in prediction"),
)
CHART_METRICS: tuple[tuple[str, str], ...] = (
    ("gold_recall_all", "gold recall"),
    ("answer_in_evidence", "answer in evidence"),
    ("em", "EM"),
    ("f1", "F1"),
)


# -- per-question records ---------------------------------------------------------------------


@dataclass(slots=True)
class TurnOutcome:
    """What one system did for one question, before scoring."""

    prediction: str
    evidence: list[Evidence]
    llm_calls: int
    input_tokens: int
    output_tokens: int
    turn_ms: float
    model_ms: float
    flags: list[str] = field(default_factory=list)
    route: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass(slots=True)
class QuestionRecord:
    """One line of the per-question JSONL: enough to see why a question failed."""

    question_id: str
    question: str
    gold_answer: str
    answers: list[str]
    supporting_doc_ids: list[str]
    system: str
    prediction: str
    evidence_doc_ids: list[str]
    metrics: dict[str, float | None]
    llm_calls: int
    input_tokens: int
    output_tokens: int
    turn_ms: float
    model_ms: float
    flags: list[str]
    route: dict[str, Any] | None
    plan: dict[str, Any] | None
    calls: list[dict[str, Any]]
    """Each LLM call of the turn: node, role, tokens in and out, model time."""
    steps: list[dict[str, Any]]
    error: str | None

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def overhead_ms(self) -> float:
        return self.turn_ms - self.model_ms

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens": self.tokens, "overhead_ms": round(self.overhead_ms, 2)}


def score_question(
    question: Question, prediction: str, evidence: Sequence[Evidence]
) -> dict[str, float | None]:
    """Every per-question metric; None where it does not apply (averaged over the rest)."""
    gold = set(question.supporting_doc_ids)
    found = gold.intersection(e["doc_id"] for e in evidence)
    evidence_text = "\n".join(f"{e['title']}\n{e['text']}" for e in evidence)
    answers = question.answers
    open_answer = not is_yes_no(answers)
    return {
        "gold_recall_all": (1.0 if found == gold else 0.0) if gold else None,
        "gold_recall_docs": len(found) / len(gold) if gold else None,
        "answer_in_evidence": float(answer_in_text(answers, evidence_text))
        if open_answer
        else None,
        "em": exact_match(prediction, answers),
        "f1": token_f1(prediction, answers),
        "answer_in_prediction": float(answer_in_text(answers, prediction)),
    }


def make_record(question: Question, system: str, outcome: TurnOutcome) -> QuestionRecord:
    return QuestionRecord(
        question_id=question.id,
        question=question.question,
        gold_answer=question.answer or (question.answers[0] if question.answers else ""),
        answers=list(question.answers),
        supporting_doc_ids=list(question.supporting_doc_ids),
        system=system,
        prediction=outcome.prediction,
        evidence_doc_ids=list(dict.fromkeys(e["doc_id"] for e in outcome.evidence)),
        metrics=score_question(question, outcome.prediction, outcome.evidence),
        llm_calls=outcome.llm_calls,
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        turn_ms=round(outcome.turn_ms, 2),
        model_ms=round(outcome.model_ms, 2),
        flags=outcome.flags,
        route=outcome.route,
        plan=outcome.plan,
        calls=outcome.calls,
        steps=outcome.steps,
        error=outcome.error,
    )


# -- per-system summaries ---------------------------------------------------------------------


@dataclass(slots=True)
class SystemSummary:
    system: str
    questions: int
    metrics: dict[str, float]
    """Means over the questions a metric applies to (`scored` says how many)."""
    scored: dict[str, int]
    evidence_docs: float
    """Distinct documents in the evidence the answer writer saw, per turn."""
    llm_calls: float
    tokens: float
    input_tokens: float
    output_tokens: float
    latency_ms: dict[str, float]
    """turn, model and overhead, each at p50 and p95."""
    node_ms: dict[str, float]
    """Mean time per turn spent in each node (a node's time includes nested subgraph nodes)."""
    flags: dict[str, int]
    """Questions whose turn raised each flag."""
    routes: dict[str, int]
    errors: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "questions": self.questions,
            "metrics": {k: round(v, 4) for k, v in self.metrics.items()},
            "scored": self.scored,
            "evidence_docs": round(self.evidence_docs, 2),
            "llm_calls": round(self.llm_calls, 3),
            "tokens": round(self.tokens, 1),
            "input_tokens": round(self.input_tokens, 1),
            "output_tokens": round(self.output_tokens, 1),
            "latency_ms": {k: round(v, 1) for k, v in self.latency_ms.items()},
            "node_ms": {k: round(v, 1) for k, v in self.node_ms.items()},
            "flags": self.flags,
            "routes": self.routes,
            "errors": self.errors,
            "seconds": round(self.seconds, 1),
        }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _p50_p95(name: str, values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {f"{name}_p50": 0.0, f"{name}_p95": 0.0}
    return {f"{name}_p50": percentile(values, 50), f"{name}_p95": percentile(values, 95)}


def summarize(system: str, records: Sequence[QuestionRecord], seconds: float) -> SystemSummary:
    metrics: dict[str, float] = {}
    scored: dict[str, int] = {}
    for key, _ in QUALITY_METRICS:
        values = [v for r in records if (v := r.metrics.get(key)) is not None]
        metrics[key], scored[key] = _mean(values), len(values)
    node_totals: dict[str, float] = {}
    for r in records:
        for s in r.steps:
            node_totals[s["node"]] = node_totals.get(s["node"], 0.0) + float(s["ms"])
    flags: Counter[str] = Counter()
    for r in records:
        flags.update(set(r.flags))
    return SystemSummary(
        system=system,
        questions=len(records),
        metrics=metrics,
        scored=scored,
        evidence_docs=_mean([len(r.evidence_doc_ids) for r in records]),
        llm_calls=_mean([r.llm_calls for r in records]),
        tokens=_mean([r.tokens for r in records]),
        input_tokens=_mean([r.input_tokens for r in records]),
        output_tokens=_mean([r.output_tokens for r in records]),
        latency_ms={
            **_p50_p95("turn", [r.turn_ms for r in records]),
            **_p50_p95("model", [r.model_ms for r in records]),
            **_p50_p95("overhead", [r.overhead_ms for r in records]),
        },
        node_ms={node: total / len(records) for node, total in sorted(node_totals.items())},
        flags=dict(sorted(flags.items())),
        routes=dict(sorted(Counter(_route_label(r) for r in records).items())),
        errors=sum(1 for r in records if r.error),
        seconds=seconds,
    )


def _route_label(record: QuestionRecord) -> str:
    if record.system == BASELINE:
        return "search+generate"
    kind = (record.route or {}).get("kind", "error")
    mode = (record.plan or {}).get("mode")
    return f"{kind}/{mode}" if kind != "direct" and mode else str(kind)


# -- the result -------------------------------------------------------------------------------


@dataclass(slots=True)
class AgentEvalResult:
    dataset: str
    split: str
    questions: int
    yes_no_questions: int
    corpus_documents: int
    collection: str
    ingest: dict[str, Any]
    settings: dict[str, Any]
    systems: dict[str, SystemSummary] = field(default_factory=dict)
    records: list[QuestionRecord] = field(default_factory=list)
    langfuse: LangfuseLinks | None = None
    seconds: float = 0.0
    machine: str = field(
        default_factory=lambda: f"{platform.machine()}, {platform.python_version()}"
    )

    @property
    def stem(self) -> str:
        return f"agent-{self.dataset}-{self.split}"

    def as_dict(self) -> dict[str, Any]:
        """The summary; per-question records go to their own JSONL file."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "questions": self.questions,
            "yes_no_questions": self.yes_no_questions,
            "corpus_documents": self.corpus_documents,
            "collection": self.collection,
            "ingest": self.ingest,
            "settings": self.settings,
            "systems": {name: s.as_dict() for name, s in self.systems.items()},
            "langfuse": self.langfuse.as_dict() if self.langfuse else None,
            "seconds": round(self.seconds, 1),
            "machine": self.machine,
        }

    def to_markdown(self) -> str:
        names = list(self.systems)
        summaries = list(self.systems.values())

        def row(label: str, cells: Iterable[str]) -> str:
            return f"| {label} | " + " | ".join(cells) + " |"

        lines = [
            f"# Agent: {self.dataset} ({self.split}, {self.questions} questions, "
            f"{self.corpus_documents} documents)",
            "",
            row("metric", names),
            "|---|" + "---|" * len(names),
        ]
        for key, label in QUALITY_METRICS:
            counts = {s.scored[key] for s in summaries}
            if key == "answer_in_evidence" and counts:
                label = f"{label} (n={max(counts)}, not yes/no)"
            lines.append(row(label, (f"{s.metrics[key]:.3f}" for s in summaries)))
        lines.append(row("evidence docs / turn", (f"{s.evidence_docs:.1f}" for s in summaries)))
        lines.append(row("LLM calls / turn", (f"{s.llm_calls:.2f}" for s in summaries)))
        lines.append(row("tokens / turn", (f"{s.tokens:.0f}" for s in summaries)))
        for key, label in (
            ("turn", "turn latency"),
            ("model", "model time"),
            ("overhead", "orchestration overhead"),
        ):
            for q in ("p50", "p95"):
                lines.append(
                    row(
                        f"{label} {q} (ms)",
                        (f"{s.latency_ms[f'{key}_{q}']:.0f}" for s in summaries),
                    )
                )
        lines.append(row("errors", (str(s.errors) for s in summaries)))
        for name in sorted({f for s in summaries for f in s.flags}):
            lines.append(row(f"flag {name}", (str(s.flags.get(name, 0)) for s in summaries)))
        for name in sorted({r for s in summaries for r in s.routes}):
            lines.append(row(f"route {name}", (str(s.routes.get(name, 0)) for s in summaries)))
        lines.append(row("wall time (s)", (f"{s.seconds:.0f}" for s in summaries)))
        ingest = self.ingest
        lines += [
            "",
            f"Baseline: one hybrid search (top {BASELINE_K} chunks, no reranking), one answer "
            "with the agent's `generate` prompt. Agent: full graph, fresh thread per question.",
            f"Yes/no questions: {self.yes_no_questions} (left out of 'answer in evidence'). "
            "Flags and routes count questions.",
            f"Ingest into {self.collection!r}: {ingest['documents']} documents, "
            f"{ingest['chunks_added']} chunks added of {ingest['chunks_total']} in "
            f"{ingest['seconds']:.1f}s.",
            f"Total time: {self.seconds:.0f}s.",
            f"Settings: {json.dumps(self.settings)}",
            f"Machine: {self.machine}",
        ]
        if self.langfuse is not None:
            lines += ["", *self.langfuse.to_markdown()]
        return "\n".join(lines) + "\n"


# -- running the systems ----------------------------------------------------------------------


async def run_baseline(
    services: Services, question: str, collection: str, ctx: AgentContext
) -> TurnOutcome:
    """One hybrid search, one answer: the generator sees exactly what the agent's would."""
    started = time.perf_counter()
    chunks = await asyncio.to_thread(
        services.stack.retriever.search, question, collection, k=BASELINE_K, tenant=ctx.tenant
    )
    evidence = [cast(Evidence, chunk_record(c, c.score, i)) for i, c in enumerate(chunks)]
    prompt = load_prompt("generate").format(evidence=format_evidence(evidence))
    messages: list[BaseMessage] = [SystemMessage(prompt), HumanMessage(question)]
    model = services.models.get("generator", ctx).bind(max_tokens=ctx.answer_max_tokens)
    full: AIMessageChunk | None = None
    call_started = time.perf_counter()
    try:
        async for chunk in model.astream(messages, config={"tags": ["answer"]}):
            if isinstance(chunk, AIMessageChunk):
                full = chunk if full is None else full + chunk
    except Exception as exc:
        return TurnOutcome(
            prediction="",
            evidence=evidence,
            llm_calls=0,
            input_tokens=0,
            output_tokens=0,
            turn_ms=(time.perf_counter() - started) * 1000,
            model_ms=(time.perf_counter() - call_started) * 1000,
            error=f"{type(exc).__name__}: {exc}",
        )
    usage: UsageEntry = services.usage.entry(
        BASELINE, BASELINE, "generator", messages, full, call_started
    )
    return TurnOutcome(
        prediction=message_text(full).strip() if full is not None else "",
        evidence=evidence,
        llm_calls=1,
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        turn_ms=(time.perf_counter() - started) * 1000,
        model_ms=usage["model_ms"],
        calls=[_call(usage)],
        steps=[{"node": "baseline", "ms": round((time.perf_counter() - started) * 1000, 2)}],
    )


async def run_agent(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    question: str,
    ctx: AgentContext,
    trace: AbstractContextManager[TurnTrace] | None = None,
) -> TurnOutcome:
    """One turn on a fresh thread (no checkpointer), timed around the whole graph run.

    `trace` opens the turn's Langfuse trace around it (`EvalTraces.turn`): the graph runs with
    the trace's callbacks and the turn's outcome is recorded in it; opening and closing it are
    not timed."""
    with trace or contextlib.nullcontext(TurnTrace()) as turn:
        config = cast(
            RunnableConfig, turn.with_callbacks({"recursion_limit": recursion_limit(ctx)})
        )
        started = time.perf_counter()
        try:
            values: dict[str, Any] = await graph.ainvoke(
                {"messages": [("user", question)]}, config=config, context=ctx
            )
        except Exception as exc:  # one broken turn is a data point, not the end of the benchmark
            turn.fail(type(exc).__name__, str(exc))
            return TurnOutcome(
                prediction="",
                evidence=[],
                llm_calls=0,
                input_tokens=0,
                output_tokens=0,
                turn_ms=(time.perf_counter() - started) * 1000,
                model_ms=0.0,
                error=f"{type(exc).__name__}: {exc}",
            )
        turn_ms = (time.perf_counter() - started) * 1000
        turn.finish(values)
    payload = final_payload(values)
    usage = payload["usage"]
    error = payload.get("error")
    return TurnOutcome(
        prediction=str(payload["answer"]),
        evidence=list(values.get("evidence") or []),
        llm_calls=int(usage["llm_calls"]),
        input_tokens=int(usage["input_tokens"]),
        output_tokens=int(usage["output_tokens"]),
        turn_ms=turn_ms,
        model_ms=float(usage["model_ms"]),
        flags=[f["flag"] for f in payload["flags"]],
        route=payload.get("route"),
        plan=payload.get("plan"),
        calls=[_call(u) for u in values.get("usage") or [] if u.get("turn") == values.get("turn")],
        steps=[
            {k: s[k] for k in ("node", "ms", "note") if k in s} for s in payload.get("steps") or []
        ],
        error=f"{error.get('code')}: {error.get('message')}" if error else None,
    )


def _call(usage: UsageEntry) -> dict[str, Any]:
    return {k: v for k, v in usage.items() if k != "turn"}


# -- Langfuse ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EvalTraces:
    """How one benchmark run traces its agent turns: a trace per turn, as a chat turn's, every
    turn whatever the sample rate (a benchmark's traces are its record), with user "eval", one
    session per effort tier, and the dataset, effort and question id on each."""

    tracing: Tracing
    dataset: str
    started: datetime

    def session_id(self, system: str) -> str:
        return f"eval-{self.dataset}-{system}-{self.started:%Y%m%dT%H%M%SZ}"

    def run_name(self, system: str, name: str | None) -> str:
        """The Langfuse experiment run of one effort tier: `name` and the effort, or the
        version, the effort and when the benchmark started."""
        if name:
            return f"{name} {system}"
        return f"agentrag {package_version()} {system} {self.started:%Y-%m-%dT%H:%M:%SZ}"

    def turn(
        self, question: Question, ctx: AgentContext, *, nested: bool = False
    ) -> AbstractContextManager[TurnTrace]:
        """`nested`: the turn runs in an experiment item's trace, not a trace of its own."""
        return self.tracing.turn(
            question=question.question,
            session_id=self.session_id(ctx.effort),
            user_id="eval",
            tenant=ctx.tenant,
            tags=["eval", f"effort:{ctx.effort}", f"dataset:{self.dataset}"],
            metadata={"question_id": question.id, "dataset": self.dataset, "entry": "eval"},
            nested=nested,
        )


@dataclass(slots=True)
class LangfuseLinks:
    """Where a traced benchmark run is in Langfuse."""

    sessions: dict[str, str]
    """Effort tier -> the session its turns' traces are in."""
    dataset: str | None = None
    dataset_url: str | None = None
    runs: dict[str, ExperimentRun] = field(default_factory=dict)
    """Effort tier -> its experiment run over the dataset."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "dataset": self.dataset,
            "dataset_url": self.dataset_url,
            "runs": {system: run.as_dict() for system, run in self.runs.items()},
        }

    def to_markdown(self) -> list[str]:
        if self.dataset is None:
            sessions = ", ".join(f"`{s}`" for s in self.sessions.values())
            return [f"Langfuse: one trace per agent turn, in sessions {sessions}."]
        link = f" ({self.dataset_url})" if self.dataset_url else ""
        lines = [f"Langfuse dataset `{self.dataset}`{link}, one experiment run per effort:"]
        for system, run in self.runs.items():
            where = f": {run.url}" if run.url else ""
            lines.append(f"- {system}: run `{run.run_name}`{where}")
        return lines


def item_scores(record: QuestionRecord) -> dict[str, float | None]:
    """A question's scores in its experiment trace: its metrics, tokens and times. LLM calls
    and evidence size are not repeated: the turn posts them to its trace itself."""
    return {
        **record.metrics,
        "tokens": float(record.tokens),
        "turn_ms": record.turn_ms,
        "model_ms": record.model_ms,
    }


def run_scores(summary: SystemSummary) -> dict[str, float]:
    """A run's scores: the means and percentiles its column of the report shows."""
    latency = summary.latency_ms
    return {
        **{k: v for k, v in summary.metrics.items() if summary.scored[k]},
        "llm_calls": summary.llm_calls,
        "tokens": summary.tokens,
        "evidence_docs": summary.evidence_docs,
        "turn_ms_p50": latency["turn_p50"],
        "turn_ms_p95": latency["turn_p95"],
        "model_ms_p50": latency["model_p50"],
        "overhead_ms_p50": latency["overhead_p50"],
        "errors": float(summary.errors),
    }


def item_output(record: QuestionRecord) -> dict[str, Any]:
    """What Langfuse shows as an item's output, next to its expected output."""
    return {
        "answer": record.prediction,
        "evidence_doc_ids": record.evidence_doc_ids,
        **({"error": record.error} if record.error else {}),
    }


@dataclass(frozen=True, slots=True)
class _Experiment:
    """A benchmark run as Langfuse experiment runs over `dataset`."""

    dataset: ExperimentDataset
    run_name: str | None
    metadata: Mapping[str, str]


# -- the benchmark ------------------------------------------------------------------------------


async def _warm_up(services: Services, question: str, ctx: AgentContext, collection: str) -> None:
    """Load the models (and start the embedded LLM server), and the prompts Langfuse serves
    when prompts come from there, before any turn is timed (each fetch has its own timeout)."""
    for role in ROLES:
        await services.models.aget(role, ctx)
    await asyncio.to_thread(
        services.stack.retriever.search, question, collection, k=1, tenant=ctx.tenant
    )
    await services.catalog.reranker.arerank(question, [question], top_n=1)
    services.tracing.start()
    services.prompts.prefetch()
    await asyncio.to_thread(services.prompts.settle)


@dataclass(slots=True)
class _SystemRun:
    """One system over the questions, one at a time: each record is kept, handed to
    `on_record` and logged as soon as it is scored."""

    system: str
    services: Services
    graph: CompiledStateGraph[Any, Any, Any, Any]
    collection: str
    tenant: str
    total: int
    traces: EvalTraces
    log: Callable[[str], None]
    on_record: Callable[[QuestionRecord], None]
    records: list[QuestionRecord] = field(default_factory=list)

    async def ask(self, question: Question, nested: bool = False) -> QuestionRecord:
        if self.system == BASELINE:
            ctx = AgentContext(collections=[self.collection], tenant=self.tenant)
            outcome = await run_baseline(self.services, question.question, self.collection, ctx)
        else:
            ctx = AgentContext(
                effort=cast(Effort, self.system), collections=[self.collection], tenant=self.tenant
            )
            trace = self.traces.turn(question, ctx, nested=nested)
            outcome = await run_agent(self.graph, question.question, ctx, trace)
        record = make_record(question, self.system, outcome)
        self.records.append(record)
        self.on_record(record)
        self.log(
            f"{self.system} {len(self.records)}/{self.total}: {record.turn_ms / 1000:.1f}s, "
            f"{record.llm_calls} LLM calls, F1 {record.metrics['f1']:.2f}"
            + (f", error {record.error}" if record.error else "")
        )
        return record

    async def run_all(self, questions: Sequence[Question]) -> None:
        for question in questions:
            await self.ask(question)

    async def run_experiment(self, experiment: _Experiment) -> ExperimentRun:
        """The questions as one Langfuse experiment run over the dataset's items. The SDK runs
        its own loop, so it runs in a worker thread and sends each turn back to this loop."""
        tracing = self.traces.tracing
        run = await asyncio.to_thread(
            run_dataset_experiment,
            tracing.client,
            experiment.dataset,
            name=f"agentrag {self.system}",
            run_name=self.traces.run_name(self.system, experiment.run_name),
            description=f"agentrag {package_version()}, effort {self.system}, "
            f"{self.total} questions",
            metadata={**experiment.metadata, "effort": self.system},
            loop=asyncio.get_running_loop(),
            answer=functools.partial(self.ask, nested=True),
            output=item_output,
            item_scores=item_scores,
            run_scores=lambda records: run_scores(summarize(self.system, records, 0.0)),
        )
        if run.items < self.total:
            self.log(
                f"{self.system}: {self.total - run.items} question(s) missing from Langfuse run "
                f"{run.run_name!r}; the Langfuse SDK logged why"
            )
        return run


async def _run_systems(
    services: Services,
    questions: Sequence[Question],
    collection: str,
    tenant: str,
    systems: Sequence[str],
    traces: EvalTraces,
    experiment: _Experiment | None,
    log: Callable[[str], None],
    on_record: Callable[[QuestionRecord], None],
) -> tuple[list[QuestionRecord], dict[str, float], dict[str, ExperimentRun]]:
    baseline_ctx = AgentContext(collections=[collection], tenant=tenant)
    await _warm_up(services, questions[0].question, baseline_ctx, collection)
    graph = build_graph(services)
    records: list[QuestionRecord] = []
    seconds: dict[str, float] = {}
    runs: dict[str, ExperimentRun] = {}
    for system in systems:
        run = _SystemRun(
            system, services, graph, collection, tenant, len(questions), traces, log, on_record
        )
        started = time.perf_counter()
        if experiment is not None and system != BASELINE:
            runs[system] = await run.run_experiment(experiment)
        else:
            await run.run_all(questions)
        seconds[system] = time.perf_counter() - started
        records.extend(run.records)
    return records, seconds, runs


def _check_efforts(efforts: Sequence[str]) -> list[Effort]:
    unknown = [e for e in efforts if e not in EFFORTS]
    if unknown:
        raise ConfigError(
            f"Unknown effort {', '.join(map(repr, unknown))}: choose from low, medium, high."
        )
    return [cast(Effort, e) for e in dict.fromkeys(efforts)]


def _check_langfuse(
    tracing_on: bool, efforts: Sequence[str], langfuse_dataset: str | None, langfuse_run: str | None
) -> None:
    if langfuse_run is not None and not langfuse_dataset:
        raise ConfigError("A Langfuse run name needs a Langfuse dataset to run over: name one.")
    if langfuse_dataset and not efforts:
        raise ConfigError("Langfuse runs are the agent's: give at least one effort.")
    if langfuse_dataset and not tracing_on:
        raise ConfigError(
            "Logging the benchmark to a Langfuse dataset needs Langfuse tracing: set "
            "LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL (and leave "
            "LANGFUSE_TRACING_ENABLED unset or true)."
        )


def run_agent_eval(
    dataset_path: Path,
    settings: Settings,
    *,
    limit: int | None = None,
    efforts: Sequence[str] = EFFORTS,
    baseline: bool = True,
    services: Services | None = None,
    collection: str | None = None,
    description: str | None = None,
    langfuse_dataset: str | None = None,
    langfuse_run: str | None = None,
    progress: ProgressSink | None = None,
    log: Callable[[str], None] = lambda _: None,
    on_record: Callable[[QuestionRecord], None] = lambda _: None,
) -> AgentEvalResult:
    """Ingest the dataset's corpus (idempotent), then run the baseline and each effort on the
    first `limit` questions. `services` defaults to one built from `settings` (closed here).

    `on_record` sees every question's record as soon as it is scored, so a long run can be
    watched, or its records kept, before the summary exists.

    With tracing on, every agent turn is traced; `langfuse_dataset` makes the questions that
    Langfuse dataset's items (created or reused) and each effort one experiment run over them,
    named `langfuse_run` and the effort (default: version, effort and start time). What was
    traced is sent (waiting at most `trace_flush_timeout_s`) before this returns.
    """
    started = time.perf_counter()
    systems = [BASELINE] * baseline + _check_efforts(efforts)
    if not systems:
        raise ConfigError("Nothing to run: give at least one effort, or keep the baseline.")
    tracing_on = services.tracing.enabled if services is not None else tracing_configured(settings)
    agents = [s for s in systems if s != BASELINE]
    _check_langfuse(tracing_on, agents, langfuse_dataset, langfuse_run)
    dataset = load_retrieval_dataset(dataset_path)
    unanswered = [q.id for q in dataset.questions if not q.answers]
    if unanswered:
        raise DatasetError(
            f"{len(unanswered)} question(s) in {dataset.path} have no gold answer "
            f"(first: {unanswered[0]}); the agent benchmark scores answers. Use a folder whose "
            "questions carry answers, e.g. hotpotqa_dev500 or musique_train100."
        )
    questions = dataset.questions[:limit] if limit else dataset.questions
    if not questions:
        raise DatasetError(f"{dataset.path} holds no questions.")
    name = collection or f"eval-{dataset.name}".replace("_", "-")
    tenant = settings.default_tenant
    own_services = services is None
    services = services or Services(settings)
    tracing = services.tracing
    traces = EvalTraces(tracing, dataset.name, datetime.now(UTC))
    try:
        experiment = None
        if langfuse_dataset:
            log(f"Langfuse dataset {langfuse_dataset!r}: one item per question")
            prepared = prepare_dataset(
                tracing.client,
                langfuse_dataset,
                questions,
                source=dataset.name,
                split=dataset.split,
                ui_url=settings.langfuse_ui_url or settings.langfuse_base_url,
            )
            log(
                f"Langfuse dataset {prepared.name!r} "
                f"{'created' if prepared.created else 'reused'}, "
                f"{prepared.written} of {len(questions)} item(s) written"
            )
            experiment = _Experiment(
                prepared,
                langfuse_run,
                {"source": dataset.name, "collection": name, "llm_model": settings.llm_model},
            )
        log(f"Ingesting {dataset.corpus_path} into collection {name!r}")
        docs = list(corpus_documents(iter_corpus(dataset.corpus_path), dataset.name))
        report = services.stack.ingestor.ingest_documents(
            docs,
            name,
            description=description or f"Wikipedia paragraphs ({dataset.name} distractor pool)",
            tenant=tenant,
            progress=progress,
        )
        log(
            f"Ingest: {report.chunks_added} chunks added of {report.chunks_total} "
            f"in {report.seconds:.1f}s"
        )
        records, seconds, runs = asyncio.run(
            _run_systems(
                services, questions, name, tenant, systems, traces, experiment, log, on_record
            )
        )
        result = AgentEvalResult(
            dataset=dataset.name,
            split=dataset.split,
            questions=len(questions),
            yes_no_questions=sum(1 for q in questions if is_yes_no(q.answers)),
            corpus_documents=len(docs),
            collection=name,
            ingest=report.as_dict(),
            settings=_settings_summary(settings, services),
            records=records,
        )
        for system in systems:
            mine = [r for r in records if r.system == system]
            result.systems[system] = summarize(system, mine, seconds[system])
        if tracing.enabled:
            result.langfuse = LangfuseLinks(
                sessions={s: traces.session_id(s) for s in agents},
                dataset=experiment.dataset.name if experiment else None,
                dataset_url=experiment.dataset.url if experiment else None,
                runs=runs,
            )
        result.seconds = time.perf_counter() - started
        return result
    finally:
        tracing.flush()
        if own_services:
            services.close()


def _settings_summary(settings: Settings, services: Services) -> dict[str, Any]:
    ctx = AgentContext()
    reranker = services.catalog.reranker
    return {
        "llm_model": settings.llm_model,
        "llm_endpoint": settings.llm_base_url or "embedded llama.cpp server",
        "supports_tools": services.models.supports_tools,
        "embedding_model": settings.embedding_model,
        "reranker": getattr(reranker, "name", type(reranker).__name__),
        "chunk_size": settings.chunk_size,
        "fusion": settings.fusion,
        "agent": {
            "k": ctx.k,
            "candidates": ctx.candidates,
            "max_evidence": ctx.max_evidence,
            "max_llm_calls": ctx.max_llm_calls,
            "max_tokens": ctx.max_tokens,
            "deadline_s": ctx.deadline_s,
            "answer_max_tokens": ctx.answer_max_tokens,
            "relevance_threshold": ctx.relevance_threshold,
            "ambiguous_threshold": ctx.ambiguous_threshold,
        },
    }


# -- reports ----------------------------------------------------------------------------------


def write_agent_report(result: AgentEvalResult, out_dir: Path) -> list[Path]:
    """Markdown table, JSON summary, PNG chart and per-question JSONL; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js, png, jsonl = (
        out_dir / f"{result.stem}{suffix}" for suffix in (".md", ".json", ".png", ".jsonl")
    )
    md.write_text(result.to_markdown(), encoding="utf-8")
    js.write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
    with jsonl.open("w", encoding="utf-8") as handle:
        for record in result.records:
            handle.write(json.dumps(record.as_dict(), default=str) + "\n")
    plot_summary(result, png)
    return [md, js, png, jsonl]


def plot_summary(result: AgentEvalResult, path: Path) -> None:
    """Grouped bars of the quality metrics, and LLM calls per turn, for every system."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result.systems)
    summaries = list(result.systems.values())
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    quality, calls = figure.subplots(1, 2, width_ratios=(3, 1))
    width = 0.8 / max(len(names), 1)
    for i, summary in enumerate(summaries):
        xs = [m + (i - (len(names) - 1) / 2) * width for m in range(len(CHART_METRICS))]
        values = [summary.metrics[key] for key, _ in CHART_METRICS]
        bars = quality.bar(xs, values, width, label=summary.system)
        quality.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    quality.set_xticks(range(len(CHART_METRICS)), [label for _, label in CHART_METRICS])
    quality.set_ylim(0, 1.22)  # headroom for the legend above bars that reach 1.0
    quality.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    quality.set_ylabel("share of questions / mean score")
    quality.legend(loc="upper center", fontsize=8, ncols=len(names))
    quality.set_title(f"{result.dataset}: {result.questions} questions")
    colours = [f"C{i}" for i in range(len(names))]
    bars = calls.bar(names, [s.llm_calls for s in summaries], color=colours)
    calls.bar_label(bars, fmt="%.2f", fontsize=8, padding=1)
    calls.set_ylabel("LLM calls per turn")
    calls.set_title("cost")
    figure.savefig(path, dpi=120)
