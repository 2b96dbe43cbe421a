"""Orchestration overhead of the agent: turn time minus time inside LLM calls, per node and turn.

Runs HotpotQA dev questions through the real graph (real store, embeddings, retrieval, grading
and reflection) with a scripted chat model that answers at once, so nearly all of a turn is the
agent's own work. The scripted answer quotes the first sentence of evidence [1] and adds a
sentence naming the gold answer, cited to the block that holds it: one supported sentence and one
that often is not, so reflection does its full work as with a real model. For half the questions
(odd-length ones) it cites nothing, as small models often do, so citations are attached by
similarity as well. It reports no token usage, as the bundled model does not when streaming, so
token counting is on the measured path too. Efforts run interleaved question by question, each
with its own services (own vector caches) over one store, so the tier measured second does not
find the first one's query vectors cached.

    .venv/bin/python bench/orchestration.py --dataset ../shared/data/hotpotqa_dev500 \
        --data-dir DIR --limit 40

`--token-ms 20` makes the scripted model stream a token every 20 ms, as a hosted model writing 50
tokens a second does; the agent then embeds the answer's sentences while it writes, and the
overhead shows what is left after the stream.

`--cached-vectors` runs each question once unmeasured before its measured turn, which then finds
every vector it needs cached: what a turn costs besides encoding, as with an embedding service
that answers in about no time.

`--replay-embeddings` records every vector in an unmeasured pass, then measures with the remote
embeddings client (`AGENTRAG_EMBEDDING_BACKEND=remote`) against a loopback service, in its own
process, that answers from the recorded table: a turn as with an embedding service whose model
costs about nothing, HTTP round trips included.

`--replay-nodes` also runs each measured turn a second time with every node returning, at once,
what it returned in the measured turn: LangGraph's own cost with agentrag's state and updates,
away from the nodes' work (which slows the framework's code between them). A sequential plan's
hops are replayed as one `research_chain` step, without their subgraph runs.

`--trace` also runs every measured turn traced to Langfuse (the real SDK, exporting to a
Langfuse stand-in in its own process: `eval/langfuse_recorder.py`), alternating traced and
untraced turns of the same question, and reports both: the cost of tracing a turn. With
`--langfuse hang` the stand-in holds every reply, with `--langfuse down` nothing listens: a turn
must cost the same then.

`DIR` must hold the corpus as collection `--collection` (default `hotpot`); when it does not, the
dataset's corpus is ingested into it first (minutes on a laptop CPU). Writes
`orchestration-<dataset>[-TAG].json` and `.md` under `--out` (default `eval/results`). The
machine's load average is recorded before and after: numbers taken under different load do not
compare, so compare two versions by alternating runs of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import re
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, SystemMessage
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel
from pydantic import SecretStr

from agent.context import EFFORTS, AgentContext, Effort
from agent.services import Services
from agent.settings import load_settings
from agent.text import split_sentences
from agent.tracing import Tracing
from agent.usage import UsageMeter
from eval.datasets import Question, iter_corpus, load_retrieval_dataset
from eval.metrics import percentile
from eval.retrieval import corpus_documents
from eval.scripted_llm import ScriptedChatModel
from graphs.rag import build_graph, recursion_limit
from retrievers.stack import RetrievalStack

_EVIDENCE_ONE = re.compile(r"^\[1\][^\n]*\n(.+?)(?:\n\n\[2\]|\n</|\Z)", re.MULTILINE | re.DOTALL)


def gold_answer_reply(answers: dict[str, str]) -> Callable[[list[BaseMessage]], str]:
    """A reply from what the model is shown: evidence [1]'s first sentence, then the gold answer
    for the question (looked up by the question text), cited or not."""

    def reply(messages: list[BaseMessage]) -> str:
        system = next((str(m.content) for m in messages if isinstance(m, SystemMessage)), "")
        question = str(messages[-1].content)
        match = _EVIDENCE_ONE.search(system)
        if match is None:
            return "Hello! Ask me about your documents."
        chunk = " ".join(match.group(1).split())
        quote = (split_sentences(chunk) or [chunk[:200]])[0].rstrip(".!? ")
        gold = answers.get(question, "not stated")
        if len(question) % 2:  # small models often cite nothing: the agent then cites for them
            return f"{quote}. The answer to the question is {gold}."
        blocks = re.split(r"^\[\d+\] ", system, flags=re.MULTILINE)[1:]
        where = next((n for n, b in enumerate(blocks, 1) if gold.lower() in b.lower()), 1)
        return f"{quote} [1]. The answer to the question is {gold} [{where}]."

    return reply


class NodeTape:
    """Records what each function node of a graph returns, then plays it back: the same turn
    through LangGraph with nodes that do no work."""

    def __init__(self) -> None:
        self.recorded: dict[str, list[Any]] = defaultdict(list)
        self.playing: dict[str, deque[Any]] | None = None

    def wrap(self, name: str, node: Any) -> Any:
        async def taped(state: Any, runtime: Any) -> Any:
            if self.playing is not None:
                return self.playing[name].popleft()
            out = await node(state, runtime)
            self.recorded[name].append(out)
            return out

        return taped

    @contextmanager
    def building(self) -> Iterator[None]:
        """Graphs built inside have their function nodes (not subgraphs) on this tape."""
        add_node = StateGraph.add_node

        def taping(builder: Any, name: str, action: Any = None, **kwargs: Any) -> Any:
            if callable(action) and not isinstance(action, Pregel):
                action = self.wrap(name, action)
            return add_node(builder, name, action, **kwargs)

        StateGraph.add_node = taping  # type: ignore[assignment]
        try:
            yield
        finally:
            StateGraph.add_node = add_node  # type: ignore[method-assign]

    def play(self) -> None:
        self.playing = {name: deque(outs) for name, outs in self.recorded.items()}

    def rewind(self) -> None:
        self.recorded.clear()
        self.playing = None


class RecordingEmbeddings:
    """The local model, remembering every vector it makes, keyed by text (a query's exact
    vector wins over a compared text's int8 one)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.vectors: dict[str, list[float]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _keep(self, texts: list[str], vectors: list[list[float]], exact: bool) -> None:
        for text, vector in zip(texts, vectors, strict=True):
            if exact or text not in self.vectors:
                self.vectors[text] = vector

    def embed_query(self, text: str) -> list[float]:
        vector: list[float] = self._inner.embed_query(text)
        self._keep([text], [vector], exact=True)
        return vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = self._inner.embed_documents(texts)
        self._keep(texts, vectors, exact=True)
        return vectors

    def embed_for_comparison(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = self._inner.embed_for_comparison(texts)
        self._keep(texts, vectors, exact=False)
        return vectors


def _serve_vectors(vectors: dict[str, list[float]], port: Any, misses: Any) -> None:
    """An OpenAI-shaped /v1/embeddings service answering from a table, in its own process: a
    stand-in for an embedding service whose model costs about nothing (a GPU's, at these
    sizes), so that what is left is the agent's side of a remote call. A text the measured pass
    asks for that the recording pass did not (a verdict that went the other way by a rounding)
    is encoded here and counted in `misses`."""
    import socket
    from functools import cache
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from retrievers.embeddings import LocalEmbeddings

    model = cache(LocalEmbeddings)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as embedding services serve

        def setup(self) -> None:
            super().setup()  # headers and body go out as two writes: no Nagle delay between
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            missing = [t for t in dict.fromkeys(texts) if t not in vectors]
            if missing:  # a turn that took another path than when recorded: encoded here
                vectors.update(zip(missing, model().embed_documents(missing), strict=True))
                with misses.get_lock():
                    misses.value += len(missing)
            data = [{"index": i, "embedding": vectors[t]} for i, t in enumerate(texts)]
            raw = json.dumps({"data": data, "model": body.get("model", "")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port.value = server.server_address[1]
    server.serve_forever()


def _serve_langfuse(port: Any, mode: str) -> None:
    """The Langfuse stand-in, in its own process (its decoding is Langfuse's work, not the
    agent's); `mode` as `LangfuseRecorder.mode`."""
    import threading

    from eval.langfuse_recorder import LangfuseRecorder

    with LangfuseRecorder(public_key=TRACE_KEY) as recorder:
        recorder.mode = mode  # type: ignore[assignment]
        port.value = recorder.port
        threading.Event().wait()


TRACE_KEY = "pk-lf-bench"


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "mean": round(sum(values) / len(values), 1),
    }


def _turn_record(values: dict[str, Any], turn_ms: float) -> dict[str, Any]:
    turn = values.get("turn")
    usage = [u for u in values.get("usage") or [] if u.get("turn") == turn]
    steps = [s for s in values.get("steps") or [] if s.get("turn") == turn]
    model_ms = sum(float(u["model_ms"]) for u in usage)
    model_by_node: dict[str, float] = defaultdict(float)
    for u in usage:
        model_by_node[u["node"]] += float(u["model_ms"])
    node_ms: dict[str, float] = defaultdict(float)
    for s in steps:
        node_ms[s["node"]] += float(s["ms"])
    overhead_by_node = {n: ms - model_by_node.get(n, 0.0) for n, ms in node_ms.items()}
    # research_chain's own step spans its hops, whose steps are counted already
    in_nodes = sum(ms for n, ms in node_ms.items() if n != "research_chain")
    verdict = values.get("verdict") or {}
    return {
        "turn_ms": round(turn_ms, 2),
        "model_ms": round(model_ms, 2),
        "overhead_ms": round(turn_ms - model_ms, 2),
        "node_overhead_ms": {n: round(v, 2) for n, v in overhead_by_node.items()},
        "framework_ms": round(turn_ms - in_nodes, 2),
        "llm_calls": len(usage),
        "route": (values.get("route") or {}).get("kind"),
        "evidence_ids": [e["id"] for e in values.get("evidence") or []],
        "answer": values.get("answer", ""),
        "grounded": verdict.get("grounded"),
        "answers_question": verdict.get("answers_question"),
        "action": verdict.get("action"),
        "supported": [s["supported"] for s in verdict.get("sentences") or []],
    }


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    nodes: dict[str, list[float]] = defaultdict(list)
    for r in records:
        for node, ms in r["node_overhead_ms"].items():
            nodes[node].append(ms)
    return {
        "turns": len(records),
        "overhead_ms": _stats([r["overhead_ms"] for r in records]),
        "turn_ms": _stats([r["turn_ms"] for r in records]),
        "framework_ms": _stats([r["framework_ms"] for r in records]),
        **(
            {"replay_ms": _stats([r["replay_ms"] for r in records])}
            if records and "replay_ms" in records[0]
            else {}
        ),
        "model_ms": _stats([r["model_ms"] for r in records]),
        "node_overhead_ms": {n: {**_stats(v), "turns": len(v)} for n, v in sorted(nodes.items())},
        "grounded": sum(bool(r["grounded"]) for r in records),
        "regenerated": sum(r["llm_calls"] > 1 for r in records),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    dataset = load_retrieval_dataset(args.dataset)
    questions: list[Question] = dataset.questions[args.skip : args.skip + args.limit]
    warmup = dataset.questions[: args.warmup] if args.skip >= args.warmup else []
    answers = {q.question: q.answer or "" for q in [*questions, *warmup]}
    model = ScriptedChatModel(
        replies=[gold_answer_reply(answers)], repeat=True, token_delay_s=args.token_ms / 1000
    )
    settings = load_settings(data_dir=args.data_dir)
    recording = None
    if args.replay_embeddings:
        recording = RecordingEmbeddings(RetrievalStack(settings).embeddings)
    stack = RetrievalStack(settings, embeddings=recording)
    names = {c.name for c in stack.store.list_collections()}
    if args.collection not in names:
        docs = corpus_documents(iter_corpus(dataset.corpus_path), dataset.name)
        stack.ingestor.ingest_documents(list(docs), args.collection)

    tape = NodeTape()

    def graphs_for(stack: RetrievalStack, settings: Any) -> dict[str, Any]:
        with tape.building():
            return {
                effort: build_graph(
                    Services(
                        settings, stack=stack, chat_models={"default": model}, supports_tools=False
                    )
                )
                for effort in args.effort
            }

    langfuse = None
    if args.trace:
        trace_port = multiprocessing.Value("i", 0)
        langfuse = multiprocessing.Process(
            target=_serve_langfuse,
            args=(trace_port, "ok" if args.langfuse == "down" else args.langfuse),
            daemon=True,
        )
        langfuse.start()
        while not trace_port.value:
            if not langfuse.is_alive():
                raise RuntimeError("the Langfuse stand-in did not start")
            await asyncio.sleep(0.05)
        base = f"http://127.0.0.1:{trace_port.value}"
        if args.langfuse == "down":
            langfuse.terminate()
            langfuse.join()
        settings = settings.model_copy(
            update={
                "langfuse_public_key": TRACE_KEY,
                "langfuse_secret_key": SecretStr("sk-lf-test"),
                "langfuse_base_url": base,
            }
        )
    tracing = Tracing(settings, UsageMeter().count_tokens)
    graphs = graphs_for(stack, settings)
    server = None
    report: dict[str, Any] = {
        "dataset": dataset.name,
        "questions": len(questions),
        "collection": args.collection,
        "token_ms": args.token_ms,
        "cached_vectors": args.cached_vectors,
        "replay_embeddings": args.replay_embeddings,
        "replay_nodes": args.replay_nodes,
        "trace": args.trace,
        "langfuse": args.langfuse if args.trace else None,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
    }

    async def one(question: str, effort: Effort, traced: bool = False) -> dict[str, Any]:
        ctx = AgentContext(effort=effort, collections=[args.collection])
        started = time.perf_counter()
        with tracing.turn(
            question=question, session_id="bench", user_id="bench", traced=traced
        ) as turn:
            values: dict[str, Any] = await graphs[effort].ainvoke(
                {"messages": [("user", question)]},
                turn.with_callbacks({"recursion_limit": recursion_limit(ctx)}),
                context=ctx,
            )
            turn.finish(values)
        return _turn_record(values, (time.perf_counter() - started) * 1000)

    try:
        if recording is not None:  # every vector the turns make, then served from a table
            for q in [*warmup, *questions]:
                for effort in args.effort:
                    await one(q.question, effort)
            stack.close()
            port, misses = multiprocessing.Value("i", 0), multiprocessing.Value("i", 0)
            server = multiprocessing.Process(
                target=_serve_vectors, args=(recording.vectors, port, misses), daemon=True
            )
            server.start()
            while not port.value:
                await asyncio.sleep(0.05)
            settings = settings.model_copy(
                update={
                    "embedding_backend": "remote",
                    "embedding_url": f"http://127.0.0.1:{port.value}/v1",
                }
            )
            stack = RetrievalStack(settings)
            graphs.update(graphs_for(stack, settings))
            report["replayed_vectors"] = len(recording.vectors)
        for q in warmup:  # model loading and first-call costs are not per-turn overhead
            for effort in args.effort:
                await one(q.question, effort, traced=args.trace)
        records: dict[str, list[dict[str, Any]]] = {label: [] for label in args.labels}
        for n, q in enumerate(questions):  # efforts interleaved: a load spike touches all alike
            for effort in args.effort:
                # traced and untraced turns of a question alternate which goes first
                for traced in [False, True][:: 1 if n % 2 else -1] if args.trace else [False]:
                    if args.cached_vectors:  # every vector the measured turn needs, made first
                        await one(q.question, effort)
                    tape.rewind()
                    record = await one(q.question, effort, traced)
                    if args.replay_nodes:
                        tape.play()
                        record["replay_ms"] = (await one(q.question, effort))["turn_ms"]
                        tape.rewind()
                    records[_label(effort, traced)].append({"id": q.id, **record})
        if args.trace:
            report["traces_flushed"] = await asyncio.to_thread(tracing.flush, 10.0)
        for effort in args.labels:
            report[effort] = _summary(records[effort])
            summary = report[effort]
            print(
                effort,
                json.dumps(
                    {
                        "overhead": summary["overhead_ms"],
                        "langgraph": summary["framework_ms"],
                        "replayed": summary.get("replay_ms"),
                    }
                ),
                flush=True,
            )
        report["records"] = records
    finally:
        stack.close()
        if server is not None:
            report["replay_misses"] = misses.value
            server.terminate()
        if langfuse is not None and langfuse.is_alive():
            langfuse.terminate()
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return report


def _label(effort: str, traced: bool) -> str:
    return f"{effort} traced" if traced else effort


def markdown(report: dict[str, Any], efforts: list[str]) -> str:
    lines = [
        f"# Orchestration overhead: {report['dataset']}, {report['questions']} questions",
        "",
        "Turn time minus time inside LLM calls (scripted model that "
        + (
            f"streams a token every {report['token_ms']:g} ms)."
            if report.get("token_ms")
            else "answers at once)."
        ),
        *(
            ["Every vector cached by an unmeasured run of the same question first."]
            if report.get("cached_vectors")
            else []
        ),
        *(
            [
                "Embeddings from a loopback /v1/embeddings service answering from a table "
                "recorded in an unmeasured pass (remote client, no model cost; "
                f"{report.get('replay_misses', 0)} texts were not in the table and were encoded)."
            ]
            if report.get("replay_embeddings")
            else []
        ),
        *(
            [
                "Rows `traced`: the same questions, each turn traced to Langfuse (stand-in "
                f"{'answering' if report['langfuse'] == 'ok' else report['langfuse']}), "
                "alternating with the untraced turn of the same question."
            ]
            if report.get("trace")
            else []
        ),
        f"Load average (1, 5, 15 min) before {report['load_before']}, "
        f"after {report['load_after']}; {report['machine']}.",
        "",
        "LangGraph = turn time minus the time inside the nodes: the framework's own work.",
        "",
        "| effort | overhead p50 | overhead p95 | LangGraph p50 | LangGraph p95 | turn p50 "
        "| grounded | regenerated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in efforts:
        s = report[e]
        lines.append(
            f"| {e} | {s['overhead_ms']['p50']} ms | {s['overhead_ms']['p95']} ms | "
            f"{s['framework_ms']['p50']} ms | {s['framework_ms']['p95']} ms | "
            f"{s['turn_ms']['p50']} ms | {s['grounded']}/{s['turns']} | "
            f"{s['regenerated']}/{s['turns']} |"
        )
    if report.get("replay_nodes"):
        lines += [
            "",
            "Each turn replayed with nodes returning at once what they returned: LangGraph "
            "alone, p50 "
            + ", ".join(f"{e} {report[e]['replay_ms']['p50']} ms" for e in efforts)
            + ".",
        ]
    for e in efforts:
        lines += ["", f"## Per node, effort {e} (ms, LLM time excluded)", ""]
        if "research_chain" in report[e]["node_overhead_ms"]:
            lines += ["research_chain includes the retrieve and grade steps of its hops.", ""]
        lines += ["| node | p50 | p95 | mean | turns |", "|---|---|---|---|---|"]
        for node, s in report[e]["node_overhead_ms"].items():
            lines.append(f"| {node} | {s['p50']} | {s['p95']} | {s['mean']} | {s['turns']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--collection", default="hotpot")
    parser.add_argument("--limit", type=int, default=40, help="Questions measured.")
    parser.add_argument("--skip", type=int, default=3, help="Questions skipped before those.")
    parser.add_argument("--warmup", type=int, default=3, help="Unmeasured first questions.")
    parser.add_argument("--effort", action="append", choices=EFFORTS)
    parser.add_argument("--out", type=Path, default=Path("eval/results"))
    parser.add_argument("--tag", default="", help="Suffix of the report's file name.")
    parser.add_argument(
        "--token-ms",
        type=float,
        default=0.0,
        help="Pause of the scripted model before each token it streams (default: none).",
    )
    parser.add_argument(
        "--cached-vectors",
        action="store_true",
        help="Run each question once unmeasured first, so the measured turn finds every query, "
        "sentence and chunk vector it needs cached: the overhead without any encode, as with an "
        "embedding service that answers in about no time.",
    )
    parser.add_argument(
        "--replay-nodes",
        action="store_true",
        help="Replay each measured turn with nodes that return at once what they returned: "
        "LangGraph's own time with agentrag's state, away from the nodes' work.",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="Also run every measured turn traced to Langfuse (a stand-in in its own process), "
        "alternating with the untraced turn: the cost of tracing.",
    )
    parser.add_argument(
        "--langfuse",
        choices=["ok", "hang", "down"],
        default="ok",
        help="With --trace: the stand-in answers, holds every reply, or is not there.",
    )
    parser.add_argument(
        "--replay-embeddings",
        action="store_true",
        help="Record every vector in an unmeasured pass, then measure with the remote embeddings "
        "client against a loopback service that answers from that table: the overhead with an "
        "embedding service whose model costs about nothing (as a GPU's does at these sizes).",
    )
    args = parser.parse_args()
    args.effort = args.effort or ["low", "medium"]
    args.labels = [
        _label(e, t) for e in args.effort for t in ([False, True] if args.trace else [False])
    ]
    report = asyncio.run(measure(args))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"orchestration-{report['dataset']}{'-' + args.tag if args.tag else ''}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (args.out / f"{stem}.md").write_text(markdown(report, args.labels))
    print(markdown(report, args.labels))
    print(f"Report: {args.out / stem}.md")


if __name__ == "__main__":
    main()
