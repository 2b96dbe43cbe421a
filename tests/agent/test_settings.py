from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.settings import load_settings


def test_defaults_run_embedded_and_offline(tmp_path: Path) -> None:
    s = load_settings()
    assert s.vector_store == "embedded"
    assert s.embedding_backend == "local"
    assert s.embedding_model == "all-MiniLM-L6-v2"
    assert s.reranker_backend == "none"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTRAG_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("AGENTRAG_CHUNK_SIZE", "128")
    monkeypatch.setenv("AGENTRAG_FUSION", "dbsf")
    s = load_settings()
    assert s.data_dir == tmp_path / "d"
    assert s.chunk_size == 128
    assert s.fusion == "dbsf"


def test_toml_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "agentrag.toml"
    config.write_text(
        'default_collection = "wiki"\nchunk_overlap = 10\n'
        '[collections.wiki]\ndescription = "Team wiki"\n'
    )
    monkeypatch.setenv("AGENTRAG_CONFIG", str(config))
    s = load_settings()
    assert s.default_collection == "wiki"
    assert s.chunk_overlap == 10
    assert s.collections["wiki"].description == "Team wiki"


def test_environment_beats_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "agentrag.toml"
    config.write_text("rrf_k = 10\n")
    monkeypatch.setenv("AGENTRAG_CONFIG", str(config))
    monkeypatch.setenv("AGENTRAG_RRF_K", "20")
    assert load_settings().rrf_k == 20


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("AGENTRAG_VECTOR_STORE", "elastic", "AGENTRAG_VECTOR_STORE"),
        ("AGENTRAG_CHUNK_SIZE", "ten", "AGENTRAG_CHUNK_SIZE"),
        ("AGENTRAG_BM25_B", "2", "AGENTRAG_BM25_B"),
        ("AGENTRAG_DEFAULT_COLLECTION", "bad name!", "AGENTRAG_DEFAULT_COLLECTION"),
    ],
)
def test_invalid_setting_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vector_store": "server"}, "qdrant_url is not set"),
        ({"qdrant_url": "ftp://x"}, "must start with http"),
        ({"embedding_backend": "remote"}, "embedding_url is not set"),
        ({"chunk_size": 100, "chunk_overlap": 100}, "chunk_overlap"),
        ({"reranker_backend": "cross-encoder"}, "reranker_model is not set"),
    ],
)
def test_inconsistent_settings_fail_at_start(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)


def test_unknown_toml_key_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "agentrag.toml"
    config.write_text("chunk_sise = 100\n")
    monkeypatch.setenv("AGENTRAG_CONFIG", str(config))
    with pytest.raises(ConfigError, match="chunk_sise"):
        load_settings()


def test_dotenv_lines_of_other_tools_are_ignored(tmp_path: Path) -> None:
    """docker compose and agentrag share `.env`: only AGENTRAG_* lines are read, and a misspelt
    one of those still stops agentrag with its name."""
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=secret\nAGENTRAG_LOG_JSON=false\n")
    assert load_settings().log_json is False
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=secret\nAGENTRAG_LOG_JSONN=false\n")
    with pytest.raises(ConfigError, match=r"\(AGENTRAG_LOG_JSONN\)"):
        load_settings()
