"""Grid search over hybrid fusion settings on a tuning split (never on the split you report).

Ingests the corpus once into the configured data directory (idempotent: a rerun embeds nothing),
embeds the questions once, then replays only the Qdrant query for each setting, so a sweep of
dozens of settings costs seconds after the first run.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.settings import Settings
from eval.datasets import iter_corpus, load_retrieval_dataset
from eval.metrics import dedupe_ranking, evaluate_run
from eval.retrieval import METRIC_DEPTH, corpus_documents
from retrievers.search import HybridRetriever
from retrievers.stack import RetrievalStack
from retrievers.store import Fusion, QueryOptions


@dataclass(frozen=True, slots=True)
class SweepRow:
    options: QueryOptions
    ndcg_at_10: float
    recall_at_100: float


def fusion_grid() -> list[QueryOptions]:
    grid = [
        QueryOptions(fusion="rrf", rrf_k=k, dense_weight=dw, sparse_weight=sw, prefetch_limit=p)
        for k, (dw, sw), p in itertools.product(
            (2, 10, 30, 60),
            ((1.0, 1.0), (1.0, 1.5), (1.5, 1.0), (1.0, 2.0), (2.0, 1.0)),
            (50, 100),
        )
    ]
    fusion: Fusion = "dbsf"
    grid += [QueryOptions(fusion=fusion, prefetch_limit=p) for p in (50, 100)]
    return grid


def run_fusion_sweep(
    dataset_path: Path,
    settings: Settings,
    *,
    split: str = "train",
    log: Callable[[str], None] = lambda _: None,
) -> list[SweepRow]:
    dataset = load_retrieval_dataset(dataset_path, split)
    collection = f"eval-{dataset.name}".replace("_", "-")
    stack = RetrievalStack(settings)
    try:
        log(f"Ingesting {dataset.corpus_path} into {collection!r} (skipped when unchanged)")
        docs = corpus_documents(iter_corpus(dataset.corpus_path), dataset.name)
        stack.ingestor.ingest_documents(list(docs), collection)
        texts = [q.question for q in dataset.questions]
        vectors = stack.embeddings.embed_documents(texts)
        qrels = {q.id: dataset.qrels.get(q.id, {}) for q in dataset.questions}
        rows = []
        for options in fusion_grid():
            retriever = HybridRetriever(stack.store, stack.embeddings, stack.sparse, options)
            run = {
                q.id: dedupe_ranking(
                    h.doc_id
                    for h in retriever.search_vectors(
                        text, collection, dense=vector, k=METRIC_DEPTH, mode="hybrid"
                    )
                )
                for q, text, vector in zip(dataset.questions, texts, vectors, strict=True)
            }
            metrics = evaluate_run(run, qrels, ks=(10, 100))
            rows.append(SweepRow(options, metrics["ndcg@10"], metrics["recall@100"]))
            log(f"{options} -> nDCG@10 {metrics['ndcg@10']:.4f}")
        return sorted(rows, key=lambda r: r.ndcg_at_10, reverse=True)
    finally:
        stack.close()


def sweep_markdown(rows: list[SweepRow], dataset: str, split: str) -> str:
    lines = [
        f"# Fusion sweep: {dataset} ({split})",
        "",
        "| fusion | rrf k | dense w | sparse w | prefetch | nDCG@10 | recall@100 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        o = r.options
        lines.append(
            f"| {o.fusion} | {o.rrf_k if o.fusion == 'rrf' else '-'} | {o.dense_weight} | "
            f"{o.sparse_weight} | {o.prefetch_limit} | {r.ndcg_at_10:.4f} | {r.recall_at_100:.4f} |"
        )
    return "\n".join(lines) + "\n"
