"""Evidence quality of the agent on a multi-hop set, without spending LLM time.

Runs the real graph with `max_llm_calls=0`: routing, decomposition (the deterministic plan, as
with any model that does no structured output, the bundled one included), retrieval, title
linking and grading all run as usual; only the answer is extractive. So the evidence is exactly
what the agent hands its answer writer, measured on all questions in minutes instead of hours.

    python bench/agent_evidence.py --dataset ../shared/data/hotpotqa_dev500 --data-dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from agent.context import AgentContext
from agent.services import Services
from agent.settings import load_settings
from eval.answer_metrics import normalize_answer
from eval.datasets import Question, iter_corpus, load_retrieval_dataset
from eval.metrics import percentile
from eval.retrieval import corpus_documents
from graphs.rag import build_graph, recursion_limit


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    dataset = load_retrieval_dataset(args.dataset)
    questions = dataset.questions[: args.limit] if args.limit else dataset.questions
    services = Services(load_settings(data_dir=args.data_dir), supports_tools=False)
    collection = f"eval-{dataset.name}".replace("_", "-")
    docs = list(corpus_documents(iter_corpus(dataset.corpus_path), dataset.name))
    services.stack.ingestor.ingest_documents(docs, collection)  # idempotent
    graph = build_graph(services)
    report: dict[str, Any] = {"dataset": dataset.name, "questions": len(questions)}
    records = args.records.open("w") if args.records else None
    try:
        for effort in args.effort:
            all_gold = answer_found = answerable = evidence_size = 0
            latencies: list[float] = []
            node_ms: dict[str, float] = {}
            for q in questions:
                ctx = AgentContext(
                    effort=effort, max_llm_calls=0, collections=[collection], **args.context
                )
                started = time.perf_counter()
                result = await graph.ainvoke(
                    {"messages": [("user", q.question)]},
                    {"recursion_limit": recursion_limit(ctx)},
                    context=ctx,
                )
                latencies.append((time.perf_counter() - started) * 1000)
                for entry in result["steps"]:
                    node_ms[entry["node"]] = node_ms.get(entry["node"], 0.0) + entry["ms"]
                found = {e["doc_id"] for e in result["evidence"]}
                all_gold += set(q.supporting_doc_ids) <= found
                evidence_size += len(result["evidence"])
                gold = normalize_answer(q.answer or "")
                if gold and gold not in ("yes", "no"):
                    answerable += 1
                    text = " ".join(f"{e['title']} {e['text']}" for e in result["evidence"])
                    answer_found += gold in normalize_answer(text)
                if records is not None:
                    records.write(json.dumps(failure_record(effort, q, result)) + "\n")
            report[effort] = {
                "all_gold_in_evidence": round(all_gold / len(questions), 4),
                "answer_in_evidence": round(answer_found / max(answerable, 1), 4),
                "answerable_questions": answerable,
                "mean_evidence_chunks": round(evidence_size / len(questions), 2),
                "turn_ms_p50": round(percentile(latencies, 50), 1),
                "turn_ms_p95": round(percentile(latencies, 95), 1),
                "node_ms_per_turn": {
                    node: round(total / len(questions), 2)
                    for node, total in sorted(node_ms.items())
                    if node not in ("generate_answer", "reflect_answer")
                },
            }
            print(effort, json.dumps(report[effort]), flush=True)
    finally:
        services.close()
        if records is not None:
            records.close()
    return report


def failure_record(effort: str, question: Question, result: dict[str, Any]) -> dict[str, Any]:
    """What a reader needs to tell why a gold document is missing: never found by any
    sub-query, or found and then cut when the sub-queries' evidence was merged."""
    found = [e["doc_id"] for e in result["evidence"]]
    gold = list(question.supporting_doc_ids)
    return {
        "effort": effort,
        "id": question.id,
        "question": question.question,
        "answer": question.answer,
        "gold": gold,
        "gold_titles": list(question.extra.get("supporting_titles") or []),
        "missing": [d for d in gold if d not in found],
        "plan": (result.get("plan") or {}).get("mode"),
        "research": [
            {
                "query": r["query"],
                "tried": r["queries_tried"],
                "grade": r["grade"],
                "docs": [e["doc_id"] for e in r["evidence"]],
                "titles": [e["title"] for e in r["evidence"]],
            }
            for r in result.get("research") or []
        ],
        "evidence": found,
        "evidence_titles": [e["title"] for e in result["evidence"]],
        "evidence_scores": [
            [e["rank"], round(e["retrieval_score"], 4), round(e["relevance"], 4)]
            for e in result["evidence"]
        ],
    }


def context_overrides(pairs: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` pairs typed like the context's own defaults."""
    defaults = AgentContext()
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if not hasattr(defaults, name) or name in ("effort", "collections"):
            raise SystemExit(f"--set {pair}: no such context field")
        out[name] = type(getattr(defaults, name))(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="Ingested once, then reused.")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--effort", action="append", default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--records", type=Path, default=None, help="Per-question JSONL: plan, hops, missing gold."
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="Override a runtime context field (k, max_evidence, relevance_threshold, ...).",
    )
    args = parser.parse_args()
    args.context = context_overrides(args.set)
    args.effort = args.effort or ["low", "medium"]
    report = asyncio.run(measure(args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"agent-evidence-{report['dataset']}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"Report: {path}")


if __name__ == "__main__":
    main()
