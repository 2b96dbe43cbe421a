"""The agent benchmark traced into Langfuse, and run as Langfuse experiments, against the
recorder with the real SDK: graph, store, embeddings and reranker are real; the only fake is the
chat model, which answers "Dijon [1]." to everything.

Each test has its own recorder and public key: the SDK keeps one client state per public key
for the whole process.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from langfuse import LangfuseOtelSpanAttributes

from agent.errors import ConfigError
from agent.services import Services
from agent.settings import load_settings
from agent.tracing import TURN_NAME
from eval.agent import AgentEvalResult, QuestionRecord, run_agent_eval
from eval.datasets import Question
from eval.langfuse_experiment import ExperimentError, dataset_item_id, prepare_dataset
from eval.langfuse_recorder import LangfuseRecorder
from retrievers.embeddings import LocalEmbeddings
from tests.conftest import REPO
from tests.eval.test_agent_eval import QUESTIONS, scripted_services, write_dataset
from tests.eval.test_langfuse_recorder import sdk_client

DATASET = "tiny-multihop-eval"
EFFORTS = ["low", "medium"]
GRAPH = "agentrag"
"""The compiled graph's name: its run is the turn's one child span."""
SESSION = LangfuseOtelSpanAttributes.TRACE_SESSION_ID
USER = LangfuseOtelSpanAttributes.TRACE_USER_ID
TAGS = LangfuseOtelSpanAttributes.TRACE_TAGS


@pytest.fixture
def recorder() -> Iterator[LangfuseRecorder]:
    with LangfuseRecorder(public_key=f"pk-lf-{uuid.uuid4().hex}") as rec:
        yield rec


@contextmanager
def traced_services(
    root: Path, minilm: LocalEmbeddings, rec: LangfuseRecorder
) -> Iterator[Services]:
    services = scripted_services(
        root / "data",
        minilm,
        langfuse_public_key=rec.public_key,
        langfuse_secret_key=rec.secret_key,
        langfuse_base_url=rec.base_url,
    )
    try:
        yield services
    finally:
        services.tracing.shutdown()
        services.close()


def records_by_key(result: AgentEvalResult) -> dict[tuple[str, str], QuestionRecord]:
    return {(r.question_id, r.system): r for r in result.records}


def item_posts(rec: LangfuseRecorder) -> int:
    return sum(
        1 for r in rec.requests if r.method == "POST" and r.path == "/api/public/dataset-items"
    )


@pytest.mark.integration
def test_each_agent_turn_is_one_trace_of_its_own(
    tmp_path: Path, minilm: LocalEmbeddings, recorder: LangfuseRecorder
) -> None:
    dataset = write_dataset(tmp_path / "tiny_multihop")
    with traced_services(tmp_path, minilm, recorder) as services:
        result = run_agent_eval(dataset, services.settings, efforts=EFFORTS, services=services)

    links = result.langfuse
    assert links is not None and links.dataset is None and links.runs == {}
    effort_of_session = {session: effort for effort, session in links.sessions.items()}
    assert set(links.sessions) == set(EFFORTS)
    by_key = records_by_key(result)
    traced: list[tuple[str, str]] = []
    for trace_id in recorder.trace_ids():
        turn = recorder.root(trace_id)
        assert turn.name == TURN_NAME and turn.observation_type == "agent"
        [graph] = recorder.children(turn)
        assert graph.name == GRAPH and recorder.children(graph)
        effort = effort_of_session[turn.attributes[SESSION]]
        question_id = turn.metadata["question_id"]
        assert turn.metadata["entry"] == "eval" and turn.attributes[USER] == "eval"
        assert {f"effort:{effort}", "dataset:tiny_multihop"} <= set(turn.attributes[TAGS])
        record = by_key[(question_id, effort)]
        assert turn.output["answer"] == record.prediction
        [llm_calls] = [s for s in recorder.scores(trace_id) if s["name"] == "llm_calls"]
        assert llm_calls["value"] == record.llm_calls
        traced.append((question_id, effort))
    # one trace per question and effort; the baseline is not the agent and is not traced
    assert sorted(traced) == sorted((q["id"], e) for q in QUESTIONS for e in EFFORTS)
    assert "one trace per agent turn" in result.to_markdown()
    assert all(s in result.to_markdown() for s in links.sessions.values())


@pytest.mark.integration
def test_a_dataset_run_links_each_question_trace_to_its_item_with_its_scores(
    tmp_path: Path, minilm: LocalEmbeddings, recorder: LangfuseRecorder
) -> None:
    dataset = write_dataset(tmp_path / "tiny_multihop")
    with traced_services(tmp_path, minilm, recorder) as services:
        result = run_agent_eval(
            dataset,
            services.settings,
            efforts=EFFORTS,
            services=services,
            langfuse_dataset=DATASET,
        )

    [stored] = recorder.datasets()
    assert stored["name"] == DATASET
    items = recorder.dataset_items(DATASET)
    assert [i["id"] for i in items] == [dataset_item_id(DATASET, q["id"]) for q in QUESTIONS]
    assert items[0]["input"] == {"question": QUESTIONS[0]["question"]}
    assert items[0]["expectedOutput"] == {
        "answers": ["Dijon"],
        "supporting_doc_ids": ["eiffel-tower", "gustave-eiffel"],
    }
    assert items[0]["metadata"]["question_id"] == "q-dijon"
    question_of_item = {i["id"]: i["metadata"]["question_id"] for i in items}

    links = result.langfuse
    assert links is not None and links.dataset == DATASET
    assert links.dataset_url == (
        f"{recorder.base_url}/project/{recorder.project_id}/datasets/{stored['id']}"
    )
    assert list(links.runs) == EFFORTS
    by_key = records_by_key(result)
    item_traces: set[str] = set()
    for effort, run in links.runs.items():
        assert re.fullmatch(
            rf"agentrag \S+ {effort} \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ", run.run_name
        )
        assert run.items == len(QUESTIONS)
        run_items = recorder.run_items(run.run_name)
        assert sorted(i.item_id for i in run_items) == sorted(question_of_item)
        assert {i.experiment_id for i in run_items} == {run.experiment_id}
        assert {i.dataset_id for i in run_items} == {stored["id"]}
        for run_item in run_items:
            trace_id = run_item.trace_id
            root = recorder.root(trace_id)
            assert root.name == "experiment-item-run"
            task = recorder.span("experiment-item-task", trace_id)
            assert task.parent_span_id == root.span_id
            assert run_item.root_observation_id == task.span_id
            turn = recorder.span(TURN_NAME, trace_id)
            assert turn.parent_span_id == task.span_id
            graph = recorder.span(GRAPH, trace_id)
            assert graph.parent_span_id == turn.span_id and recorder.children(graph)

            record = by_key[(question_of_item[run_item.item_id], effort)]
            assert task.output == {
                "answer": record.prediction,
                "evidence_doc_ids": record.evidence_doc_ids,
            }
            scores = recorder.scores(trace_id)
            item_scores = {s["name"]: s["value"] for s in scores if s.get("observationId")}
            assert {s["observationId"] for s in scores if s.get("observationId")} == {task.span_id}
            assert item_scores == pytest.approx(
                {k: v for k, v in record.metrics.items() if v is not None}
                | {"tokens": record.tokens, "turn_ms": record.turn_ms, "model_ms": record.model_ms}
            )
            [llm_calls] = [s for s in scores if s["name"] == "llm_calls"]  # the turn's own
            assert llm_calls["value"] == record.llm_calls
            item_traces.add(trace_id)

        summary = result.systems[effort]
        run_scores = {
            s["name"]: s["value"]
            for s in recorder.scores()
            if s.get("datasetRunId") == run.experiment_id
        }
        assert run_scores["em"] == pytest.approx(summary.metrics["em"])
        assert run_scores["f1"] == pytest.approx(summary.metrics["f1"])
        assert run_scores["gold_recall_all"] == pytest.approx(summary.metrics["gold_recall_all"])
        assert run_scores["llm_calls"] == pytest.approx(summary.llm_calls)
        assert run_scores["turn_ms_p50"] == pytest.approx(summary.latency_ms["turn_p50"])
        assert run_scores["errors"] == 0.0

    # exactly one trace per question and effort: the item's, with the turn inside it
    assert set(recorder.trace_ids()) == item_traces
    assert len(item_traces) == len(QUESTIONS) * len(EFFORTS)
    report = result.to_markdown()
    assert DATASET in report and all(run.run_name in report for run in links.runs.values())
    assert (
        result.as_dict()["langfuse"]["runs"]["low"]["experiment_id"]
        == links.runs["low"].experiment_id
    )


@pytest.mark.integration
def test_a_second_run_reuses_the_dataset_and_its_items(
    tmp_path: Path, minilm: LocalEmbeddings, recorder: LangfuseRecorder
) -> None:
    dataset = write_dataset(tmp_path / "tiny_multihop")
    lines: list[str] = []
    with traced_services(tmp_path, minilm, recorder) as services:
        runs = []
        for name in ("v1", "v2"):
            result = run_agent_eval(
                dataset,
                services.settings,
                limit=2,
                efforts=["low"],
                baseline=False,
                services=services,
                langfuse_dataset=DATASET,
                langfuse_run=name,
                log=lines.append,
            )
            assert result.langfuse is not None
            runs.append(result.langfuse.runs["low"])
            if name == "v1":
                posts_after_first = item_posts(recorder)

    assert len(recorder.datasets()) == 1
    ids = [dataset_item_id(DATASET, q["id"]) for q in QUESTIONS[:2]]
    assert [i["id"] for i in recorder.dataset_items(DATASET)] == ids
    assert item_posts(recorder) == posts_after_first == 2  # the rerun wrote nothing
    assert f"Langfuse dataset {DATASET!r} reused, 0 of 2 item(s) written" in lines
    first, second = runs
    assert (first.run_name, second.run_name) == ("v1 low", "v2 low")
    assert first.experiment_id != second.experiment_id
    traces = []
    for run in runs:
        run_items = recorder.run_items(run.run_name)
        assert sorted(i.item_id for i in run_items) == sorted(ids)
        traces += [i.trace_id for i in run_items]
    assert sorted(traces) == sorted(recorder.trace_ids()) and len(set(traces)) == 4


def question(qid: str, answers: list[str], **extra: object) -> Question:
    return Question(qid, f"Question {qid}?", answers[0], answers, [f"doc-{qid}"], dict(extra))


@pytest.mark.integration
def test_dataset_items_are_created_once_and_updated_in_place(recorder: LangfuseRecorder) -> None:
    q1 = question("q1", ["Paris"], supporting_titles=["France"])
    q2, q3 = question("q2", ["Rome"]), question("q3", ["Madrid"])
    with sdk_client(recorder) as client:
        made = prepare_dataset(client, "capitals", [q1, q2, q3], source="src", split="dev")
        assert (made.created, made.written) == (True, 3)
        [item] = [item for q, item in made.items if q.id == "q1"]
        assert item.expected_output == {
            "answers": ["Paris"],
            "supporting_doc_ids": ["doc-q1"],
            "supporting_titles": ["France"],
        }
        again = prepare_dataset(client, "capitals", [q1, q2], source="src", split="dev")
        assert (again.created, again.written, again.id) == (False, 0, made.id)
        changed = question("q2", ["Rome", "Roma"])
        updated = prepare_dataset(client, "capitals", [q1, changed], source="src", split="dev")
        assert updated.written == 1
    stored = recorder.dataset_items("capitals")
    assert [i["id"] for i in stored] == [dataset_item_id("capitals", q) for q in ("q1", "q2", "q3")]
    assert stored[1]["expectedOutput"]["answers"] == ["Rome", "Roma"]
    assert dataset_item_id("capitals", "q1") != dataset_item_id("other", "q1")


@pytest.mark.integration
def test_a_refused_dataset_call_is_one_clear_error(recorder: LangfuseRecorder) -> None:
    with (
        sdk_client(
            recorder, public_key=f"pk-lf-{uuid.uuid4().hex}", secret_key="sk-lf-wrong"
        ) as client,
        pytest.raises(ExperimentError, match=r"HTTP 401.*LANGFUSE_SECRET_KEY"),
    ):
        prepare_dataset(client, "capitals", [question("q1", ["Paris"])], source="s", split="d")
    assert recorder.datasets() == []


def test_a_dataset_run_without_tracing_is_refused_before_any_work(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    with pytest.raises(ConfigError, match="LANGFUSE_SECRET_KEY and LANGFUSE_BASE_URL"):
        run_agent_eval(tmp_path / "missing", settings, langfuse_dataset=DATASET)
    with pytest.raises(ConfigError, match="needs a Langfuse dataset"):
        run_agent_eval(tmp_path / "missing", settings, langfuse_run="v1")
    with pytest.raises(ConfigError, match="at least one effort"):
        run_agent_eval(tmp_path / "missing", settings, efforts=[], langfuse_dataset=DATASET)
    assert not (tmp_path / "data").exists()


def test_the_benchmark_and_its_command_import_nothing_of_langfuse() -> None:
    """Tracing off costs nothing: Langfuse is imported only where a traced turn or a dataset
    needs it."""
    check = (
        "import sys, eval.agent, cli.main; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'langfuse'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
