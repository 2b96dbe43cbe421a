"""How well the agent's self-check (`reflect_answer`) tells faithful answers from wrong ones.

From each question's gold supporting paragraphs, `eval/perturbations.py` builds candidate
answers whose truth is known: faithful (a supporting sentence verbatim, and restatements that
keep every number, name and negation), unfaithful with exactly one change (`number`, `name`,
`negation`, `comparison`, `miscited`), and, for questions with several parts, `partial` (one part
answered) next to `all_parts`. Each candidate goes through the real graph (routing, retrieval,
grading, citations, reflection and its regeneration) with a scripted model that, when the
evidence it is shown holds the supporting sentence, answers with the candidate and cites the
evidence block that holds that sentence (another block for `miscited`). A candidate whose
sentence did not reach the evidence is counted apart and not scored: no check can see it.

Scored per candidate, on the verdict reflection gave the candidate (the final verdict too when
the regeneration repeats it, the default):

- an unfaithful candidate is detected when the verdict is not `grounded` or its sentence is not
  `supported`; a `partial` one also when `answers_question` is False (which signal fired is kept);
- a faithful one is a false alarm when flagged the same way (`all_parts` also when it is not
  taken to answer the question);
- cost: time inside `reflect_answer` (its step's ms) per answer sentence.

    python bench/self_check.py --dataset ../shared/data/hotpotqa_dev500 --limit 100 --effort low

`--limit N` takes N questions spread evenly over the file (HotpotQA dev500 lists its comparison
questions last). `--regenerate-reply original` makes the scripted model correct itself when
asked again (the supporting sentences verbatim): whether a regeneration repairs the answer.
`--bundled-llm N` runs the bundled LLM instead, on N questions, and writes its answers with
their evidence and verdicts for a person to check (`self-check-<dataset>-bundled.{jsonl,md}`).

The corpus must be collection `--collection` (default `eval-<dataset>`) in `--data-dir`
(default `.agentrag/bench`); it is ingested there first when missing. Writes
`self-check-<dataset>.json` and `.md` under `--out` (default `eval/results`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage

from agent.context import EFFORTS, AgentContext, Effort
from agent.services import Services
from agent.settings import Settings, load_settings
from agent.text import message_text
from eval.datasets import CorpusDoc, Question, iter_corpus, load_retrieval_dataset
from eval.metrics import percentile
from eval.perturbations import KINDS, Candidate, Claim, NameIndex, build_candidates
from eval.retrieval import corpus_documents
from eval.runinfo import command_line, machine
from eval.scripted_llm import ScriptedChatModel
from graphs.rag import build_graph, recursion_limit
from retrievers.stack import RetrievalStack

UNFAITHFUL = ("number", "name", "negation", "comparison", "miscited")
_EVIDENCE = re.compile(r"<evidence>\s*(.*?)\s*</evidence>", re.DOTALL)
_BLOCK = re.compile(r"^\[(\d+)\] ([^\n]*)\n", re.MULTILINE)
NOT_FOUND_REPLY = "The documents do not say."


# -- the scripted model's side -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Block:
    n: int
    title: str
    text: str


def evidence_blocks(messages: Sequence[BaseMessage]) -> list[Block] | None:
    """The numbered evidence blocks of an answer prompt, None when the prompt fences none."""
    system = next((message_text(m) for m in messages if isinstance(m, SystemMessage)), "")
    fenced = _EVIDENCE.search(system)
    if fenced is None:
        return None
    parts = _BLOCK.split(fenced.group(1))
    return [
        Block(int(parts[i]), parts[i + 1].split(" > ")[0].strip(), _flat(parts[i + 2]))
        for i in range(1, len(parts) - 2, 3)
    ]


def _flat(text: str) -> str:
    return " ".join(text.split())


def cite(text: str, n: int | None) -> str:
    body = text.rstrip()
    end = body[-1] if body and body[-1] in ".!?" else "."
    body = body[:-1].rstrip() if body and body[-1] in ".!?" else body
    return f"{body} [{n}]{end}" if n is not None else f"{body}{end}"


@dataclass(slots=True)
class TurnScript:
    """What the scripted model says in one turn, and what it saw: the candidate on the first
    answer call; on a regeneration the same again (`same`) or the supporting sentences
    verbatim (`original`)."""

    candidate: Candidate
    gold_titles: frozenset[str]
    regenerate: str = "same"
    answers: list[str] = field(default_factory=list)
    holding: list[int | None] = field(default_factory=list)
    cited: list[int | None] = field(default_factory=list)
    wrong_title: str | None = None
    no_wrong_block: bool = False
    replacement_in_evidence: bool = False
    other_calls: int = 0

    def reply(self, messages: list[BaseMessage]) -> str:
        blocks = evidence_blocks(messages)
        if blocks is None:
            self.other_calls += 1
            return NOT_FOUND_REPLY
        first = not self.answers
        claims: Sequence[Claim] = self.candidate.claims
        if not first and self.regenerate == "original":
            claims = [Claim(c.source, c.source, c.doc_id) for c in self.candidate.claims]
        sentences = []
        holding: list[int | None] = []
        cited: list[int | None] = []
        for claim in claims:
            source = _flat(claim.source)
            where = next((b.n for b in blocks if source in b.text), None)
            n = where
            if claim.miscite and where is not None:
                n = self._wrong_block(blocks, source, where)
            holding.append(where)
            cited.append(n)
            sentences.append(cite(claim.text, n))
        if first:
            self.holding, self.cited = holding, cited
            changed = self.candidate.changed
            if self.candidate.kind == "name" and changed is not None:
                self.replacement_in_evidence = any(
                    changed.after.lower() in b.text.lower() for b in blocks
                )
        answer = " ".join(sentences)
        self.answers.append(answer)
        return answer

    def _wrong_block(self, blocks: Sequence[Block], source: str, where: int) -> int:
        """The first block from a paragraph that is not gold and does not hold the sentence
        (the top-ranked distractor), else any other block."""
        others = [b for b in blocks if b.n != where and source not in b.text]
        pick = next((b for b in others if b.title not in self.gold_titles), None)
        pick = pick or (others[0] if others else None)
        if pick is None:
            self.no_wrong_block = True
            return where
        self.wrong_title = pick.title
        return pick.n

    @property
    def retrieved(self) -> bool:
        return bool(self.holding) and all(n is not None for n in self.holding)


class Scripts:
    """The one reply the scripted model has: the current turn's script."""

    def __init__(self) -> None:
        self.current: TurnScript | None = None

    def reply(self, messages: list[BaseMessage]) -> str:
        if self.current is None:
            return NOT_FOUND_REPLY
        return self.current.reply(messages)


# -- one turn ------------------------------------------------------------------------------------


@dataclass(slots=True)
class TurnResult:
    values: dict[str, Any]
    reflections: list[dict[str, Any]]
    ms: float


async def run_turn(graph: Any, question: str, ctx: AgentContext) -> TurnResult:
    """One turn, keeping every verdict reflection gave (the first is the candidate's own when
    the answer is regenerated) and the final state."""
    reflections: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    started = time.perf_counter()
    async for mode, chunk in graph.astream(
        {"messages": [("user", question)]},
        {"recursion_limit": recursion_limit(ctx)},
        context=ctx,
        stream_mode=["updates", "values"],
    ):
        if mode == "values":
            values = chunk
            continue
        for node, update in chunk.items():
            if node == "reflect_answer" and isinstance(update, dict) and "verdict" in update:
                reflections.append(update)
    return TurnResult(values, reflections, (time.perf_counter() - started) * 1000)


def _verdict_view(verdict: dict[str, Any] | None) -> dict[str, Any] | None:
    if verdict is None:
        return None
    return {
        "grounded": verdict["grounded"],
        "answers_question": verdict["answers_question"],
        "action": verdict["action"],
        "sentences": [
            {
                "sentence": s["sentence"],
                "supported": s["supported"],
                "support": s["support"],
                "cited": s["cited"],
                **({"recited": s["recited"]} if "recited" in s else {}),
                **({"problems": s["problems"]} if s.get("problems") else {}),
            }
            for s in verdict["sentences"]
        ],
    }


def signals(verdict: dict[str, Any]) -> list[str]:
    """Which of the verdict's three signals say something is wrong. These are all a version of
    the check has to set to be measured here (a claim-level check marks the sentence)."""
    fired = []
    if not verdict["grounded"]:
        fired.append("grounded")
    if any(not s["supported"] for s in verdict["sentences"]):
        fired.append("sentence")
    if not verdict["answers_question"]:
        fired.append("answers_question")
    if any("recited" in s for s in verdict["sentences"]):
        fired.append("recited")
    return fired


def flagged_by(candidate: Candidate, fired: Sequence[str]) -> bool:
    """Whether the check flagged the candidate: `answers_question` counts for multi-part
    candidates only (a single true sentence may well not answer a multi-hop question); a
    citation the check moved to the chunk that holds the claim (`recited`) counts for a
    mis-cited one (the claim is true: the fix is the citation, not a rewrite)."""
    counted = {"grounded", "sentence"}
    if candidate.kind == "miscited":
        counted.add("recited")
    if candidate.parts > 1:
        counted.add("answers_question")
    return any(s in counted for s in fired)


def turn_record(
    candidate: Candidate, effort: str, script: TurnScript, turn: TurnResult
) -> dict[str, Any]:
    first = turn.reflections[0] if turn.reflections else None
    last = turn.reflections[-1] if turn.reflections else None
    verdict = _verdict_view(first["verdict"] if first else None)
    fired = signals(verdict) if verdict else []
    reflect_ms = [float(s["ms"]) for r in turn.reflections for s in r.get("steps") or []]
    scored = script.retrieved and not script.no_wrong_block and verdict is not None
    sentences = len(verdict["sentences"]) if verdict else 0
    found = {e["doc_id"] for e in turn.values.get("evidence") or []}
    return {
        **candidate.as_dict(),
        "effort": effort,
        "answer": script.answers[0] if script.answers else "",
        "retrieved": script.retrieved,
        "scored": scored,
        "holding": script.holding,
        "cited": script.cited,
        **({"wrong_block_title": script.wrong_title} if candidate.kind == "miscited" else {}),
        **(
            {"replacement_in_evidence": script.replacement_in_evidence}
            if candidate.kind == "name"
            else {}
        ),
        "verdict": verdict,
        "signals": fired,
        "flagged": flagged_by(candidate, fired) if verdict else False,
        "regenerated": len(script.answers) > 1,
        "final": _verdict_view(last["verdict"] if last else None)
        if len(turn.reflections) > 1
        else None,
        "reflect_ms": reflect_ms[0] if reflect_ms else None,
        "reflect_ms_per_sentence": (
            round(reflect_ms[0] / sentences, 3) if reflect_ms and sentences else None
        ),
        "sentences": sentences,
        "turn_ms": round(turn.ms, 2),
        "evidence_chunks": len(turn.values.get("evidence") or []),
        "source_docs_in_evidence": [c.doc_id in found for c in candidate.claims],
        "route": (turn.values.get("route") or {}).get("kind"),
    }


# -- scoring -------------------------------------------------------------------------------------


def wilson(hits: int, n: int) -> list[float] | None:
    """95% Wilson interval of a rate: how far a rate over few candidates can be trusted."""
    if n == 0:
        return None
    z = 1.96
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3)]


def _rate(hits: int, n: int) -> float | None:
    return round(hits / n, 3) if n else None


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": round(percentile(list(values), 50), 2),
        "p95": round(percentile(list(values), 95), 2),
        "mean": round(sum(values) / len(values), 2),
    }


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    by_kind: dict[str, Any] = {}
    for kind in KINDS:
        mine = [r for r in records if r["kind"] == kind]
        scored = [r for r in mine if r["scored"]]
        hits = [r for r in scored if r["flagged"]]
        entry: dict[str, Any] = {
            "candidates": len(mine),
            "not_retrieved": sum(not r["retrieved"] for r in mine),
            "scored": len(scored),
            "flagged": len(hits),
            "rate": _rate(len(hits), len(scored)),
            "ci95": wilson(len(hits), len(scored)),
            "signals": dict(Counter(s for r in scored for s in r["signals"])),
            "regenerated": sum(r["regenerated"] for r in scored),
        }
        if kind == "miscited":
            entry["no_wrong_block"] = sum(r["retrieved"] and not r["scored"] for r in mine)
        if kind == "name":
            entry["replacement_in_evidence"] = sum(
                bool(r.get("replacement_in_evidence")) for r in scored
            )
        if kind == "faithful":
            entry["by_variant"] = {}
            for variant in dict.fromkeys(r["variant"] for r in mine):
                vs = [r for r in mine if r["variant"] == variant]
                vscored = [r for r in vs if r["scored"]]
                alarms = sum(r["flagged"] for r in vscored)
                entry["by_variant"][variant] = {
                    "candidates": len(vs),
                    "not_retrieved": sum(not r["retrieved"] for r in vs),
                    "scored": len(vscored),
                    "false_alarms": alarms,
                    "rate": _rate(alarms, len(vscored)),
                }
            entry["answers_question_false"] = sum(
                "answers_question" in r["signals"] for r in scored if r["parts"] == 1
            )
        by_kind[kind] = entry
    partial = [r for r in records if r["kind"] == "partial" and r["scored"]]
    missed = [r for r in partial if not r["flagged"]]
    complete = [r for r in records if r["variant"] == "all_parts" and r["scored"]]
    per_sentence = [r["reflect_ms_per_sentence"] for r in records if r["reflect_ms_per_sentence"]]
    return {
        "candidates": len(records),
        "scored": sum(r["scored"] for r in records),
        "not_retrieved": sum(not r["retrieved"] for r in records),
        "by_kind": by_kind,
        "multi_part": {
            "partial_scored": len(partial),
            "parts_left_out": sum(r["parts"] - r["parts_covered"] for r in partial),
            "flagged": len(partial) - len(missed),
            "flagged_by_answers_question": sum("answers_question" in r["signals"] for r in partial),
            "missed": len(missed),
            "parts_missed": sum(r["parts"] - r["parts_covered"] for r in missed),
            "all_parts_scored": len(complete),
            "all_parts_false_alarms": sum(r["flagged"] for r in complete),
        },
        "cost": {
            "reflect_ms_per_sentence": _stats(per_sentence),
            "reflect_ms_per_turn": _stats([r["reflect_ms"] for r in records if r["reflect_ms"]]),
            "turn_ms": _stats([r["turn_ms"] for r in records]),
            "answer_sentences": sum(r["sentences"] for r in records if r["reflect_ms"]),
        },
        "regenerated": sum(r["regenerated"] for r in records),
    }


# -- the benchmark -------------------------------------------------------------------------------


def spread(questions: Sequence[Question], limit: int | None) -> list[Question]:
    """`limit` questions evenly spaced over the file, in file order (all when no limit)."""
    if not limit or limit >= len(questions):
        return list(questions)
    step = len(questions) / limit
    return [questions[int(i * step)] for i in range(limit)]


def ensure_collection(stack: RetrievalStack, dataset: Any, collection: str) -> None:
    if collection in {c.name for c in stack.store.list_collections()}:
        return
    print(f"Ingesting {dataset.corpus_path} into {collection!r} (minutes on a laptop CPU)")
    docs = list(corpus_documents(iter_corpus(dataset.corpus_path), dataset.name))
    stack.ingestor.ingest_documents(
        docs, collection, description=f"Wikipedia paragraphs ({dataset.name} distractor pool)"
    )


async def measure(args: argparse.Namespace, stack: RetrievalStack | None = None) -> dict[str, Any]:
    """The benchmark over `args`; `stack` (closed by the caller) instead of one made from
    settings (tests hand in theirs, with an embedding model they share)."""
    dataset = load_retrieval_dataset(args.dataset)
    corpus: dict[str, CorpusDoc] = {d.id: d for d in iter_corpus(dataset.corpus_path)}
    names = NameIndex.from_corpus(corpus.values())
    questions = spread(dataset.questions, args.limit)
    built = {q.id: build_candidates(q, corpus, names, args.seed) for q in questions}
    collection = args.collection or f"eval-{dataset.name}".replace("_", "-")
    settings = load_settings(data_dir=args.data_dir)
    own_stack = stack is None
    stack = stack or RetrievalStack(settings)
    ensure_collection(stack, dataset, collection)
    scripts = Scripts()
    model = ScriptedChatModel(replies=[scripts.reply], repeat=True)
    graphs = {
        effort: build_graph(
            Services(settings, stack=stack, chat_models={"default": model}, supports_tools=False)
        )
        for effort in args.effort
    }
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "split": dataset.split,
        "questions": len(questions),
        "collection": collection,
        "efforts": args.effort,
        "seed": args.seed,
        "regenerate_reply": args.regenerate_reply,
        "command": command_line(),
        **machine(),
        "built": dict(Counter(c.variant for cs in built.values() for c in cs)),
        "questions_multi_part": sum(any(c.kind == "partial" for c in cs) for cs in built.values()),
    }
    records: dict[str, list[dict[str, Any]]] = {e: [] for e in args.effort}
    started = time.perf_counter()
    try:
        warm = next((cs[0] for cs in built.values() if cs), None)
        if warm is not None:  # model loading and first-call costs are not the check's
            for effort in args.effort:
                scripts.current = TurnScript(warm, frozenset())
                await run_turn(graphs[effort], warm.question, _context(effort, collection))
        for n, q in enumerate(questions, 1):
            gold = frozenset(corpus[d].title for d in q.supporting_doc_ids if d in corpus)
            for candidate in built[q.id]:
                for effort in args.effort:
                    script = TurnScript(candidate, gold, args.regenerate_reply)
                    scripts.current = script
                    turn = await run_turn(graphs[effort], q.question, _context(effort, collection))
                    records[effort].append(turn_record(candidate, effort, script, turn))
            if n % 10 == 0 or n == len(questions):
                done = sum(len(v) for v in records.values())
                print(
                    f"{n}/{len(questions)} questions, {done} turns, "
                    f"{time.perf_counter() - started:.0f}s",
                    flush=True,
                )
    finally:
        scripts.current = None
        if own_stack:
            stack.close()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    for effort in args.effort:
        report[effort] = summarize(records[effort])
    report["records"] = records
    return report


def _context(effort: Effort, collection: str) -> AgentContext:
    return AgentContext(effort=effort, collections=[collection])


# -- the report ----------------------------------------------------------------------------------


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.0f}%"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" ({ci[0] * 100:.0f}-{ci[1] * 100:.0f})"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Self-check benchmark: {report['dataset']}, {report['questions']} questions",
        "",
        f"`{report['command']}`",
        "",
        f"{report['machine']}; commit {report['commit']}; load average before "
        f"{report['load_before']}, after {report['load_after']}; {report['seconds']} s. "
        f"Seed {report['seed']}; a regeneration answers with "
        + (
            "the same candidate."
            if report["regenerate_reply"] == "same"
            else "the supporting sentences verbatim."
        ),
        "",
        "Detected: the verdict reflection gave the candidate is not grounded or its sentence "
        "is not supported (for `partial`, also: not taken to answer the question). Candidates "
        "whose supporting sentence did not reach the evidence are not scored.",
    ]
    for effort in report["efforts"]:
        s = report[effort]
        k = s["by_kind"]
        lines += [
            "",
            f"## Effort `{effort}`",
            "",
            "| candidate | built | not retrieved | scored | flagged | rate (95% CI) "
            "| signals fired | regenerated |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for kind in (*UNFAITHFUL, "partial", "faithful"):
            e = k[kind]
            fired = ", ".join(f"{n} {c}" for n, c in sorted(e["signals"].items())) or "-"
            label = f"{kind} (false alarms)" if kind == "faithful" else kind
            lines.append(
                f"| {label} | {e['candidates']} | {e['not_retrieved']} | {e['scored']} | "
                f"{e['flagged']} | {_pct(e['rate'])}{_ci(e['ci95'])} | {fired} | "
                f"{e['regenerated']} |"
            )
        lines += ["", "Faithful answers by restatement (false alarms):", ""]
        lines += ["| variant | scored | false alarms | rate |", "|---|---|---|---|"]
        for variant, v in k["faithful"]["by_variant"].items():
            lines.append(f"| {variant} | {v['scored']} | {v['false_alarms']} | {_pct(v['rate'])} |")
        m = s["multi_part"]
        cost = s["cost"]
        per = cost["reflect_ms_per_sentence"] or {}
        turn = cost["reflect_ms_per_turn"] or {}
        extra = []
        if k["miscited"].get("no_wrong_block"):
            extra.append(f"{k['miscited']['no_wrong_block']} miscited not scored (one block)")
        if k["name"].get("replacement_in_evidence"):
            extra.append(
                f"{k['name']['replacement_in_evidence']} swapped names also in the evidence"
            )
        lines += [
            "",
            f"Multi-part: {m['partial_scored']} partial answers scored leaving out "
            f"{m['parts_left_out']} parts; {m['flagged']} flagged "
            f"({m['flagged_by_answers_question']} by `answers_question`), {m['missed']} missed "
            f"({m['parts_missed']} parts missed). Complete answers: {m['all_parts_scored']} "
            f"scored, {m['all_parts_false_alarms']} flagged.",
            "",
            f"Cost: reflect_answer {per.get('p50', '-')} ms per answer sentence p50 "
            f"({per.get('p95', '-')} p95, {per.get('mean', '-')} mean); "
            f"{turn.get('p50', '-')} ms per check p50; {cost['answer_sentences']} sentences. "
            "(The answer's sentences are encoded in generate_answer while it streams, so the "
            "encoder's time is not in these.) "
            f"Single faithful sentences not taken to answer the question: "
            f"{k['faithful']['answers_question_false']} (not counted as false alarms).",
            *(["", "; ".join(extra) + "."] if extra else []),
        ]
        lines += _misses(report["records"][effort])
    return "\n".join(lines) + "\n"


def _misses(records: Sequence[dict[str, Any]], per_kind: int = 3) -> list[str]:
    lines = ["", "Missed, a few per kind (support = the check's best similarity or overlap):", ""]
    for kind in (*UNFAITHFUL, "partial"):
        missed = [r for r in records if r["kind"] == kind and r["scored"] and not r["flagged"]]
        for r in missed[:per_kind]:
            change = r["changed"]
            what = f"`{change['from']}` → `{change['to']}`" if change else ""
            if kind == "miscited":
                what = f"cited [{r['cited'][0]}] ({r.get('wrong_block_title')}), held by " + (
                    f"[{r['holding'][0]}]"
                )
            if kind == "partial":
                what = f"answers 1 of {r['parts']} parts"
            support = ", ".join(str(s["support"]) for s in r["verdict"]["sentences"])
            lines.append(f"- **{kind}** {what}: “{r['answer'][:220]}” (support {support})")
    return lines


# -- the bundled LLM, for a person to read -------------------------------------------------------


async def bundled(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    dataset = load_retrieval_dataset(args.dataset)
    corpus = {d.id: d for d in iter_corpus(dataset.corpus_path)}
    questions = spread(dataset.questions, args.bundled_llm)
    collection = args.collection or f"eval-{dataset.name}".replace("_", "-")
    settings: Settings = load_settings(data_dir=args.data_dir)
    services = Services(settings)
    ensure_collection(services.stack, dataset, collection)
    graph = build_graph(services)
    header = {
        "dataset": dataset.name,
        "questions": len(questions),
        "collection": collection,
        "llm_model": settings.llm_model,
        "llm_endpoint": settings.llm_base_url or "embedded llama.cpp server",
        "command": command_line(),
        **machine(),
    }
    records: list[dict[str, Any]] = []
    try:
        await services.models.aget("generator", _context(args.effort[0], collection))
        for n, q in enumerate(questions, 1):
            gold = set(q.supporting_doc_ids)
            for effort in args.effort:
                turn = await run_turn(graph, q.question, _context(effort, collection))
                v = turn.values
                first = turn.reflections[0]["verdict"] if turn.reflections else None
                last = turn.reflections[-1]["verdict"] if turn.reflections else None
                records.append(
                    {
                        "question_id": q.id,
                        "question": q.question,
                        "gold_answer": q.answer,
                        "gold_titles": [
                            corpus[d].title for d in q.supporting_doc_ids if d in corpus
                        ],
                        "effort": effort,
                        "answer": v.get("answer", ""),
                        "evidence": [
                            {
                                "n": i,
                                "title": e["title"],
                                "doc_id": e["doc_id"],
                                "gold": e["doc_id"] in gold,
                                "text": e["text"],
                            }
                            for i, e in enumerate(v.get("evidence") or [], 1)
                        ],
                        "first_verdict": _verdict_view(first),
                        "final_verdict": _verdict_view(last),
                        "regenerated": len(turn.reflections) > 1,
                        "flags": [f"{f['flag']}: {f['reason']}" for f in v.get("flags") or []],
                        "turn_ms": round(turn.ms, 1),
                        "person_check": [
                            {"sentence": s["sentence"], "correct": None}
                            for s in (last or {}).get("sentences") or []
                        ],
                    }
                )
                print(f"{n}/{len(questions)} {effort}: {turn.ms / 1000:.1f}s", flush=True)
    finally:
        services.close()
    header["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return records, header


def bundled_markdown(records: Sequence[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [
        f"# Self-check on the bundled LLM's answers: {header['dataset']}, "
        f"{header['questions']} questions",
        "",
        f"`{header['command']}`",
        "",
        f"{header['llm_model']} ({header['llm_endpoint']}); {header['machine']}; commit "
        f"{header['commit']}.",
        "",
        "For each answer sentence: the check's verdict, then a box for the reader: tick it when "
        "the evidence the sentence cites states what it says. The JSONL next to this file holds "
        "the same records (`person_check`: set `correct` per sentence).",
    ]
    for r in records:
        final = r["final_verdict"] or {}
        lines += [
            "",
            f"## {r['question']} (`{r['effort']}`)",
            "",
            f"Gold answer: **{r['gold_answer']}**; gold paragraphs: " + ", ".join(r["gold_titles"]),
            "",
            f"Answer{' (regenerated)' if r['regenerated'] else ''}: {r['answer']}",
            "",
            f"Verdict: grounded {final.get('grounded')}, answers the question "
            f"{final.get('answers_question')}, action {final.get('action')}.",
            "",
        ]
        for s in final.get("sentences") or []:
            mark = "supported" if s["supported"] else "NOT supported"
            lines.append(
                f"- [ ] {s['sentence']} — check: {mark} (support {s['support']}, "
                f"cites {s['cited']})"
            )
        cited = {n for s in final.get("sentences") or [] for n in s["cited"]}
        for e in r["evidence"]:
            if e["n"] in cited:
                gold = " (gold)" if e["gold"] else ""
                lines.append(f"\n> [{e['n']}] **{e['title']}**{gold}: {e['text']}")
        uncited = [
            f"[{e['n']}] {e['title']}" + (" (gold)" if e["gold"] else "")
            for e in r["evidence"]
            if e["n"] not in cited
        ]
        if uncited:
            lines += ["", "Other evidence: " + "; ".join(uncited)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True, help="A folder in data/ layout.")
    parser.add_argument("--data-dir", type=Path, default=Path(".agentrag/bench"))
    parser.add_argument("--collection", default=None, help="Default: eval-<dataset>.")
    parser.add_argument("--limit", type=int, default=None, help="Questions, spread over the file.")
    parser.add_argument("--effort", action="append", choices=EFFORTS)
    parser.add_argument("--seed", type=int, default=0, help="Which numbers and names change.")
    parser.add_argument(
        "--regenerate-reply",
        choices=["same", "original"],
        default="same",
        help="What the scripted model answers when reflection asks again: the same candidate "
        "(default; the verdict shows what the check caught) or the supporting sentences verbatim.",
    )
    parser.add_argument(
        "--bundled-llm",
        type=int,
        default=0,
        metavar="N",
        help="Instead: the bundled LLM answers N questions; its answers, evidence and verdicts "
        "are written for a person to check.",
    )
    parser.add_argument("--out", type=Path, default=Path("eval/results"))
    args = parser.parse_args()
    args.effort = list(dict.fromkeys(args.effort or ["low", "medium"]))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.bundled_llm:
        records, header = asyncio.run(bundled(args))
        stem = args.out / f"self-check-{header['dataset']}-bundled"
        with stem.with_suffix(".jsonl").open("w") as out:
            out.write(json.dumps({"header": header}) + "\n")
            for record in records:
                out.write(json.dumps(record) + "\n")
        stem.with_suffix(".md").write_text(bundled_markdown(records, header))
        print(f"Records: {stem}.jsonl, {stem}.md")
        return
    report = asyncio.run(measure(args))
    stem = args.out / f"self-check-{report['dataset']}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    stem.with_suffix(".md").write_text(text)
    print(text)
    print(f"Report: {stem}.md")


if __name__ == "__main__":
    main()
