"""LangGraph's own cost for a turn of agentrag's shape, with nodes that do nothing.

Six nodes in the main graph (contextualize, route, collect, generate, reflect, and the research
subgraph reached through `Send`), three in the subgraph (retrieve, grade, finish), the same
stream modes the chat API asks for (updates, messages, custom, subgraphs). Its p50 is the floor
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
from langgraph.types import Send

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


def build() -> Any:
    sub = StateGraph(Sub)
    for name in ("retrieve", "grade"):
        sub.add_node(name, noop)
    sub.add_node("finish", finish)
    sub.add_edge(START, "retrieve")
    sub.add_edge("retrieve", "grade")
    sub.add_conditional_edges("grade", lambda s: "finish", ["finish"])
    sub.add_edge("finish", END)
    research = sub.compile()

    main = StateGraph(Main)
    for name in ("contextualize", "route", "collect", "generate", "reflect"):
        main.add_node(name, noop)
    main.add_node("research", research)
    main.add_edge(START, "contextualize")
    main.add_edge("contextualize", "route")
    main.add_conditional_edges(
        "route", lambda s: [Send("research", {"query": s["question"]})], ["research"]
    )
    main.add_edge("research", "collect")
    main.add_edge("collect", "generate")
    main.add_edge("generate", "reflect")
    main.add_conditional_edges("reflect", lambda s: END, [END])
    return main.compile()


async def measure(turns: int) -> dict[str, Any]:
    graph = build()
    times: list[float] = []
    for n in range(turns + 20):
        started = time.perf_counter()
        async for _ in graph.astream(
            {"question": f"question {n}"},
            stream_mode=["updates", "messages", "custom"],
            subgraphs=True,
        ):
            pass
        if n >= 20:  # the first turns pay for imports and caches
            times.append((time.perf_counter() - started) * 1000)
    return {
        "turns": turns,
        "p50_ms": round(percentile(times, 50), 2),
        "p95_ms": round(percentile(times, 95), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=300)
    print(json.dumps(asyncio.run(measure(parser.parse_args().turns))))


if __name__ == "__main__":
    main()
