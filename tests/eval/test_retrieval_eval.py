"""The retrieval benchmark on a tiny BEIR-layout dataset: real ingest, real search, real metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.settings import Settings
from eval.retrieval import run_retrieval_eval, write_report

DOCS = {
    "d1": ("Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose."),
    "d2": ("Volcanoes", "Magma rises through the crust and erupts as lava and ash."),
    "d3": ("Vaccines", "Vaccines train the immune system to recognise a pathogen."),
    "d4": ("Tides", "The gravitational pull of the Moon causes ocean tides."),
    "d5": ("Batteries", "Lithium-ion batteries store energy by moving lithium ions."),
}
QUERIES = {
    "q1": ("How do plants make glucose from sunlight?", "d1"),
    "q2": ("What causes the ocean tides?", "d4"),
    "q3": ("How do vaccines help the immune system?", "d3"),
}


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    with (root / "corpus.jsonl").open("w") as f:
        for doc_id, (title, text) in DOCS.items():
            f.write(json.dumps({"id": doc_id, "title": title, "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as f:
        for qid, (text, _) in QUERIES.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, (_, d) in QUERIES.items()]
    (root / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.integration
def test_benchmark_scores_all_modes_and_reingest(
    dataset: Path, settings: Settings, tmp_path: Path
) -> None:
    result = run_retrieval_eval(dataset, settings, split="test")
    assert result.questions == 3 and result.corpus_documents == 5
    assert set(result.modes) == {"dense", "sparse", "hybrid"}
    for mode, scores in result.modes.items():
        assert scores.metrics["recall@10"] == 1.0, mode  # five documents: all are in the top 10
        assert scores.metrics["ndcg@10"] > 0.9, mode  # each query names its topic plainly
        assert 0 < scores.latency_ms_p50 <= scores.latency_ms_p95
    assert result.first_ingest["chunks_added"] == 5
    assert result.reingest["chunks_added"] == 0
    md, js = write_report(result, tmp_path / "out")
    assert "| hybrid |" in md.read_text()
    assert json.loads(js.read_text())["modes"]["dense"]["metrics"]["recall@10"] == 1.0


@pytest.mark.integration
def test_fusion_sweep_ranks_settings(dataset: Path, settings: Settings) -> None:
    from eval.fusion_sweep import fusion_grid, run_fusion_sweep, sweep_markdown

    rows = run_fusion_sweep(dataset, settings, split="test")
    assert len(rows) == len(fusion_grid())
    assert [r.ndcg_at_10 for r in rows] == sorted((r.ndcg_at_10 for r in rows), reverse=True)
    assert rows[0].ndcg_at_10 > 0.9
    assert "| dbsf |" in sweep_markdown(rows, "tiny", "test")
