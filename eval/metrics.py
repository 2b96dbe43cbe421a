"""BEIR-style retrieval metrics, computed the way pytrec_eval (trec_eval) and BEIR compute them.

Numbers from this module are compared with published BEIR tables, so the conventions follow
theirs rather than any textbook variant:

- nDCG uses linear gain (the relevance grade itself, not ``2**rel - 1``) with a ``log2(rank + 1)``
  discount, and the ideal DCG comes from the judged grades sorted high to low (trec_eval's
  ``ndcg_cut``).
- A document is relevant when its grade is above 0; grade 0 or below means judged non-relevant.
- Precision@k divides by k even when fewer than k documents were returned (trec_eval's ``P_k``).
- MRR@k is the reciprocal rank of the first relevant document within the top k (BEIR's own MRR).
- A query with no relevant documents scores 0 on every metric, so it cannot flatter a run.

Rankings are lists of document ids, best first. A chunk-level ranking mapped to documents repeats
documents; every metric counts a document once, at its first (best) position, as pytrec_eval does
for a run, which is a dict and cannot hold a document twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "all_relevant_at_k",
    "dedupe_ranking",
    "evaluate_run",
    "mrr_at_k",
    "ndcg_at_k",
    "percentile",
    "precision_at_k",
    "recall_at_k",
]

DEFAULT_KS: tuple[int, ...] = (1, 3, 5, 10, 100)


def dedupe_ranking(doc_ids: Iterable[str]) -> list[str]:
    """Keep each document at its first position: a later repeat adds no new evidence."""
    return list(dict.fromkeys(doc_ids))


def _top_k(ranked: Sequence[str], k: int) -> list[str]:
    """The first k distinct ids; stops early so a 1000-long run costs only k steps at small k."""
    if isinstance(ranked, str):
        # A bare string is a Sequence[str] too; scoring its characters would be silently wrong.
        raise TypeError("ranked must be a sequence of document ids, not a single string")
    if k <= 0:
        raise ValueError(f"k must be a positive integer, got {k}")
    seen: dict[str, None] = {}
    for doc_id in ranked:
        if doc_id not in seen:
            seen[doc_id] = None
            if len(seen) == k:
                break
    return list(seen)


def _relevant(qrels: Mapping[str, int]) -> set[str]:
    return {doc_id for doc_id, grade in qrels.items() if grade > 0}


def ndcg_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """nDCG@k with linear gains, so scores line up with BEIR's published tables."""
    top = _top_k(ranked, k)
    dcg = 0.0
    for index, doc_id in enumerate(top):
        grade = qrels.get(doc_id, 0)
        if grade > 0:
            dcg += grade / math.log2(index + 2)
    ideal_grades = sorted((grade for grade in qrels.values() if grade > 0), reverse=True)[:k]
    ideal = sum(grade / math.log2(index + 2) for index, grade in enumerate(ideal_grades))
    return dcg / ideal if ideal > 0 else 0.0


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Share of the relevant documents found in the top k: what a reader stage can still use."""
    relevant = _relevant(qrels)
    if not relevant:
        return 0.0
    return len(relevant.intersection(_top_k(ranked, k))) / len(relevant)


def precision_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Relevant documents in the top k over k; a short ranking is not rewarded for being short."""
    relevant = _relevant(qrels)
    return len(relevant.intersection(_top_k(ranked, k))) / k


def mrr_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document in the top k, 0 if none is there."""
    relevant = _relevant(qrels)
    for index, doc_id in enumerate(_top_k(ranked, k)):
        if doc_id in relevant:
            return 1.0 / (index + 1)
    return 0.0


def all_relevant_at_k(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """1.0 only when every relevant document is in the top k.

    Multi-hop questions need every gold document to be answerable, so recall 0.5 on a two-hop
    question is usually as bad as 0; this metric reports the share of questions fully covered.
    """
    relevant = _relevant(qrels)
    if not relevant:
        return 0.0
    return 1.0 if relevant.issubset(_top_k(ranked, k)) else 0.0


_METRICS: tuple[tuple[str, Callable[[Sequence[str], Mapping[str, int], int], float]], ...] = (
    ("ndcg", ndcg_at_k),
    ("recall", recall_at_k),
    ("precision", precision_at_k),
    ("mrr", mrr_at_k),
    ("all_relevant", all_relevant_at_k),
)


def evaluate_run(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Mean of every metric at every k over the queries in ``qrels``.

    Keys are ``"<metric>@<k>"`` for metric in ndcg, recall, precision, mrr, all_relevant
    (e.g. ``"ndcg@10"``). The mean is over all judged queries: a query the run has no ranking for
    scores 0 instead of being dropped (pytrec_eval drops it, which would let a system that fails
    on hard queries look better). Queries in the run but not in ``qrels`` are ignored.
    """
    if not qrels:
        raise ValueError("qrels is empty: there is no judged query to average over")
    if not ks:
        raise ValueError("ks is empty: give at least one cutoff, e.g. (10,)")
    for k in ks:
        if k <= 0:
            raise ValueError(f"every k must be a positive integer, got {k}")
    totals = {f"{name}@{k}": 0.0 for name, _ in _METRICS for k in ks}
    for query_id, judged in qrels.items():
        ranked = dedupe_ranking(run.get(query_id, ()))
        for name, metric in _METRICS:
            for k in ks:
                totals[f"{name}@{k}"] += metric(ranked, judged, k)
    return {key: total / len(qrels) for key, total in totals.items()}


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (q in [0, 100]) with linear interpolation, as ``numpy.percentile``.

    Latency reports quote p50/p95 over a few hundred requests; interpolating keeps p95 stable
    when one request moves, where nearest-rank would jump between neighbouring samples.
    """
    if not values:
        raise ValueError("percentile of an empty sequence is undefined")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be between 0 and 100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    fraction = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction
