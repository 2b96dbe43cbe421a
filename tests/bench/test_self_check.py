"""The self-check benchmark: the scripted model cites the block that holds the candidate's
sentence (another one when miscited), and a run through the real graph on a tiny corpus scores
what the check does with each candidate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from langchain_core.messages import HumanMessage, SystemMessage

from agent.settings import load_settings
from agent.state import Evidence
from agent.text import format_evidence
from bench.self_check import TurnScript, evidence_blocks, markdown, measure
from eval.perturbations import Candidate, Claim
from retrievers.embeddings import LocalEmbeddings
from retrievers.stack import RetrievalStack

DASH = "\u2013"  # an en dash, as Wikipedia writes date ranges
HOLDS = "Ada Lovelace was an English mathematician who wrote the first algorithm."


def _evidence(n: int, title: str, text: str) -> Evidence:
    return {
        "id": f"c{n}",
        "collection": "c",
        "doc_id": title.lower(),
        "title": title,
        "source": "",
        "heading_path": [],
        "chunk_index": 0,
        "text": text,
        "retrieval_score": 0.0,
        "relevance": 0.0,
        "rank": n,
    }


def _prompt(*evidence: Evidence) -> list[SystemMessage | HumanMessage]:
    body = format_evidence(list(evidence))
    return [SystemMessage(f"Answer.\n\n<evidence>\n{body}\n</evidence>"), HumanMessage("Who?")]


def _candidate(text: str, *, miscite: bool = False, kind: str = "number") -> Candidate:
    return Candidate(
        id="q:x:0",
        question_id="q",
        question="Who?",
        kind=kind,  # type: ignore[arg-type]
        variant=kind,
        claims=(Claim(text, HOLDS, "lovelace", miscite=miscite),),
        original=HOLDS,
        changed=None,
        expected="unsupported",
    )


MESSAGES = _prompt(
    _evidence(1, "Charles Babbage", "Charles Babbage designed the Analytical Engine."),
    _evidence(2, "Grace Hopper", "Grace Hopper wrote compilers."),
    _evidence(3, "Ada Lovelace", f"Ada Lovelace was born in 1815.  {HOLDS}\nShe died young."),
)


def test_evidence_blocks_are_read_back_from_the_prompt() -> None:
    blocks = evidence_blocks(MESSAGES)
    assert blocks is not None
    assert [(b.n, b.title) for b in blocks] == [
        (1, "Charles Babbage"),
        (2, "Grace Hopper"),
        (3, "Ada Lovelace"),
    ]
    assert evidence_blocks([HumanMessage("hi")]) is None


def test_the_candidate_cites_the_block_that_holds_its_sentence() -> None:
    script = TurnScript(_candidate("Ada Lovelace was a Welsh mathematician."), frozenset())
    answer = script.reply(MESSAGES)  # type: ignore[arg-type]
    assert answer == "Ada Lovelace was a Welsh mathematician [3]."
    assert script.retrieved and script.holding == [3] and script.cited == [3]


def test_a_miscited_candidate_cites_a_block_of_another_paragraph_than_the_gold_ones() -> None:
    gold = frozenset({"Ada Lovelace", "Charles Babbage"})
    script = TurnScript(_candidate(HOLDS, miscite=True, kind="miscited"), gold)
    answer = script.reply(MESSAGES)  # type: ignore[arg-type]
    assert answer == f"{HOLDS[:-1]} [2]."
    assert script.holding == [3] and script.cited == [2] and script.wrong_title == "Grace Hopper"


def test_a_sentence_missing_from_the_evidence_is_not_retrieved() -> None:
    script = TurnScript(_candidate("Ada Lovelace was Welsh."), frozenset())
    messages = _prompt(_evidence(1, "Grace Hopper", "Grace Hopper wrote compilers."))
    assert script.reply(messages) == "Ada Lovelace was Welsh."  # type: ignore[arg-type]
    assert not script.retrieved


def test_a_regeneration_repeats_the_candidate_or_says_the_original() -> None:
    for regenerate, second in (("same", "Ada Lovelace was Welsh [3]."), ("original", None)):
        script = TurnScript(_candidate("Ada Lovelace was Welsh."), frozenset(), regenerate)
        script.reply(MESSAGES)  # type: ignore[arg-type]
        again = script.reply(MESSAGES)  # type: ignore[arg-type]
        assert again == (second or f"{HOLDS[:-1]} [3].")
        assert script.cited == [3]  # what the first answer cited is kept


DOCS = {
    "lovelace": (
        "Ada Lovelace",
        f"Ada Lovelace (10 December 1815 {DASH} 27 November 1852) was an English mathematician. "
        "In 1843, she published the first algorithm intended for a machine.",
    ),
    "babbage": (
        "Charles Babbage",
        f"Charles Babbage (26 December 1791 {DASH} 18 October 1871) was an English polymath who "
        "designed the Analytical Engine, a mechanical general-purpose computer.",
    ),
    "hopper": (
        "Grace Hopper",
        f"Grace Hopper (December 9, 1906 {DASH} January 1, 1992) was an American computer "
        "scientist "
        "and United States Navy rear admiral.",
    ),
    "turing": (
        "Alan Turing",
        f"Alan Turing (23 June 1912 {DASH} 7 June 1954) was an English mathematician and computer "
        "scientist.",
    ),
}


def _dataset(root: Path) -> Path:
    root.mkdir()
    with (root / "corpus.jsonl").open("w") as f:
        for doc_id, (title, text) in DOCS.items():
            f.write(json.dumps({"id": doc_id, "title": title, "text": text}) + "\n")
    question = {
        "id": "q-algorithm",
        "question": "Who published the first algorithm intended for a machine, and when?",
        "answer": "Ada Lovelace",
        "answers": ["Ada Lovelace"],
        "supporting_doc_ids": ["lovelace"],
    }
    (root / "questions.jsonl").write_text(json.dumps(question) + "\n")
    return root


async def test_a_run_scores_each_candidate_through_the_real_graph(
    tmp_path: Path, minilm: LocalEmbeddings
) -> None:
    dataset = _dataset(tmp_path / "tiny_multihop")
    args = argparse.Namespace(
        dataset=dataset,
        data_dir=tmp_path / "data",
        collection=None,
        limit=None,
        effort=["low"],
        seed=0,
        regenerate_reply="same",
    )
    stack = RetrievalStack(load_settings(data_dir=args.data_dir), embeddings=minilm)
    try:
        report = await measure(args, stack)
    finally:
        stack.close()
    records = report["records"]["low"]
    kinds = {r["kind"] for r in records}
    assert {"faithful", "number", "negation", "comparison", "miscited"} <= kinds
    assert all(r["retrieved"] and r["scored"] for r in records)
    verbatim = next(r for r in records if r["variant"] == "verbatim")
    assert verbatim["answer"] == f"{verbatim['original'][:-1]} [{verbatim['holding'][0]}]."
    assert not verbatim["flagged"]
    miscited = next(r for r in records if r["kind"] == "miscited")
    assert miscited["cited"] != miscited["holding"] and miscited["flagged"]
    assert "sentence" in miscited["signals"]
    summary = report["low"]
    assert summary["by_kind"]["miscited"]["rate"] == 1.0
    assert summary["cost"]["reflect_ms_per_sentence"]["p50"] > 0
    text = markdown(report)
    assert "| miscited | 1 | 0 | 1 | 1 | 100%" in text
    assert report["command"].startswith("python")
