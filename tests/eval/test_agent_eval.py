"""The agent benchmark on a tiny multi-hop dataset: real ingest, search, rerank and graph; the
only fake is the chat model, which answers "Dijon [1]." to everything."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.services import Services
from agent.settings import load_settings
from eval.agent import (
    BASELINE,
    AgentEvalResult,
    QuestionRecord,
    run_agent_eval,
    write_agent_report,
)
from retrievers.embeddings import LocalEmbeddings
from retrievers.rerank import EmbeddingReranker
from retrievers.stack import RetrievalStack
from tests.agent.conftest import scripted

DOCS = {
    "eiffel-tower": (
        "Eiffel Tower",
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, built by the company of "
        "the engineer Gustave Eiffel for the 1889 World's Fair.",
    ),
    "gustave-eiffel": (
        "Gustave Eiffel",
        "Gustave Eiffel was a French civil engineer, born in Dijon in 1832, whose company "
        "designed bridges and towers.",
    ),
    "louvre": (
        "Louvre",
        "The Louvre is the world's most visited art museum, in the centre of Paris.",
    ),
    "seine": (
        "Seine",
        "The Seine is a river that flows through Paris and reaches the English Channel at "
        "Le Havre.",
    ),
    "mount-fuji": (
        "Mount Fuji",
        "Mount Fuji is the highest mountain in Japan, a volcano 3,776 metres tall on the "
        "island of Honshu.",
    ),
    "honshu": (
        "Honshu",
        "Honshu is the largest and most populous island of Japan, home to Tokyo.",
    ),
}
QUESTIONS = [
    {
        "id": "q-dijon",
        "question": "In which town was Gustave Eiffel, the engineer of the Eiffel Tower, born?",
        "answer": "Dijon",
        "answers": ["Dijon"],
        "supporting_doc_ids": ["eiffel-tower", "gustave-eiffel"],
    },
    {
        "id": "q-seine",
        "question": "Which river flows through the city of the Louvre museum?",
        "answer": "the Seine",
        "answers": ["the Seine", "Seine River"],
        "supporting_doc_ids": ["louvre", "seine"],
    },
    {
        "id": "q-fuji",
        "question": "Are Mount Fuji and the island of Honshu both in Japan?",
        "answer": "yes",
        "answers": ["yes"],
        "supporting_doc_ids": ["mount-fuji", "honshu"],
    },
]
NAMES_BOTH_GOLD_DOCS = {"q-dijon", "q-fuji"}
SYSTEMS = [BASELINE, "low", "medium", "high"]


def write_dataset(root: Path) -> Path:
    root.mkdir()
    with (root / "corpus.jsonl").open("w") as f:
        for doc_id, (title, text) in DOCS.items():
            f.write(json.dumps({"id": doc_id, "title": title, "text": text}) + "\n")
    with (root / "questions.jsonl").open("w") as f:
        for question in QUESTIONS:
            f.write(json.dumps(question) + "\n")
    return root


def scripted_services(data_dir: Path, minilm: LocalEmbeddings, **settings_: Any) -> Services:
    """Real store, embeddings and reranker; a chat model that always says "Dijon [1]."."""
    settings = load_settings(data_dir=data_dir, llm_base_url="http://127.0.0.1:9/v1", **settings_)
    stack = RetrievalStack(settings, embeddings=minilm)
    return Services(
        settings,
        stack=stack,
        reranker=EmbeddingReranker(minilm),
        chat_models={"default": scripted(*["Dijon [1]."] * 200)},
        supports_tools=False,
    )


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory, minilm: LocalEmbeddings) -> AgentEvalResult:
    """One benchmark run shared by the tests below: it is the slow part."""
    root = tmp_path_factory.mktemp("agent-eval")
    dataset = write_dataset(root / "tiny_multihop")
    lines: list[str] = []
    streamed: list[QuestionRecord] = []
    with pytest.MonkeyPatch.context() as env:  # what tests/conftest.py does per test
        for key in list(os.environ):
            if key.startswith("AGENTRAG_"):
                env.delenv(key)
        env.setenv("AGENTRAG_CONFIG", str(root / "no-agentrag.toml"))
        env.chdir(root)
        services = scripted_services(root / "data", minilm)
        try:
            outcome = run_agent_eval(
                dataset,
                services.settings,
                limit=None,
                services=services,
                log=lines.append,
                on_record=streamed.append,
            )
        finally:
            services.close()
    assert any(line.startswith("high 3/3") for line in lines)
    assert streamed == outcome.records  # each record is handed over as soon as it is scored
    return outcome


@pytest.mark.integration
def test_every_system_answers_every_question(result: AgentEvalResult, tmp_path: Path) -> None:
    assert list(result.systems) == SYSTEMS
    assert result.questions == 3 and result.yes_no_questions == 1
    assert result.corpus_documents == 6 and result.ingest["chunks_added"] == 6
    assert len(result.records) == 3 * len(SYSTEMS)
    for record in result.records:
        assert record.error is None, record
        assert record.prediction, record
        assert record.llm_calls >= 1 and record.tokens > 0
        assert 0 <= record.model_ms <= record.turn_ms
    for name, summary in result.systems.items():
        assert summary.questions == 3 and summary.errors == 0
        assert all(0.0 <= value <= 1.0 for value in summary.metrics.values()), name
        assert summary.scored["answer_in_evidence"] == 2  # the yes/no question is left out
        assert summary.scored["em"] == 3
        assert summary.metrics["f1"] >= summary.metrics["em"]
        latency = summary.latency_ms
        assert 0 < latency["turn_p50"] <= latency["turn_p95"]
        assert latency["model_p50"] <= latency["turn_p95"]
    baseline = result.systems[BASELINE]
    assert baseline.llm_calls == 1.0 and set(baseline.routes) == {"search+generate"}
    assert baseline.evidence_docs == 6.0  # six one-chunk documents all fit in its top 10
    assert result.systems["high"].llm_calls >= result.systems["low"].llm_calls


@pytest.mark.integration
def test_scores_follow_the_questions(result: AgentEvalResult) -> None:
    by_key = {(r.question_id, r.system): r for r in result.records}
    for system in SYSTEMS:
        for question_id in NAMES_BOTH_GOLD_DOCS:
            record = by_key[(question_id, system)]
            assert record.metrics["gold_recall_all"] == 1.0, record
            assert record.metrics["gold_recall_docs"] == 1.0, record
        assert by_key[("q-fuji", system)].metrics["answer_in_evidence"] is None
    dijon, seine = by_key[("q-dijon", BASELINE)], by_key[("q-seine", BASELINE)]
    assert dijon.prediction == "Dijon [1]."
    assert dijon.metrics["em"] == dijon.metrics["f1"] == 1.0
    assert dijon.metrics["answer_in_evidence"] == 1.0  # six documents all fit in the top 10
    assert seine.metrics["em"] == seine.metrics["f1"] == 0.0
    assert len(dijon.evidence_doc_ids) == 6
    assert result.systems[BASELINE].metrics["em"] == pytest.approx(1 / 3)


@pytest.mark.integration
def test_reports_are_written(result: AgentEvalResult, tmp_path: Path) -> None:
    paths = write_agent_report(result, tmp_path / "out")
    md, js, png, jsonl = paths
    assert [p.suffix for p in paths] == [".md", ".json", ".png", ".jsonl"]
    table = md.read_text()
    assert "| metric | baseline | low | medium | high |" in table
    assert "answer in evidence (n=2, not yes/no)" in table
    summary = json.loads(js.read_text())
    assert set(summary["systems"]) == set(SYSTEMS)
    assert summary["systems"]["baseline"]["metrics"]["em"] == pytest.approx(1 / 3, abs=1e-4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 12
    first = rows[0]
    for key in ("question_id", "question", "gold_answer", "system", "prediction"):
        assert first[key]
    for key in ("evidence_doc_ids", "metrics", "llm_calls", "tokens", "turn_ms", "flags"):
        assert key in first
    assert all(len(r["calls"]) == r["llm_calls"] for r in rows)
    agent_rows = [r for r in rows if r["system"] != BASELINE]
    assert all(r["route"] and r["plan"] for r in agent_rows)


@pytest.mark.integration
def test_one_effort_without_the_baseline(tmp_path: Path, minilm: LocalEmbeddings) -> None:
    dataset = write_dataset(tmp_path / "tiny_multihop")
    services = scripted_services(tmp_path / "data", minilm)
    try:
        result = run_agent_eval(
            dataset, services.settings, limit=1, efforts=["low"], baseline=False, services=services
        )
    finally:
        services.close()
    assert list(result.systems) == ["low"]
    assert [(r.question_id, r.system) for r in result.records] == [("q-dijon", "low")]


def test_unknown_effort_is_refused_before_any_work(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    with pytest.raises(ConfigError, match="choose from low, medium, high"):
        run_agent_eval(tmp_path / "missing", settings, limit=None, efforts=["max"])
    with pytest.raises(ConfigError, match="Nothing to run"):
        run_agent_eval(tmp_path / "missing", settings, limit=None, efforts=[], baseline=False)
    assert not (tmp_path / "data").exists()
