"""Which parts a question has, and whether an answer addresses each of them.

A question has several parts when it asks several questions ("Which planet is hottest, and
what is the nearest star?"), compares named items ("Who was born first, A or B?"), or was split
by the planner into independent sub-questions. One part left unanswered is the commonest way a
fluent answer is incomplete, and similarity of the whole answer to the whole question does not
see it: half an answer is still close to the question.

A part is addressed when a supported answer sentence holds most of the words that are the
part's own (those the other parts do not share), or, for a compared item, its name. Words are
compared by their first five letters, so "nearest" meets "near", "born" meets "birth" does not:
the check leans to accepting a paraphrase it cannot read, and a part it calls missing is one
whose own words the answer does not use at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from agent.state import Plan
from agent.text import COMPARISON, keywords

MIN_PART_WORDS = 4
"""Shorter pieces ("which year and which conference") are fragments of one question."""
COVERED_SHARE = 0.5
"""Share of a part's own words an answer sentence must hold to address it."""
STEM = 5
_WH = frozenset(
    ["what", "which", "who", "whom", "whose", "when", "where", "why", "how", "many", "much"]
)
_SPLIT = re.compile(r"\?\s+|\?$|[,;]?\s+\band (?=(?:what|who|when|where|why|how|which)\b)")
_OPTIONS = re.compile(r"[,:]?\s*([^,?]+?)\s+or\s+([^,?]+?)\s*\??$")


@dataclass(frozen=True, slots=True)
class Part:
    text: str
    kind: Literal["question", "item", "subquery"]
    words: tuple[str, ...]
    """The part's own content words (stems), the ones an answer to it would use."""


def _stems(text: str) -> list[str]:
    return [w.lower()[:STEM] for w in keywords(text) if w.lower() not in _WH]


def question_parts(question: str, plan: Plan | None = None) -> list[Part]:
    """The parts of `question` an answer must each address; none when it is one question.
    A parallel plan's sub-questions are parts; a sequential plan's hops are not (only the
    last one's answer is asked for)."""
    texts: list[str] = []
    kind: Literal["question", "item", "subquery"] = "question"
    pieces = [p.strip(" ,;") for p in _SPLIT.split(question.strip()) if p.strip(" ,;?")]
    if len(pieces) > 1 and min(len(p.split()) for p in pieces) >= MIN_PART_WORDS:
        texts = pieces
    elif (options := _OPTIONS.search(question)) and COMPARISON.search(question):
        texts, kind = [options.group(1).strip(), options.group(2).strip()], "item"
    elif plan and plan["mode"] == "parallel" and len(plan["subqueries"]) > 1:
        texts, kind = [s["query"] for s in plan["subqueries"]], "subquery"
    if len(texts) < 2:
        return []
    stems = [_stems(t) for t in texts]
    parts = []
    for i, (text, own) in enumerate(zip(texts, stems, strict=True)):
        others = {w for j, s in enumerate(stems) if j != i for w in s}
        distinct = [w for w in dict.fromkeys(own) if w not in others] or list(dict.fromkeys(own))
        parts.append(Part(text=text.rstrip("?").strip(), kind=kind, words=tuple(distinct)))
    return [p for p in parts if p.words]


def addressed(part: Part, sentences: list[str]) -> bool:
    """Whether one of `sentences` (the supported ones) holds most of the part's own words; an
    item of a comparison, all of its words (it is a name)."""
    need = (
        len(part.words) if part.kind == "item" else max(1, round(len(part.words) * COVERED_SHARE))
    )
    for sentence in sentences:
        have = set(_stems(sentence))
        if sum(1 for w in part.words if w in have) >= need:
            return True
    return False
