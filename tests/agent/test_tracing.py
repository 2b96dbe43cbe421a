"""What a trace may record (masking, truncation, secrets), the turn's scores, and prompts from
Langfuse prompt management, with the real SDK against a recorder on loopback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.messages import HumanMessage
from pydantic import SecretStr

from agent.context import AgentContext
from agent.errors import ConfigError
from agent.services import Services
from agent.settings import Settings
from agent.tracing import REDACTED, TURN_NAME, TraceMask, Tracing, turn_scores
from eval.langfuse_recorder import LangfuseRecorder
from graphs.rag import build_graph, recursion_limit
from prompts.loader import load_prompt, to_mustache
from tests.agent.conftest import scripted
from tests.conftest import traced_settings

QUESTION = "Which planet has the hottest surface?"
ANSWER = "Venus has the hottest surface of any planet [1]."


def mask_venus(text: str, tenant: str | None) -> str:
    """A tenant's masking hook (named by `trace_mask`)."""
    return text.replace("Venus", "[planet]") if tenant == "public" else text


@dataclass
class Step:
    node: str
    detail: str | None = None


def test_mask_cuts_long_texts_and_hides_credentials() -> None:
    mask = TraceMask(max_chars=20, secrets=["hunter2-secret"])
    cleaned = mask(
        data={
            "text": "x" * 50,
            "api_key": "anything",
            "Authorization": "Bearer abc",
            "max_tokens": 5,
            "note": "token sk-abcdefghijklmnop and hunter2-secret",
            "messages": [HumanMessage("Bearer ar-0123456789abcdefghijklmnop")],
            "docs": [Document(page_content="doc", metadata={"secret": "s"})],
            "step": Step("route"),
            "many": list(range(250)),
        }
    )
    assert cleaned["text"].startswith("x" * 20) and "30 more characters" in cleaned["text"]
    assert cleaned["api_key"] == cleaned["Authorization"] == REDACTED
    assert cleaned["max_tokens"] == 5
    assert "sk-abc" not in cleaned["note"] and "hunter2" not in cleaned["note"]
    assert cleaned["messages"] == [{"role": "human", "content": f"Bearer {REDACTED}"}]
    assert cleaned["docs"] == [{"page_content": "doc", "metadata": {"secret": REDACTED}}]
    assert cleaned["step"] == {"type": "Step", "node": "route"}
    assert len(cleaned["many"]) == 201 and "50 more items" in cleaned["many"][-1]


def test_mask_hook_is_loaded_at_start_and_a_bad_one_fails_there(settings: Settings) -> None:
    tracing = Tracing(settings.model_copy(update={"trace_mask": f"{__name__}:mask_venus"}))
    assert tracing.mask.text("Venus") == "Venus"  # no tenant: the hook leaves it
    with pytest.raises(ConfigError, match="trace_mask"):
        Tracing(settings.model_copy(update={"trace_mask": "no_such_module:f"}))
    with pytest.raises(ConfigError, match="module:function"):
        Tracing(settings.model_copy(update={"trace_mask": "nocolon"}))


def test_turn_scores_name_the_verdict_flags_and_counts() -> None:
    values = {
        "turn": "t2",
        "verdict": {
            "grounded": False,
            "answers_question": True,
            "sentences": [{"supported": True}, {"supported": False}],
        },
        "flags": [
            {"turn": "t1", "flag": "old", "reason": "an earlier turn"},
            {"turn": "t2", "flag": "incomplete", "reason": "budget: llm calls"},
        ],
        "usage": [{"turn": "t1"}, {"turn": "t2"}, {"turn": "t2"}],
        "evidence": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
    }
    scores = {s["name"]: s for s in turn_scores(values)}
    assert scores["grounded"] == {"name": "grounded", "value": 0.0, "data_type": "BOOLEAN"}
    assert scores["answers_question"]["value"] == 1.0
    assert scores["supported_sentences"]["value"] == 0.5
    assert scores["flag_incomplete"]["comment"] == "budget: llm calls"
    assert "flag_old" not in scores
    assert scores["llm_calls"]["value"] == 2.0
    assert scores["evidence_chunks"]["value"] == 3.0


def test_tracing_needs_keys_and_url(settings: Settings) -> None:
    assert not Tracing(settings).enabled
    half = settings.model_copy(
        update={"langfuse_public_key": "pk", "langfuse_base_url": "http://x"}
    )
    assert not Tracing(half).enabled
    full = half.model_copy(update={"langfuse_secret_key": SecretStr("sk")})
    assert Tracing(full).enabled
    assert not Tracing(full.model_copy(update={"langfuse_tracing_enabled": False})).enabled
    assert Tracing(full).url("ab") == "http://x/trace/ab"
    linked = full.model_copy(
        update={"langfuse_ui_url": "http://ui:3000/", "langfuse_project_id": "p1"}
    )
    assert Tracing(linked).url("ab") == "http://ui:3000/project/p1/traces/ab"


async def traced_turn(services: Services, tenant: str = "public") -> dict[str, Any]:
    ctx = AgentContext(effort="low", tenant=tenant)
    graph = build_graph(services)
    with services.tracing.turn(
        question=QUESTION, session_id="s1", user_id=tenant, tenant=tenant
    ) as turn:
        config: Any = turn.with_callbacks({"recursion_limit": recursion_limit(ctx)})
        values: dict[str, Any] = await graph.ainvoke(
            {"messages": [("user", QUESTION)]}, config=config, context=ctx
        )
        turn.finish(values)
    values["trace_id"] = turn.trace_id
    return values


@pytest.mark.integration
async def test_tenant_mask_and_truncation_apply_to_everything_recorded(
    make_services: Callable[..., Services], agent_settings: Settings, langfuse: LangfuseRecorder
) -> None:
    settings = traced_settings(
        agent_settings, langfuse, trace_mask=f"{__name__}:mask_venus", trace_max_chars=120
    )
    services = make_services(settings=settings, default=scripted(ANSWER))
    values = await traced_turn(services, tenant="public")
    assert services.tracing.flush(timeout_s=10)
    assert "Venus" in values["answer"]
    (search,) = [s for s in langfuse.spans() if s.observation_type == "retriever"]
    for doc in search.output:
        assert len(doc["page_content"]) <= 120 + len("... [9999 more characters]")
    root = langfuse.root(values["trace_id"])
    assert root.output["answer"].startswith("[planet] has")
    assert "Venus" not in langfuse.all_sent_text()
    services.tracing.shutdown(timeout_s=1)


@pytest.mark.integration
async def test_prompts_come_from_langfuse_by_label_and_link_to_generations(
    make_services: Callable[..., Services], agent_settings: Settings, langfuse: LangfuseRecorder
) -> None:
    text = to_mustache(load_prompt("generate").text) + "\nPROMPT FROM LANGFUSE"
    langfuse.add_prompt("generate", text, version=7, labels=("production",))
    settings = traced_settings(agent_settings, langfuse, langfuse_prompt_label="production")
    model = scripted(ANSWER)
    services = make_services(settings=settings, default=model)
    assert services.prompts.get("generate").source == "local"  # until Langfuse's arrives
    services.prompts.prefetch()
    assert services.prompts.settle(timeout_s=10)
    prompt = services.prompts.get("generate")
    assert (prompt.source, prompt.version) == ("langfuse", 7)
    assert services.prompts.get("judge").source == "local"  # Langfuse has no such prompt

    values = await traced_turn(services)
    services.tracing.flush(timeout_s=10)
    system = str(model.seen[0][0].content)
    assert "PROMPT FROM LANGFUSE" in system
    assert "{{evidence}}" not in system and "[1]" in system
    (generation,) = [s for s in langfuse.spans() if s.observation_type == "generation"]
    assert (generation.prompt_name, generation.prompt_version) == ("generate", 7)
    assert generation.metadata["prompt_source"] == "langfuse"
    assert langfuse.root(values["trace_id"]).name == TURN_NAME
    services.tracing.shutdown(timeout_s=1)


@pytest.mark.integration
def test_an_unreachable_langfuse_never_holds_a_prompt_back(
    make_services: Callable[..., Services], agent_settings: Settings, langfuse: LangfuseRecorder
) -> None:
    langfuse.add_prompt("generate", "FROM LANGFUSE {{evidence}}", version=2)
    langfuse.mode = "hang"
    settings = traced_settings(agent_settings, langfuse, langfuse_prompt_label="production")
    services = make_services(settings=settings)
    assert services.prompts.get("generate").source == "local"
    assert langfuse.wait_for(lambda r: r.held_requests >= 1)
    assert services.prompts.get("generate").source == "local"  # asked, still unanswered
    assert not services.prompts.settle(timeout_s=0.1)
    langfuse.mode = "ok"
    assert services.prompts.settle(timeout_s=10)
    assert services.prompts.get("generate").version == 2
