"""Retrieval benchmark: ingest a corpus into a fresh collection, score dense, sparse and hybrid.

Besides quality (nDCG@10, recall, MRR against the dataset's qrels) it measures what a user
feels: first-ingest throughput, how much faster an unchanged re-ingest is (it should embed
nothing), and end-to-end query latency (query embedding included) at k=10.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.settings import Settings
from eval.datasets import CorpusDoc, RetrievalDataset, iter_corpus, load_retrieval_dataset
from eval.metrics import dedupe_ranking, evaluate_run, percentile
from retrievers.documents import Document, Section
from retrievers.ingest import IngestReport, ProgressSink
from retrievers.stack import RetrievalStack
from retrievers.store import SearchMode

MODES: tuple[SearchMode, ...] = ("dense", "sparse", "hybrid")
METRIC_DEPTH = 100
"""Chunks fetched per query for the quality metrics (mapped to documents, first hit counts)."""


def corpus_documents(docs: Iterator[CorpusDoc], dataset: str) -> Iterator[Document]:
    for doc in docs:
        yield Document(
            doc_id=doc.id,
            source=f"{dataset}#{doc.id}",
            title=doc.title,
            sections=(Section(doc.text),),
        )


@dataclass(slots=True)
class ModeResult:
    metrics: dict[str, float]
    latency_ms_p50: float
    latency_ms_p95: float


@dataclass(slots=True)
class RetrievalEvalResult:
    dataset: str
    split: str
    questions: int
    corpus_documents: int
    settings: dict[str, Any]
    first_ingest: dict[str, Any]
    reingest: dict[str, Any]
    modes: dict[str, ModeResult] = field(default_factory=dict)
    machine: str = field(
        default_factory=lambda: f"{platform.machine()}, {platform.python_version()}"
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "questions": self.questions,
            "corpus_documents": self.corpus_documents,
            "settings": self.settings,
            "first_ingest": self.first_ingest,
            "reingest": self.reingest,
            "modes": {
                name: {
                    "metrics": {k: round(v, 4) for k, v in r.metrics.items()},
                    "latency_ms_p50": round(r.latency_ms_p50, 2),
                    "latency_ms_p95": round(r.latency_ms_p95, 2),
                }
                for name, r in self.modes.items()
            },
            "machine": self.machine,
        }

    def to_markdown(self) -> str:
        keys = ["ndcg@10", "recall@10", "recall@100", "mrr@10"]
        lines = [
            f"# Retrieval: {self.dataset} ({self.split}, {self.questions} questions, "
            f"{self.corpus_documents} documents)",
            "",
            "| mode | " + " | ".join(keys) + " | latency p50 (ms) | latency p95 (ms) |",
            "|---|" + "---|" * (len(keys) + 2),
        ]
        for name, r in self.modes.items():
            cells = [f"{r.metrics.get(k, 0.0):.4f}" for k in keys]
            lines.append(
                f"| {name} | "
                + " | ".join(cells)
                + f" | {r.latency_ms_p50:.1f} | {r.latency_ms_p95:.1f} |"
            )
        fi, ri = self.first_ingest, self.reingest
        lines += [
            "",
            "| ingest | chunks added | seconds | chunks/s |",
            "|---|---|---|---|",
            f"| first | {fi['chunks_added']} | {fi['seconds']:.1f} | "
            f"{fi['chunks_per_second']:.1f} |",
            f"| unchanged re-ingest | {ri['chunks_added']} | {ri['seconds']:.2f} | "
            f"{ri['speedup']:.0f}x faster |",
            "",
            "Latency: one query end to end (query embedding + Qdrant), k=10, single thread.",
            f"Settings: {json.dumps(self.settings)}",
            f"Machine: {self.machine}",
        ]
        return "\n".join(lines) + "\n"


def run_retrieval_eval(
    dataset_path: Path,
    settings: Settings,
    *,
    split: str = "test",
    limit: int | None = None,
    collection: str | None = None,
    progress: ProgressSink | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> RetrievalEvalResult:
    dataset = load_retrieval_dataset(dataset_path, split)
    questions = dataset.questions[:limit] if limit else dataset.questions
    name = collection or f"eval-{dataset.name}".replace("_", "-")
    stack = RetrievalStack(settings)
    try:
        store = stack.store
        if store.has_collection(name):
            store.drop_collection(name)
        log(f"Ingesting {dataset.corpus_path} into collection {name!r}")
        docs = list(corpus_documents(iter_corpus(dataset.corpus_path), dataset.name))
        first = stack.ingestor.ingest_documents(docs, name, progress=progress)
        log(f"First ingest: {first.chunks_added} chunks in {first.seconds:.1f}s")
        again = stack.ingestor.ingest_documents(docs, name)
        log(f"Re-ingest: {again.chunks_added} chunks in {again.seconds:.2f}s")
        result = RetrievalEvalResult(
            dataset=dataset.name,
            split=dataset.split,
            questions=len(questions),
            corpus_documents=len(docs),
            settings=_settings_summary(settings, stack),
            first_ingest=first.as_dict(),
            reingest={**again.as_dict(), "speedup": _speedup(first, again)},
        )
        qrels = {q.id: dataset.qrels.get(q.id, {}) for q in questions}
        texts = [q.question for q in questions]
        dense_vectors = stack.embeddings.embed_documents(texts)
        for mode in MODES:
            log(f"Scoring {mode}")
            latencies = _time_queries(stack, name, texts, mode)
            run: dict[str, list[str]] = {}
            for q, text, vector in zip(questions, texts, dense_vectors, strict=True):
                hits = stack.retriever.search_vectors(
                    text, name, dense=vector, k=METRIC_DEPTH, mode=mode
                )
                run[q.id] = dedupe_ranking(h.doc_id for h in hits)
            result.modes[mode] = ModeResult(
                metrics=evaluate_run(run, qrels, ks=(1, 3, 5, 10, 100)),
                latency_ms_p50=percentile(latencies, 50),
                latency_ms_p95=percentile(latencies, 95),
            )
        return result
    finally:
        stack.close()


def _time_queries(
    stack: RetrievalStack, collection: str, texts: Sequence[str], mode: SearchMode
) -> list[float]:
    latencies = []
    for text in texts:
        started = time.perf_counter()
        stack.retriever.search(text, collection, k=10, mode=mode)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def _speedup(first: IngestReport, again: IngestReport) -> float:
    return first.seconds / again.seconds if again.seconds > 0 else float("inf")


def _settings_summary(settings: Settings, stack: RetrievalStack) -> dict[str, Any]:
    return {
        "vector_store": settings.vector_store,
        "embedding_model": settings.embedding_model,
        "chunk_size": stack.chunker.chunk_size,
        "chunk_overlap": stack.chunker.chunk_overlap,
        "fusion": settings.fusion,
        "rrf_k": settings.rrf_k,
        "dense_weight": settings.dense_weight,
        "sparse_weight": settings.sparse_weight,
        "prefetch_limit": settings.prefetch_limit,
        "bm25": {"k1": settings.bm25_k1, "b": settings.bm25_b, "avg_len": settings.bm25_avg_len},
    }


def write_report(result: RetrievalEvalResult, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"retrieval-{result.dataset}-{result.split}"
    md, js = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md.write_text(result.to_markdown(), encoding="utf-8")
    js.write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
    return md, js


def fresh_data_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="agentrag-eval-"))


def remove_data_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


__all__ = ["RetrievalDataset", "RetrievalEvalResult", "run_retrieval_eval", "write_report"]
