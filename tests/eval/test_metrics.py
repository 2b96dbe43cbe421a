"""Metric values checked against hand arithmetic and against numpy's percentile."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.metrics import (
    all_relevant_at_k,
    dedupe_ranking,
    evaluate_run,
    mrr_at_k,
    ndcg_at_k,
    percentile,
    precision_at_k,
    recall_at_k,
)

LOG2_3 = math.log2(3)


def test_ndcg_uses_linear_graded_gain() -> None:
    # ranking [d3, d1, d7], qrels {d1: 1, d2: 2}
    # DCG@10  = 1/log2(3)                 (d1 at rank 2)
    # IDCG@10 = 2/log2(2) + 1/log2(3)     (ideal order d2, d1)
    expected = (1 / LOG2_3) / (2 + 1 / LOG2_3)
    assert ndcg_at_k(["d3", "d1", "d7"], {"d1": 1, "d2": 2}, 10) == pytest.approx(expected)
    assert expected == pytest.approx(0.23981, abs=1e-5)


def test_ndcg_is_not_exponential_gain() -> None:
    # ranking [b, a], qrels {a: 3, b: 1}
    # linear: DCG = 1/1 + 3/log2(3) = 2.8928; IDCG = 3/1 + 1/log2(3) = 3.6309; nDCG = 0.7967
    # 2**rel - 1 would give (1 + 7/log2(3)) / (7 + 1/log2(3)) = 0.7098 instead
    linear = (1 + 3 / LOG2_3) / (3 + 1 / LOG2_3)
    assert ndcg_at_k(["b", "a"], {"a": 3, "b": 1}, 10) == pytest.approx(linear)
    assert linear == pytest.approx(0.7967, abs=1e-4)


def test_ndcg_ideal_is_cut_at_k() -> None:
    qrels = {"d1": 1, "d2": 2}
    # k=1: IDCG@1 = 2/log2(2) = 2 (only the best grade fits)
    assert ndcg_at_k(["d2"], qrels, 1) == pytest.approx(1.0)  # DCG@1 = 2
    assert ndcg_at_k(["d1", "d2"], qrels, 1) == pytest.approx(0.5)  # DCG@1 = 1
    assert ndcg_at_k(["d2", "d1"], qrels, 10) == pytest.approx(1.0)


def test_grade_zero_and_negative_are_not_relevant() -> None:
    # ranking [a, b, c], qrels {a: 0, b: -1, c: 1}: only c counts
    # DCG = 1/log2(4) = 0.5; IDCG = 1/log2(2) = 1
    qrels = {"a": 0, "b": -1, "c": 1}
    ranked = ["a", "b", "c"]
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(0.5)
    assert recall_at_k(ranked, qrels, 10) == pytest.approx(1.0)
    assert recall_at_k(ranked, qrels, 2) == 0.0
    assert mrr_at_k(ranked, qrels, 10) == pytest.approx(1 / 3)
    assert precision_at_k(ranked, qrels, 3) == pytest.approx(1 / 3)
    assert all_relevant_at_k(ranked, qrels, 3) == 1.0


@pytest.mark.parametrize("qrels", [{}, {"a": 0}, {"a": 0, "b": -1}])
def test_no_relevant_docs_scores_zero_everywhere(qrels: dict[str, int]) -> None:
    ranked = ["a", "b"]
    for metric in (ndcg_at_k, recall_at_k, precision_at_k, mrr_at_k, all_relevant_at_k):
        assert metric(ranked, qrels, 10) == 0.0


def test_k_larger_than_ranking() -> None:
    # ranking [d1], qrels {d1: 1, d2: 1}, k = 100
    qrels = {"d1": 1, "d2": 1}
    assert recall_at_k(["d1"], qrels, 100) == pytest.approx(0.5)  # 1 of 2 relevant
    assert precision_at_k(["d1"], qrels, 100) == pytest.approx(0.01)  # 1/100, divides by k
    # DCG = 1; IDCG = 1 + 1/log2(3)
    assert ndcg_at_k(["d1"], qrels, 100) == pytest.approx(1 / (1 + 1 / LOG2_3))
    assert mrr_at_k(["d1"], qrels, 100) == 1.0
    assert all_relevant_at_k(["d1"], qrels, 100) == 0.0


def test_empty_ranking() -> None:
    qrels = {"d1": 1}
    for metric in (ndcg_at_k, recall_at_k, precision_at_k, mrr_at_k, all_relevant_at_k):
        assert metric([], qrels, 10) == 0.0


def test_duplicates_count_once_at_first_position() -> None:
    # chunks of d1 twice then d2: deduped ranking is [d1, d2], so d2 sits at rank 2
    ranked = ["d1", "d1", "d2"]
    qrels = {"d2": 1}
    assert recall_at_k(ranked, qrels, 2) == 1.0  # without dedupe the top 2 would be [d1, d1]
    assert mrr_at_k(ranked, qrels, 2) == pytest.approx(0.5)
    assert ndcg_at_k(ranked, qrels, 2) == pytest.approx(1 / LOG2_3)  # DCG = 1/log2(3), IDCG = 1
    assert precision_at_k(ranked, qrels, 2) == pytest.approx(0.5)
    # a relevant doc repeated is not a second hit: [d2, d2] -> P@2 = 1/2, nDCG = 1
    assert precision_at_k(["d2", "d2"], qrels, 2) == pytest.approx(0.5)
    assert ndcg_at_k(["d2", "d2"], qrels, 2) == pytest.approx(1.0)


def test_dedupe_ranking_keeps_first_occurrence_order() -> None:
    assert dedupe_ranking(["c", "a", "c", "b", "a"]) == ["c", "a", "b"]
    assert dedupe_ranking(iter(["x", "x"])) == ["x"]
    assert dedupe_ranking([]) == []


def test_mrr_respects_cutoff() -> None:
    ranked = ["x", "y", "d1", "d2"]
    qrels = {"d1": 1, "d2": 1}
    assert mrr_at_k(ranked, qrels, 10) == pytest.approx(1 / 3)  # first relevant at rank 3
    assert mrr_at_k(ranked, qrels, 2) == 0.0


def test_all_relevant_needs_every_gold_doc() -> None:
    qrels = {"g1": 1, "g2": 1}
    assert all_relevant_at_k(["g1", "x", "g2"], qrels, 3) == 1.0
    assert all_relevant_at_k(["g1", "x", "g2"], qrels, 2) == 0.0
    assert recall_at_k(["g1", "x", "g2"], qrels, 2) == pytest.approx(0.5)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        ndcg_at_k(["a"], {"a": 1}, 0)
    with pytest.raises(TypeError, match="single string"):
        recall_at_k("abc", {"a": 1}, 10)


def test_evaluate_run_means_over_judged_queries() -> None:
    qrels = {
        "q1": {"d1": 1, "d2": 2},
        "q2": {"d5": 1},
        "q3": {"d9": 1},  # missing from the run: scores 0 but still counts
    }
    run = {
        "q1": ["d3", "d1", "d7"],
        "q2": ["d5", "d5", "d6"],
        "q_unjudged": ["d1"],  # not in qrels: ignored
    }
    result = evaluate_run(run, qrels, ks=(1, 3))
    assert set(result) == {
        f"{name}@{k}"
        for name in ("ndcg", "recall", "precision", "mrr", "all_relevant")
        for k in (1, 3)
    }
    # q1 nDCG@3 = (1/log2 3) / (2 + 1/log2 3); q2 = 1; q3 = 0
    q1_ndcg3 = (1 / LOG2_3) / (2 + 1 / LOG2_3)
    assert result["ndcg@3"] == pytest.approx((q1_ndcg3 + 1 + 0) / 3)
    # nDCG@1: q1 0 (d3 not relevant), q2 1, q3 0
    assert result["ndcg@1"] == pytest.approx(1 / 3)
    # recall@3: q1 1/2, q2 1, q3 0
    assert result["recall@3"] == pytest.approx((0.5 + 1 + 0) / 3)
    # mrr@3: q1 1/2, q2 1, q3 0
    assert result["mrr@3"] == pytest.approx((0.5 + 1 + 0) / 3)
    # P@3: q1 1/3, q2 1/3 (d5 counted once), q3 0
    assert result["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 3)
    # all_relevant@3: q1 0 (d2 missing), q2 1, q3 0
    assert result["all_relevant@3"] == pytest.approx(1 / 3)


def test_evaluate_run_default_keys() -> None:
    result = evaluate_run({"q": ["a"]}, {"q": {"a": 1}})
    for key in ("ndcg@10", "recall@100", "mrr@10", "precision@5", "all_relevant@1"):
        assert result[key] > 0


def test_evaluate_run_rejects_empty_input() -> None:
    with pytest.raises(ValueError, match="qrels is empty"):
        evaluate_run({"q": ["a"]}, {})
    with pytest.raises(ValueError, match="positive"):
        evaluate_run({"q": ["a"]}, {"q": {"a": 1}}, ks=(10, 0))


def test_percentile_hand_values() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # sorted [1, 2, 3, 4]
    assert percentile(values, 50) == pytest.approx(2.5)  # position 1.5 -> 2 + 0.5 * 1
    assert percentile(values, 95) == pytest.approx(3.85)  # position 2.85 -> 3 + 0.85 * 1
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile([7.0], 95) == 7.0


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = list(np.random.default_rng(0).exponential(scale=120.0, size=37))
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)
