"""LangGraph's own cost for a turn of agentrag's shape, with nodes that do nothing.

Six nodes in the main graph (contextualize, route, collect, generate, reflect, and the research
subgraph reached through `Send`), three in the subgraph (retrieve, grade, finish), branches as
`Command`s with declared destinations as agentrag's nodes return them, and the same stream modes
the chat API asks for (updates, messages, custom, subgraphs). Its p50 is the floor
`bench/orchestration.py`'s "LangGraph" column compares with: what no change to agentrag's nodes
or state can go below on this machine.

    .venv/bin/python bench/langgraph_floor.py --turns 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from operator import add
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send

from eval.metrics import percentile


class Sub(TypedDict, total=False):
    query: str
    found: Annotated[list[str], add]


class Main(TypedDict, total=False):
    question: str
    found: Annotated[list[str], add]
    answer: str


async def noop(state: Any) -> dict[str, Any]:
    return {}


async def finish(state: Sub) -> dict[str, Any]:
    return {"found": [state["query"]]}


async def grade(state: Sub) -> Command[Any]:
    return Command(goto="finish")


async def route(state: Main) -> Command[Any]:
    return Command(goto=[Send("research", {"query": state["question"]})])


async def reflect(state: Main) -> Command[Any]:
    return Command(goto=END)


def build() -> Any:
    sub = StateGraph(Sub)
    sub.add_node("retrieve", noop)
    sub.add_node("grade", grade, destinations=("finish", "retrieve"))
    sub.add_node("finish", finish)
    sub.add_edge(START, "retrieve")
    sub.add_edge("retrieve", "grade")
    sub.add_edge("finish", END)
    research = sub.compile()

    main = StateGraph(Main)
    for name in ("contextualize", "collect", "generate"):
        main.add_node(name, noop)
    main.add_node("route", route, destinations=("research", "generate"))
    main.add_node("reflect", reflect, destinations=("generate", END))
    main.add_node("research", research)
    main.add_edge(START, "contextualize")
    main.add_edge("contextualize", "route")
    main.add_edge("research", "collect")
    main.add_edge("collect", "generate")
    main.add_edge("generate", "reflect")
    return main.compile()


async def measure(turns: int) -> dict[str, Any]:
    """p50/p95 per turn run as the chat API runs it (`astream` with its modes) and as
    `bench/orchestration.py` runs it (`ainvoke`)."""
    graph = build()
    times: dict[str, list[float]] = {"stream": [], "invoke": []}
    for n in range(turns + 20):
        started = time.perf_counter()
        async for _ in graph.astream(
            {"question": f"question {n}"},
            stream_mode=["updates", "messages", "custom"],
            subgraphs=True,
        ):
            pass
        streamed = time.perf_counter()
        await graph.ainvoke({"question": f"question {n}"})
        if n >= 20:  # the first turns pay for imports and caches
            times["stream"].append((streamed - started) * 1000)
            times["invoke"].append((time.perf_counter() - streamed) * 1000)
    report: dict[str, Any] = {"turns": turns}
    for how, values in times.items():
        report[how] = {
            "p50_ms": round(percentile(values, 50), 2),
            "p95_ms": round(percentile(values, 95), 2),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=300)
    print(json.dumps(asyncio.run(measure(parser.parse_args().turns))))


if __name__ == "__main__":
    main()
