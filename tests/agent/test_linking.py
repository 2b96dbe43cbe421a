"""Multi-hop retrieval without an LLM: the agent follows titles that the top chunks name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.context import AgentContext
from retrievers.documents import Document, Section
from tests.agent.conftest import run_turn, scripted

DOCS = [
    Document(
        "film",
        "film",
        "Night Harbour",
        (Section("Night Harbour is a 1961 thriller film directed by Aldo Verrin."),),
    ),
    Document(
        "person",
        "person",
        "Aldo Verrin",
        (Section("Aldo Verrin (1920-1994) grew up in Trieste and later worked in Rome."),),
    ),
] + [
    Document(
        f"noise{i}",
        f"noise{i}",
        f"Director {i}",
        (Section(f"The director of the comedy Sunny Days {i} was born in Vellmar."),),
    )
    for i in range(12)
]


async def test_the_agent_follows_a_named_title(make_services: Any, tmp_path: Path) -> None:
    services = make_services(default=scripted("He was born in Trieste [1]."))
    services.stack.ingestor.ingest_documents(DOCS, "films", description="Films and directors")
    question = "Where was the director of the thriller film Night Harbour born?"
    ctx = AgentContext(collections=["films"], k=3, linked_docs=2)
    result = await run_turn(services, question, ctx)
    assert "person" in {e["doc_id"] for e in result["evidence"]}
    low = await run_turn(services, question, AgentContext(collections=["films"], k=3, effort="low"))
    assert all(e["rank"] < 3 for e in low["evidence"])  # low effort follows no names


MENTION_DOCS = [
    Document(
        "storm",
        "storm",
        "Cyclone Zorba",
        (Section("Cyclone Zorba was the strongest recorded storm of the Vellmar Sea, in 1999."),),
    ),
    Document(
        "film",
        "film",
        "Another Story",
        (Section("Another Story is a 2007 disaster film set during Cyclone Zorba."),),
    ),
] + [
    Document(
        f"noise{i}",
        f"noise{i}",
        f"Storm {i}",
        (Section(f"Storm {i} was a minor storm off the coast of Peru in {1950 + i}."),),
    )
    for i in range(12)
]


async def test_the_agent_finds_the_document_that_names_a_found_one(
    make_services: Any, tmp_path: Path
) -> None:
    """The reverse hop: the film names the storm, the question only describes the storm."""
    services = make_services(default=scripted("Another Story [1]."))
    services.stack.ingestor.ingest_documents(MENTION_DOCS, "storms", description="Storms")
    question = "Which film was made about the strongest recorded storm of the Vellmar Sea?"
    ctx = AgentContext(collections=["storms"], k=1, linked_docs=1)
    result = await run_turn(services, question, ctx)
    assert result["research"][0]["evidence"][0]["doc_id"] == "storm"  # what the search finds
    assert {"storm", "film"} <= {e["doc_id"] for e in result["evidence"]}
    low = await run_turn(
        services, question, AgentContext(collections=["storms"], k=1, effort="low")
    )
    assert "film" not in {e["doc_id"] for e in low["evidence"]}
