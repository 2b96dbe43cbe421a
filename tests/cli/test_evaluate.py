"""`agentrag eval`: a benchmark runs in a temporary data dir that is gone afterwards, and writes
its reports where asked."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from eval.langfuse_recorder import LangfuseRecorder
from eval.scripted_llm import ScriptedLLM
from tests.eval.test_agent_eval import QUESTIONS, write_dataset
from tests.eval.test_retrieval_eval import dataset  # noqa: F401 - the tiny BEIR-layout set

runner = CliRunner()


def eval_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("agentrag-eval-*"))


@pytest.mark.integration
def test_eval_retrieval_reports_and_leaves_no_data_dir(
    dataset: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_data = tmp_path / "user-data"
    monkeypatch.setenv("AGENTRAG_DATA_DIR", str(user_data))
    before = eval_dirs()
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["eval", "retrieval", "--dataset", str(dataset), "--split", "test", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(next(out.glob("*.json")).read_text())
    assert report["modes"]["hybrid"]["metrics"]["recall@10"] == 1.0
    assert eval_dirs() == before, "the temporary data dir was left behind"
    assert not user_data.exists(), "the benchmark wrote into the user's data dir"


def test_eval_agent_to_a_langfuse_dataset_without_tracing_is_one_clear_line(
    tmp_path: Path,
) -> None:
    folder = write_dataset(tmp_path / "tiny_multihop")
    result = runner.invoke(
        app, ["eval", "agent", "--dataset", str(folder), "--langfuse-dataset", "tiny"]
    )
    assert result.exit_code == 2, result.output
    for variable in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "LANGFUSE_BASE_URL"):
        assert variable in result.output
    assert "Traceback" not in result.output


@pytest.mark.integration
def test_eval_agent_logs_a_langfuse_experiment_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command as a user runs it, with an OpenAI-compatible model server that always
    answers "Dijon [1]." and Langfuse set up in the environment."""
    folder = write_dataset(tmp_path / "tiny_multihop")
    out = tmp_path / "out"
    with (
        LangfuseRecorder(public_key=f"pk-lf-{uuid.uuid4().hex}") as langfuse,
        ScriptedLLM(reply="Dijon [1].") as llm,
    ):
        for name, value in langfuse.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AGENTRAG_LLM_BASE_URL", llm.base_url)
        monkeypatch.setenv("AGENTRAG_LLM_SUPPORTS_TOOLS", "false")
        result = runner.invoke(
            app,
            [
                "eval", "agent", "--dataset", str(folder), "--limit", "2", "--effort", "low",
                "--langfuse-dataset", "tiny", "--langfuse-run", "nightly", "--out", str(out),
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        run_items = langfuse.run_items("nightly low")
        assert sorted(i.item_id for i in run_items) == sorted(
            i["id"] for i in langfuse.dataset_items("tiny")
        )
        assert len(run_items) == 2 and len(langfuse.trace_ids()) == 2
        run_scores = [s for s in langfuse.scores() if s.get("datasetRunId")]
    assert {s["name"] for s in run_scores} >= {"em", "f1", "llm_calls"}
    assert "nightly low" in result.output and "`tiny`" in result.output
    report = json.loads(next(out.glob("*.json")).read_text())
    assert report["langfuse"]["dataset"] == "tiny"
    assert report["langfuse"]["runs"]["low"]["run_name"] == "nightly low"
    assert report["systems"]["low"]["questions"] == 2
    assert QUESTIONS[0]["question"] == langfuse.dataset_items("tiny")[0]["input"]["question"]
