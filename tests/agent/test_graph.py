"""Every branch of the agent graph, driven by scripted chat models over a real store."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage

from agent.context import AgentContext
from tests.agent.conftest import plan_call, run_turn, scripted

VENUS = "Venus has the hottest surface of any planet, about 465 degrees Celsius [1]."


def flags(result: dict[str, Any]) -> set[str]:
    return {f["flag"] for f in result.get("flags") or [] if f["turn"] == result["turn"]}


def nodes(result: dict[str, Any]) -> list[str]:
    return [s["node"] for s in result["steps"]]


def llm_calls(result: dict[str, Any]) -> int:
    return len([u for u in result["usage"] if u["turn"] == result["turn"]])


async def test_greeting_is_answered_directly(make_services: Any) -> None:
    services = make_services(default=scripted("Hello! Ask me about your documents."))
    result = await run_turn(services, "hello there!")
    assert result["route"]["kind"] == "direct"
    assert "research" not in set(nodes(result)) and "retrieve_chunks" not in nodes(result)
    assert result["answer"].startswith("Hello")
    assert result["messages"][-1].content == result["answer"]
    assert llm_calls(result) == 1


async def test_single_collection_answer_with_citation(make_services: Any) -> None:
    services = make_services(default=scripted(VENUS))
    result = await run_turn(services, "Which planet has the hottest surface?")
    assert result["route"]["kind"] == "retrieve"
    assert result["route"]["collections"] == ["astronomy"]
    assert result["route"]["scores"]["astronomy"] > result["route"]["scores"]["handbook"]
    assert all(e["collection"] == "astronomy" for e in result["evidence"])
    citation = result["citations"][0]
    assert citation["n"] == 1
    assert citation["id"] == result["evidence"][0]["id"]
    assert "Venus" in result["evidence"][0]["text"]
    assert result["verdict"]["grounded"] and result["verdict"]["action"] == "accept"
    assert llm_calls(result) == 1
    assert result["messages"][-1].additional_kwargs["citations"] == result["citations"]


async def test_parallel_decomposition(make_services: Any) -> None:
    planner = scripted(
        plan_call("parallel", ["Which planet is the largest?", "What is the nearest star?"])
    )
    generator = scripted("Jupiter is the largest planet [1]. Proxima Centauri is nearest [2].")
    services = make_services(planner=planner, generator=generator)
    result = await run_turn(
        services, "Which planet is the largest, and what is the nearest star to the Sun?"
    )
    assert result["route"]["kind"] == "decompose"
    assert result["plan"]["mode"] == "parallel" and result["plan"]["source"] == "llm"
    research = sorted(result["research"], key=lambda r: r["index"])
    assert [r["query"] for r in research] == [
        "Which planet is the largest?",
        "What is the nearest star?",
    ]
    texts = " ".join(e["text"] for e in result["evidence"])
    assert "Jupiter" in texts and "Proxima" in texts
    assert llm_calls(result) == 2  # plan + answer


async def test_sequential_bridge_fills_the_next_hop(make_services: Any) -> None:
    planner = scripted(
        plan_call(
            "sequential", ["Which star is nearest to the Sun?", "Which system contains {previous}?"]
        )
    )
    generator = scripted("Proxima Centauri belongs to the Alpha Centauri system [1].")
    services = make_services(planner=planner, generator=generator)
    result = await run_turn(
        services, "Which star system contains the star that is nearest to the Sun?"
    )
    assert result["plan"]["mode"] == "sequential"
    assert "research_chain" in nodes(result)
    hops = sorted(result["research"], key=lambda r: r["index"])
    assert len(hops) == 2
    assert "{previous}" not in hops[1]["query"]
    assert hops[0]["evidence"][0]["title"] in hops[1]["query"]


async def test_poor_grade_rewrites_and_retries(make_services: Any) -> None:
    services = make_services(default=scripted("Stars shine by fusion [1]."))
    ctx = AgentContext(relevance_threshold=0.99, ambiguous_threshold=0.98, max_rewrites=1)
    result = await run_turn(services, "Why do stars shine so brightly at night?", ctx)
    steps = nodes(result)
    assert steps.count("retrieve_chunks") == 2
    assert "rewrite_query" in steps
    (research,) = result["research"]
    assert len(research["queries_tried"]) == 2
    assert research["queries_tried"][1] != research["queries_tried"][0]


async def test_fallback_when_grading_stays_poor(make_services: Any) -> None:
    services = make_services(default=scripted("Stars shine by fusion [1]."))
    ctx = AgentContext(relevance_threshold=0.99, ambiguous_threshold=0.98, max_rewrites=2)
    result = await run_turn(services, "Why do stars shine so brightly at night?", ctx)
    (research,) = result["research"]
    assert research["fallback"] is True
    assert research["grade"] == "incorrect"
    assert research["evidence"]  # the best available chunks, marked as a fallback
    assert "weak_evidence" in flags(result)


async def test_unsupported_answer_is_regenerated(make_services: Any) -> None:
    generator = scripted("The Moon is made of green cheese [1].", VENUS)
    services = make_services(default=generator)
    result = await run_turn(services, "Which planet has the hottest surface?")
    assert nodes(result).count("generate_answer") == 2
    assert result["answer"] == VENUS
    assert result["verdict"]["grounded"]
    # the second attempt used the stricter prompt
    assert "previous answer" in str(generator.seen[-1][0].content)


async def test_unsupported_twice_gives_up_honestly(make_services: Any) -> None:
    """After the retry, a claim the evidence does not hold is not shown as fact: with nothing
    left, the answer quotes the evidence instead."""
    bad = "The Moon is made of green cheese [1]."
    services = make_services(default=scripted(bad, bad))
    result = await run_turn(services, "Which planet has the hottest surface?")
    assert result["verdict"]["action"] == "give_up"
    assert not result["verdict"]["grounded"]
    assert result["verdict"]["revised"]
    assert {"ungrounded", "claims_removed", "quoted_evidence"} <= set(flags(result))
    assert "cheese" not in result["answer"]
    assert result["answer"].startswith("From the documents:")
    assert result["citations"]


async def test_a_wrong_number_is_caught_and_the_retry_is_told_which(make_services: Any) -> None:
    wrong = "Venus has the hottest surface, at 462 degrees Celsius [1]."
    fixed = "Venus has the hottest surface of any planet [1]."
    generator = scripted(wrong, fixed)
    services = make_services(default=generator)
    result = await run_turn(services, "Which planet has the hottest surface?")
    assert generator.calls == 2
    retry = str(generator.seen[1][0].content)
    assert "462" in retry and "not in the cited evidence" in retry
    assert result["answer"] == fixed
    assert result["verdict"]["grounded"] and result["verdict"]["action"] == "accept"


async def test_a_part_left_unanswered_is_said_to_be_missing(make_services: Any) -> None:
    half = "Venus has the hottest surface of any planet [1]."
    generator = scripted(half, half)
    services = make_services(default=generator)
    question = "Which planet has the hottest surface, and what is the nearest star to the Sun?"
    result = await run_turn(services, question, AgentContext(effort="low"))
    retry = str(generator.seen[1][0].content)
    assert 'also asks "what is the nearest star to the Sun"' in retry
    parts = {p["part"]: p["covered"] for p in result["verdict"]["parts"]}
    assert parts == {
        "Which planet has the hottest surface": True,
        "what is the nearest star to the Sun": False,
    }
    assert not result["verdict"]["answers_question"]
    assert "partial" in flags(result)
    assert result["answer"].startswith(half)
    assert (
        "No supported answer was found to: what is the nearest star to the Sun."
        in (result["answer"])
    )


BRIDGE = "How many light-years from the Sun is the red dwarf that belongs to Alpha Centauri?"


async def test_an_answer_that_stops_at_the_bridge_does_not_answer(make_services: Any) -> None:
    """The answer names the thing the question goes through and never says what it asks."""
    stopped = "Proxima Centauri is a red dwarf that belongs to the Alpha Centauri system [1]."
    generator = scripted(stopped, stopped)
    services = make_services(default=generator)
    result = await run_turn(services, BRIDGE, AgentContext(effort="low"))
    assert result["verdict"]["grounded"]
    assert not result["verdict"]["answers_question"]
    assert result["verdict"]["parts"] == [{"part": BRIDGE, "covered": False, "kind": "focus"}]
    assert "stops at what the question goes through" in str(generator.seen[1][0].content)
    assert "partial" in flags(result)
    assert result["answer"].endswith(f"No supported answer was found to: {BRIDGE}")


async def test_an_answer_that_goes_on_to_what_is_asked_is_accepted(make_services: Any) -> None:
    whole = (
        "Proxima Centauri, the red dwarf that belongs to the Alpha Centauri system, is about "
        "4.24 light-years away [1]."
    )
    services = make_services(default=scripted(whole))
    result = await run_turn(services, BRIDGE, AgentContext(effort="low"))
    assert result["verdict"]["action"] == "accept"
    assert result["verdict"]["answers_question"]
    assert "parts" not in result["verdict"]


@pytest.mark.parametrize(
    ("ctx", "budget"),
    [
        (AgentContext(max_llm_calls=0), "max_llm_calls"),
        (AgentContext(max_tokens=0), "max_tokens"),
        (AgentContext(deadline_s=0.0), "deadline"),
        (AgentContext(max_steps=3), "max_steps"),
    ],
)
async def test_every_budget_ends_the_turn_with_a_flag(
    make_services: Any, ctx: AgentContext, budget: str
) -> None:
    services = make_services(default=scripted(VENUS))
    result = await run_turn(services, "Which planet has the hottest surface?", ctx)
    reasons = [f["reason"] for f in result["flags"] if f["flag"] == "incomplete"]
    assert any(budget in r for r in reasons), result["flags"]
    assert result["answer"]  # the best answer so far, never an exception
    assert result["messages"][-1].content == result["answer"]


async def test_repeated_rewrite_is_detected_as_a_stall(make_services: Any) -> None:
    question = "Why do stars shine so brightly at night?"
    planner = scripted(question)  # the planner "rewrites" to the query already tried
    services = make_services(planner=planner, default=scripted("Stars shine by fusion [1]."))
    ctx = AgentContext(
        effort="high", relevance_threshold=0.99, ambiguous_threshold=0.98, max_rewrites=3
    )
    result = await run_turn(services, question, ctx)
    assert "stalled" in flags(result)
    assert nodes(result).count("retrieve_chunks") == 1


async def test_malformed_plan_falls_back_to_a_heuristic(make_services: Any) -> None:
    broken = AIMessage(
        content="", tool_calls=[{"name": "Decomposition", "args": {"mode": 3}, "id": "x"}]
    )
    services = make_services(planner=scripted(broken), generator=scripted(VENUS))
    result = await run_turn(
        services, "Which is hotter, the surface of Venus or the surface of Mars?"
    )
    assert result["plan"]["source"] == "heuristic"
    assert "planner_output_invalid" in flags(result)
    assert result["answer"]


async def test_model_without_tool_calling_uses_heuristic_plan(make_services: Any) -> None:
    services = make_services(supports_tools=False, default=scripted(VENUS))
    result = await run_turn(
        services, "Which is hotter, the surface of Venus or the surface of Mars?"
    )
    assert result["plan"]["source"] == "heuristic"
    assert result["plan"]["mode"] == "parallel"
    assert len(result["research"]) == 2
    assert llm_calls(result) == 1


async def test_llm_endpoint_down_is_a_clear_error(make_services: Any) -> None:
    services = make_services()  # no scripted models: the configured endpoint is 127.0.0.1:9
    result = await run_turn(services, "Which planet has the hottest surface?")
    assert result["error"]["code"] == "llm_unavailable"
    assert "127.0.0.1:9" in result["error"]["message"]
    assert result["answer"]  # evidence is still quoted, with citations
    assert result["citations"]


async def test_no_input_reaches_the_recursion_limit(make_services: Any) -> None:
    bad = "The Moon is made of green cheese [1]."
    questions = [
        "hi",
        "Which planet has the hottest surface?",
        "Which is older, the Sun or the Solar System, and what is the largest planet?",
        "zzqx vvbn",
        "",
    ]
    for effort in ("low", "medium", "high"):
        for q in questions:
            services = make_services(default=scripted(*([bad] * 20)))
            ctx = AgentContext(
                effort=effort,  # type: ignore[arg-type]
                relevance_threshold=0.99,
                ambiguous_threshold=0.98,
                max_rewrites=5,
            )
            result = await run_turn(services, q, ctx)
            services.close()
            assert result["messages"][-1].type == "ai"
            assert len(result["steps"]) < 2 * ctx.max_steps


async def test_follow_up_uses_the_thread_history(make_services: Any) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    from graphs.rag import build_graph, recursion_limit

    planner = scripted("Where is Proxima Centauri located?")
    services = make_services(
        planner=planner,
        generator=scripted(
            "Proxima Centauri is the nearest star [1].", "It is about 4.24 light-years away [1]."
        ),
    )
    graph = build_graph(services, checkpointer=InMemorySaver())
    ctx = AgentContext()
    config: Any = {"configurable": {"thread_id": "t"}, "recursion_limit": recursion_limit(ctx)}
    await graph.ainvoke({"messages": [("user", "What is the nearest star?")]}, config, context=ctx)
    second = await graph.ainvoke({"messages": [("user", "How far is it?")]}, config, context=ctx)
    assert len(second["messages"]) == 4
    state = await graph.aget_state(config)
    assert state.values["query"] == "Where is Proxima Centauri located?"
    assert all(r["turn"] == second["turn"] for r in second["research"])
