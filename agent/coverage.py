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
from itertools import pairwise
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
_TOKEN = r"[\"\u201c']?[A-Z0-9][\w'\u2019.&:-]*[\"\u201d']?"
_RUN = re.compile(rf"{_TOKEN}(?:\s+(?:(?:of|the|de|da|van|von|to|in|on|for|a|an|&)\s+)*{_TOKEN})*")
"""A name as a question writes it: capitalised or numbered words, small words between."""
_OR = re.compile(r"\bor\b", re.IGNORECASE)
_OR_GAP = re.compile(r"\s*,?\s*or\s+")
_AND_GAP = re.compile(r"\s*,?\s*(?:and|&)\s+")
_JOINT = re.compile(
    r"\b(both|same|either|neither|different|differ|common|compared?|share[sd]?|"
    r"nationality|nationalities)\b|^\s*(are|were|is|was|do|did|does|have|has|where are|"
    r"where were)\b",
    re.IGNORECASE,
)
"""What makes "A and B" two things asked about together: "Are A and B both ...?", "What
nationality were A and B?", "Where are A and B located?"."""
_LEADING = frozenset(
    {"are", "is", "was", "were", "do", "does", "did", "has", "have", "had", "both", "the"}
    | {"who", "which", "what", "when", "where", "how"}
)


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
    elif items := _items(question):
        texts, kind = items, "item"
    elif plan and plan["mode"] == "parallel" and len(plan["subqueries"]) > 1:
        texts, kind = [s["query"] for s in plan["subqueries"]], "subquery"
    if len(texts) < 2:
        return []
    stems = [_stems(t) for t in texts]
    rest = question
    for text in texts:
        rest = rest.replace(text, " ")
    asked = set(_stems(rest)) if kind == "item" else set()
    parts = []
    for i, (text, own) in enumerate(zip(texts, stems, strict=True)):
        # an item's own words: not those of the other item, nor of the question around them
        # ("Dime Magazine" in "Which magazine is older, Gallery or Dime Magazine?")
        others = asked | {w for j, s in enumerate(stems) if j != i for w in s}
        distinct = [w for w in dict.fromkeys(own) if w not in others] or list(dict.fromkeys(own))
        parts.append(Part(text=text.rstrip("?").strip(), kind=kind, words=tuple(distinct)))
    return [p for p in parts if p.words]


def _items(question: str) -> list[str]:
    """Two named things the question asks about together: "A or B" when it compares them
    ("Which is older, A or B?"; a plain choice, "Which novelist, A or B, wrote X?", is answered
    by naming one), "A and B" when it asks about both."""
    runs = [(m.start(), m.end(), _trimmed(m.group())) for m in _RUN.finditer(question)]
    runs = [r for r in runs if r[2]]
    for (_, end, first), (start, _, second) in pairwise(runs):
        gap = question[end:start]
        if _OR_GAP.fullmatch(gap) and COMPARISON.search(_OR.sub(" ", question)):
            return [first, second]
        if _AND_GAP.fullmatch(gap) and _JOINT.search(question):
            return [first, second]
    return []


def _trimmed(run: str) -> str:
    """A run without the question's own capitalised first words ("Are", "Which") or quotes."""
    words = run.strip().strip("\"\u201c\u201d'").split()
    while words and words[0].lower().strip("\"\u201c\u201d'") in _LEADING:
        words = words[1:]
    return " ".join(words).strip("\"\u201c\u201d',.:")


def addressed(part: Part, sentences: list[str]) -> bool:
    """Whether one of `sentences` (the supported ones) holds at least half of the part's own
    words (of a compared item's name: "Temple" for "Shirley Temple")."""
    need = max(1, round(len(part.words) * COVERED_SHARE))
    for sentence in sentences:
        have = set(_stems(sentence))
        if sum(1 for w in part.words if w in have) >= need:
            return True
    return False
