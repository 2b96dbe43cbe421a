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

A single question that reaches its answer through another thing ("Who was the first president
of the association which published X?") is answered in part when the answer stops at that
thing ("X is published by the APA."). Its `focus` is what the question asks of the thing
("first president"): the content words before its first bridge ("of the", "which", "where",
...), not the answer-type nouns ("country", "year", "name") any answer of the right kind
satisfies, nor its named things. An answer misses the focus when no supported sentence uses
one of its words and every one of them still speaks of the question's named things (none has
moved on to what they lead to); the caller then compares meanings (`FOCUS_SIMILARITY`).

A plain choice ("Which writer was from England, A or B?") is answered by naming one option,
but only by a sentence that says of it what the question chooses by ("England"): one that
describes an option without it ("A was an American writer.") leaves the other option out.
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
_TOKEN = r"[\"\u201c']?[A-Z0-9][\w'\u2019.&:\u2013-]*[\"\u201d']?"
_RUN = re.compile(rf"{_TOKEN}(?:\s+(?:(?:of|the|de|da|van|von|to|in|on|for|a|an|&)\s+)*{_TOKEN})*")
"""A name as a question writes it: capitalised or numbered words, small words between."""
_OR = re.compile(r"\bor\b", re.IGNORECASE)
_OR_GAP = re.compile(r"\s*,?\s*or\s+(?:the\s+)?", re.IGNORECASE)
_AND_GAP = re.compile(r"\s*,?\s*(?:and|&)\s+(?:the\s+)?", re.IGNORECASE)
_COMPARATIVE = re.compile(
    r"\b(?:is|was|are|were)\s+\w+er\b|\bthe\s+\w+est\b|"
    r"\b(?:most|least|further|farther|closer|closest|newer|newest)\b",
    re.IGNORECASE,
)
"""Comparative and superlative forms ("is taller", "had the longest career", "most
recently") that make "A or B" two things compared rather than a choice."""
_JOINT = re.compile(
    r"\b(both|same|either|neither|different|differ|common|compared?|share[sd]?|"
    r"nationality|nationalities)\b|^\s*(are|were|is|was|do|did|does|have|has|where are|"
    r"where were)\b",
    re.IGNORECASE,
)
"""What makes "A and B" two things asked about together: "Are A and B both ...?", "What
nationality were A and B?", "Where are A and B located?"."""
_CLOSING_PAIR = re.compile(r",\s*(?:the\s+)?\S+(?:\s+\S+){0,8}$")
"""The text before a pair's second item ends with ", A and": the pair was put after a comma."""
_BOTH_SUBJECTS = re.compile(r"\s+(?:are|were|have|both|each|share|shared)\b", re.IGNORECASE)
"""After "A and B": the two are the subject of one question ("A and B were recipients of
what award?")."""
_LEADING = frozenset(
    {"are", "is", "was", "were", "do", "does", "did", "has", "have", "had", "both", "the"}
    | {"who", "which", "what", "when", "where", "how"}
)


_BRIDGE = re.compile(
    r"\b(?:of|in|by|for|from|at|on|with|to|as|during|after|before|near)\s+"
    r"(?:the|a|an|his|her|its|their)\b|\b(?:which|that|where|whose|whom|who|when|while)\b",
    re.IGNORECASE,
)
"""Where a question starts describing the thing its answer is reached through."""
_WH_START = re.compile(
    r"\s*(?:(?:in|at|of|from|for|to|by|on)\s+)?(?:what|which|who|whom|whose|when|where|how)\b",
    re.IGNORECASE,
)
_ANSWER_TYPES = frozenset(
    [
        "name",
        "kind",
        "type",
        "sort",
        "count",
        "city",
        "state",
        "year",
        "perso",
        "place",
        "locat",
        "part",
        "term",
        "date",
        "numbe",
        "thing",
        "peopl",
        "group",
        "compa",
        "organ",
        "day",
        "month",
        "perce",
        "amoun",
        "insta",
        "regio",
        "citiz",
        "natio",
        "langu",
    ]
)
"""Stems of nouns that say what kind of answer is wanted ("What country ...", "the name of"):
any answer of that kind satisfies them, so they are not what the question asks about."""
_AUXILIARIES = frozenset(
    ["is", "was", "are", "were", "did", "does", "do", "has", "have", "had", "be", "been"]
)
_WH_NOUN = re.compile(
    r"^\s*(?:(?:in|at|of|from|for|to|by|on)\s+)?(?:what|which|whose)\s+([\w-]+)",
    re.IGNORECASE,
)
"""The noun a question asks for ("Which writer ..."): the kind its options share."""
_BETWEEN = re.compile(r"\bbetween\s+(?:the\s+)?$", re.IGNORECASE)
FOCUS_SIMILARITY = 0.2
"""An answer sentence this close in meaning to the focus speaks of it in other words."""


@dataclass(frozen=True, slots=True)
class Part:
    text: str
    kind: Literal["question", "item", "subquery", "focus"]
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
    runs = _runs(question)
    compares = _compares(question)
    for (_, end, first), (start, after, second) in pairwise(runs):
        gap = question[end:start]
        if _OR_GAP.fullmatch(gap) and compares:
            return [first, second]
        joint = _JOINT.search(question) or _BOTH_SUBJECTS.match(question[after:])
        # "Which genus has more species, A and B?": compared when the pair closes the question
        # after a comma, not when named along the way ("the youngest ... stars with A and B in
        # what film?")
        closing = (
            compares
            and _CLOSING_PAIR.search(question[:start].rstrip())
            and not question[after:].strip(" ?")
        )
        if _AND_GAP.fullmatch(gap) and (joint or closing):
            return [first, second]
    return []


def choice_items(question: str) -> list[Part]:
    """The two options of a plain choice ("Which writer was from England, A or B?", "Between A
    and B, which ...?"): named things joined by "or", or by "and" after "between", that the
    question does not compare (`question_parts` leaves them out: naming one may answer it).
    Each option's words are the stems of its name that the other lacks, initials left out (an
    answer writes "James Gordon Farrell" for "J. G. Farrell")."""
    runs = _runs(question)
    if _compares(question):
        return []
    for (begin, end, first), (start, _, second) in pairwise(runs):
        gap = question[end:start]
        between = _AND_GAP.fullmatch(gap) and _BETWEEN.search(question[:begin])
        if not (_OR_GAP.fullmatch(gap) or between):
            continue
        one, two = ([w for w in _stems(t) if len(w) > 1] for t in (first, second))
        options = [
            Part(text=first, kind="item", words=tuple(w for w in one if w not in two)),
            Part(text=second, kind="item", words=tuple(w for w in two if w not in one)),
        ]
        return options if all(p.words for p in options) else []
    return []


def unchosen(question: str, options: list[Part], sentences: list[str]) -> list[Part]:
    """The options of a plain choice an answer leaves out, none when it speaks of every option
    or says of one what the question chooses by (`choice_words`): "Henry Roth was an American
    writer." alone does not say which writer was from England; "Childers was born in England."
    does."""
    missing = [p for p in options if not addressed(p, sentences)]
    if not missing:
        return []
    words = choice_words(question, options)
    need = max(1, round(len(words) * COVERED_SHARE))
    for sentence in sentences:
        have = set(_stems(sentence))
        chosen = [p for p in options if addressed(p, [sentence])]
        if chosen and sum(1 for w in words if w in have) >= need:
            return []
    return missing


def choice_words(question: str, options: list[Part]) -> tuple[str, ...]:
    """What a choice is made by: the question's content words less its options' names,
    answer-type nouns and the kind both options are ("Which writer ...": both are writers, so
    "writer" says nothing about which)."""
    body = re.sub(r"\bbetween\b", " ", question, flags=re.IGNORECASE)
    for option in options:
        body = body.replace(option.text, " ")
    kind = _WH_NOUN.match(question)
    kinds = {kind.group(1).lower()[:STEM]} if kind else set()
    return tuple(
        w
        for w in dict.fromkeys(_stems(body))
        if w not in _AUXILIARIES and w not in _ANSWER_TYPES and w not in kinds
    )


def _compares(question: str) -> bool:
    return bool(COMPARISON.search(_OR.sub(" ", question)) or _COMPARATIVE.search(question))


def _trimmed(run: str) -> str:
    """A run without the question's own capitalised first words ("Are", "Which") or quotes."""
    words = run.strip().strip("\"\u201c\u201d'").split()
    while words and words[0].lower().strip("\"\u201c\u201d'") in _LEADING:
        words = words[1:]
    return " ".join(words).strip("\"\u201c\u201d',.:")


def question_focus(question: str) -> Part | None:
    """What a single question asks of the thing it names or describes (`kind="focus"`, the
    focus words as `words`, the same words as written as `text`); None when nothing is left
    after removing answer-type nouns and named things.

    `text` is what the caller compares in meaning with the answer, so it holds none of the
    question's names: with them ("was the first president of Damerjog's country"), any
    sentence about Damerjog came close, and an answer that stopped at Damerjog's country was
    taken to speak of its president (MuSiQue train100: 40 of 84 stopped-short answers caught
    with the names in, 58 of 85 without)."""
    body = question.strip().rstrip("?")
    start = _WH_START.match(body)
    rest = body[start.end() :] if start else body
    named = {w for run in _named_runs(question) for w in _stems(run)}
    for piece in _BRIDGE.split(rest):
        kept = [
            w
            for w in keywords(piece)
            if w.lower() not in _WH
            and w.lower()[:STEM] not in _AUXILIARIES
            and w.lower()[:STEM] not in _ANSWER_TYPES
            and w.lower()[:STEM] not in named
        ]
        if kept:
            words = tuple(dict.fromkeys(w.lower()[:STEM] for w in kept))
            return Part(text=" ".join(kept), kind="focus", words=words)
    return None


def misses_focus(question: str, focus: Part, sentences: list[str]) -> bool:
    """Whether no sentence uses a focus word and every one still names the question's own
    named things: the answer stops at what the question goes through. Similarity decides
    the rest (the caller's)."""
    if not sentences or any(set(_stems(s)) & set(focus.words) for s in sentences):
        return False
    # initials are not how a sentence names someone ("Fawell" for "Harris W. Fawell")
    runs = [{w for w in _stems(r) if len(w) > 1} for r in _named_runs(question)]
    runs = [r for r in runs if r]
    if not runs:
        return False

    def names(sentence: str, run: set[str]) -> bool:
        have = set(_stems(sentence))
        return sum(1 for w in run if w in have) >= max(1, len(run) / 2)

    return all(any(names(s, run) for run in runs) for s in sentences)


def _runs(question: str) -> list[tuple[int, int, str]]:
    """The names the question writes, trimmed, with where each starts and ends."""
    found = ((m.start(), m.end(), _trimmed(m.group())) for m in _RUN.finditer(question))
    return [run for run in found if run[2]]


def _named_runs(question: str) -> list[str]:
    return [name for _, _, name in _runs(question)]


def addressed(part: Part, sentences: list[str]) -> bool:
    """Whether one of `sentences` (the supported ones) holds at least half of the part's own
    words (of a compared item's name: "Temple" for "Shirley Temple")."""
    need = max(1, round(len(part.words) * COVERED_SHARE))
    for sentence in sentences:
        have = set(_stems(sentence))
        if sum(1 for w in part.words if w in have) >= need:
            return True
    return False
