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


GENUS_DOCS = [
    Document(
        "plant",
        "plant",
        "Pieris (plant)",
        (Section("Pieris is a genus of seven species of shrubs in the heath family."),),
    ),
    Document(
        "butterfly",
        "butterfly",
        "Pieris (butterfly)",
        (Section("Pieris is a genus of butterflies of the family Pieridae, the whites."),),
    ),
    Document(
        "fern",
        "fern",
        "Phlebodium",
        (Section("Phlebodium is a genus of ferns in the family Polypodiaceae."),),
    ),
] + [
    Document(
        f"fern{i}",
        f"fern{i}",
        f"Fern genus {i}",
        (Section(f"Fern genus {i}: ferns close to Phlebodium, both are ferns ({i + 2} species)."),),
    )
    for i in range(12)
]


async def test_a_name_reaches_the_title_it_names_with_a_qualifier(
    make_services: Any, tmp_path: Path
) -> None:
    """ "Pieris" names no title exactly, but "Pieris (plant)" and "Pieris (butterfly)"."""
    services = make_services(default=scripted("No [1]."))
    services.stack.ingestor.ingest_documents(GENUS_DOCS, "genera", description="Genera")
    question = "Are Phlebodium and Pieris both ferns?"
    [search] = await services.catalog.asearches(AgentContext(), ["genera"])
    top = await search.asearch(question, 1)
    linked = await search.alinked(question, [top[0]["text"]], 2, skip_docs=[top[0]["doc_id"]])
    found = [e["doc_id"] for e in linked]
    assert "fern" in found  # named exactly
    assert {"plant", "butterfly"} & set(found)  # named without its qualifier
