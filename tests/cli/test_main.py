"""The command line as a user drives it: real settings, real store, real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from eval.langfuse_recorder import LangfuseRecorder
from eval.scripted_llm import ScriptedLLM
from prompts.loader import load_prompt
from tests.conftest import SAMPLES

runner = CliRunner()


@pytest.fixture
def data_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("AGENTRAG_DATA_DIR", str(data))
    return data


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("ingest", "search", "collections", "delete", "eval"):
        assert command in result.output


@pytest.mark.integration
def test_ingest_search_collections_delete(data_env: Path) -> None:
    result = runner.invoke(
        app,
        ["ingest", str(SAMPLES / "astronomy"), "-c", "astro", "--description", "space", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["documents"] == 2 and report["chunks_added"] > 0

    result = runner.invoke(app, ["collections", "--json"])
    assert result.exit_code == 0, result.output
    (info,) = json.loads(result.output)
    assert info["name"] == "astro" and info["description"] == "space"
    assert info["points"] == report["chunks_added"]

    result = runner.invoke(
        app, ["search", "hottest planet surface", "-c", "astro", "-k", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert len(hits) == 2
    assert "Venus" in hits[0]["text"]
    assert hits[0]["title"] == "The Solar System"

    result = runner.invoke(app, ["search", "nearest star", "-c", "astro", "--mode", "sparse"])
    assert result.exit_code == 0, result.output
    assert "Proxima Centauri" in result.output
    assert "stars.md" in result.output

    result = runner.invoke(
        app, ["delete", "-c", "astro", "--source", str(SAMPLES / "astronomy" / "stars.md")]
    )
    assert result.exit_code == 0, result.output
    assert "Removed" in result.output
    result = runner.invoke(app, ["search", "Proxima Centauri", "-c", "astro", "--json"])
    assert all("stars.md" not in h["source"] for h in json.loads(result.output))


def test_invalid_setting_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTRAG_VECTOR_STORE", "mongo")
    result = runner.invoke(app, ["collections"])
    assert result.exit_code == 2
    assert "AGENTRAG_VECTOR_STORE" in result.output
    assert "Traceback" not in result.output


def test_missing_path_and_unknown_collection(data_env: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["ingest", str(tmp_path / "nowhere"), "-c", "x"])
    assert result.exit_code == 2
    assert "No such file or directory" in result.output
    result = runner.invoke(app, ["search", "q", "-c", "unknown"])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_bad_arguments(data_env: Path) -> None:
    assert runner.invoke(app, ["search", "q", "--mode", "fuzzy"]).exit_code == 2
    assert runner.invoke(app, ["search", "   "]).exit_code == 2
    result = runner.invoke(app, ["ingest", str(SAMPLES), "-c", "bad/name"])
    assert result.exit_code == 2
    assert "Invalid collection name" in result.output


def test_empty_store_says_how_to_start(data_env: Path) -> None:
    result = runner.invoke(app, ["collections"])
    assert result.exit_code == 0
    assert "agentrag ingest" in result.output


@pytest.mark.integration
def test_ask_with_the_bundled_llm(data_env: Path) -> None:
    result = runner.invoke(app, ["ingest", str(SAMPLES / "astronomy"), "-c", "astro"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["ask", "Which planet has the hottest surface?", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["answer"].strip()
    assert payload["route"]["collections"] == ["astro"]
    assert payload["usage"]["llm_calls"] >= 1, (payload["error"], payload["flags"])
    assert payload["thread_id"]
    assert {c["collection"] for c in payload["citations"]} <= {"astro"}
    follow_up = runner.invoke(
        app, ["ask", "How hot is it there?", "--thread", payload["thread_id"], "--json"]
    )
    assert follow_up.exit_code == 0, follow_up.output
    assert json.loads(follow_up.output)["thread_id"] == payload["thread_id"]


@pytest.mark.integration
def test_ask_is_one_trace_and_prints_its_link(
    data_env: Path, monkeypatch: pytest.MonkeyPatch, langfuse: LangfuseRecorder
) -> None:
    assert runner.invoke(app, ["ingest", str(SAMPLES / "astronomy"), "-c", "astro"]).exit_code == 0
    for name, value in langfuse.env().items():
        monkeypatch.setenv(name, value)
    question = "Which planet has the hottest surface?"
    with ScriptedLLM() as llm:
        monkeypatch.setenv("AGENTRAG_LLM_BASE_URL", llm.base_url)
        shown = runner.invoke(app, ["ask", question, "--effort", "low"])
        as_json = runner.invoke(app, ["ask", question, "--effort", "low", "--json"])
        untraced = runner.invoke(app, ["ask", question, "--effort", "low", "--no-trace", "--json"])
    assert shown.exit_code == as_json.exit_code == untraced.exit_code == 0, shown.output
    payload = json.loads(as_json.output)
    assert payload["trace_url"] == f"{langfuse.base_url}/trace/{payload['trace_id']}"
    assert json.loads(untraced.output)["trace_id"] is None
    assert f"trace {langfuse.base_url}/trace/" in shown.output
    # the command sends its traces before it exits
    traces = langfuse.trace_ids()
    assert len(traces) == 2 and payload["trace_id"] in traces
    root = langfuse.root(payload["trace_id"])
    assert root.metadata["entry"] == "cli"
    assert root.attributes["session.id"] == payload["thread_id"]
    assert {s["name"] for s in langfuse.scores(payload["trace_id"])} >= {"grounded", "llm_calls"}


def test_ask_refuses_bad_arguments(data_env: Path) -> None:
    assert runner.invoke(app, ["ask", "q", "--effort", "max"]).exit_code == 2
    assert runner.invoke(app, ["ask", "  "]).exit_code == 2
    result = runner.invoke(app, ["ask", "q", "-c", "nope"])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_keys_create_prints_a_key_and_its_hashed_entry() -> None:
    from agent.settings import load_settings
    from server.auth import KeyRing

    result = runner.invoke(app, ["keys", "create", "--tenant", "acme", "-c", "handbook"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    key, entry = lines[0], json.loads(lines[-1])
    assert key.startswith("ar-") and key not in lines[-1]
    assert entry["tenant"] == "acme" and entry["collections"] == ["handbook"]
    keys = KeyRing(load_settings(api_keys=[entry]))
    principal = keys.authenticate(f"Bearer {key}")
    assert principal.tenant == "acme" and not principal.allows("other")


def test_serve_with_an_unreachable_database_is_one_clear_line(
    data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRAG_POSTGRES_URL", "postgresql://u:secret@127.0.0.1:1/db")
    result = runner.invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "Cannot connect to PostgreSQL" in result.output
    assert "secret" not in result.output


@pytest.mark.integration
def test_prompts_push_hands_the_local_prompts_to_langfuse(
    monkeypatch: pytest.MonkeyPatch, langfuse: LangfuseRecorder
) -> None:
    assert "not set up" in runner.invoke(app, ["prompts", "push"]).output
    listed = json.loads(runner.invoke(app, ["prompts", "list", "--json"]).output)
    assert {"generate", "decompose", "check_answer"} <= {p["name"] for p in listed}
    for name, value in langfuse.env().items():
        monkeypatch.setenv(name, value)
    pushed = runner.invoke(app, ["prompts", "push", "--label", "staging", "-n", "decompose"])
    assert pushed.exit_code == 0, pushed.output
    assert "decompose.v1 -> Langfuse decompose version 1 (staging)" in pushed.output

    from agent.prompt_source import PromptSource
    from agent.settings import load_settings
    from agent.tracing import Tracing

    settings = load_settings(langfuse_prompt_label="staging")
    source = PromptSource(settings, Tracing(settings))
    source.prefetch()
    assert source.settle(timeout_s=10)
    remote, local = source.get("decompose"), load_prompt("decompose")
    assert remote.source == "langfuse"
    assert remote.format(question="Q?", max_subqueries=3) == local.format(
        question="Q?", max_subqueries=3
    )
    source.close()
