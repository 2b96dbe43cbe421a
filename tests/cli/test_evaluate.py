"""`agentrag eval`: a benchmark runs in a temporary data dir that is gone afterwards, and writes
its reports where asked."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
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
