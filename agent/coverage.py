"""Which parts a question has, and whether an answer addresses each of them.

A question has several parts when it asks several questions ("Which planet is hottest, and
what is the nearest star?"), compares named items ("Who was born first, A or B?"), or was split
by the planner into independent sub-questions. One part left unanswered is the commonest way a
fluent answer is incomplete, and similarity of the whole answer to the whole question does not
see it: half an answer is still close to the question.

A part is addressed when a supported answer sentence holds most of the words that are the
part's own (those the other parts do not share), or, for a compared item, its name. Words are
compared by their first five letters less a plain ending (`stem`), so "nearest" meets "near"
and "played" meets "play", "born" meets "birth" does not: the check leans to accepting a
paraphrase it cannot read, and a part it calls missing is one whose own words the answer does
not use at all.

A single question that reaches its answer through another thing ("Who was the first president
of the association which published X?") is answered in part when the answer stops at that
thing ("X is published by the APA."). Its `focus` is what the question asks of the thing
("first president"): the content words of its first piece (pieces end where a bridge starts:
"of the", "which", "where", ...) less the answer-type nouns ("country", "year", "name") any
answer of the right kind satisfies, its named things, and the words that describe its first
named thing, which are the hop a stopped answer does answer ("main director" of "the spouse of
Big Eye's main director"). What it goes `through` are the names past the focus, or the name
those words described. An answer misses the focus when every supported sentence still names
what the question goes through and none uses a focus word (or one does, but the answer never
comes to the question's other names); the caller then compares meanings
(`FOCUS_SIMILARITY`), or not, when such a name is never come to (`unreached`).

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
from agent.text import COMPARISON, STOP_WORDS, keywords

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
"""An answer sentence this close in meaning to the focus speaks of it in other words, if it is
also as close as any evidence chunk the answer does not cite (the caller's)."""


@dataclass(frozen=True, slots=True)
class Part:
    text: str
    kind: Literal["question", "item", "subquery", "focus"]
    words: tuple[str, ...]
    """The part's own content words (stems), the ones an answer to it would use."""
    through: tuple[str, ...] = ()
    """Of a focus: what the question goes through, which an answer that stops short still
    speaks of: the name the focus's own words described, else its names from the focus on (a
    name before the focus is where the question ends, not where it starts), or, when it names
    nothing, the words that describe it ("the continent with the lowest average
    temperature")."""


def stem(word: str) -> str:
    """The first `STEM` letters of a word less a plain inflection ("played" and "play" meet,
    "songs" and "song")."""
    word = word.lower()
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)][:STEM]
    return word[:STEM]


def _stems(text: str) -> list[str]:
    return [stem(w) for w in keywords(text) if w.lower() not in _WH]


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
    kinds = {stem(kind.group(1))} if kind else set()
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

    Within the first piece that has any (of a question written as a statement, the piece it
    asks in: "... a city with a population of what?"), the words that describe the
    question's first named thing are left out (`_outer_words`): they are the hop an answer
    that stops short does answer ("main director" in "the spouse of Big Eye's main
    director"). Only when nothing else is left are they the focus.

    `text` is what the caller compares in meaning with the answer, so it holds none of the
    question's names: with them ("was the first president of Damerjog's country"), any
    sentence about Damerjog came close, and an answer that stopped at Damerjog's country was
    taken to speak of its president (MuSiQue train100: 40 of 84 stopped-short answers caught
    with the names in, 58 of 85 without)."""
    body = question.strip().rstrip("?")
    start = _WH_START.match(body)
    rest = body[start.end() :] if start else body
    named = _name_stems(question)
    # the kind of thing asked for ("What district ..."): any answer of that kind names it
    kind = _WH_NOUN.match(question)
    named |= {stem(kind.group(1))} if kind else set()

    def kept(words: list[str]) -> list[str]:
        return [
            w
            for w in words
            if w.lower() not in _WH
            and stem(w) not in _AUXILIARIES
            and stem(w) not in _ANSWER_TYPES
            and stem(w) not in named
        ]

    spans = _spans(rest)
    pieces = [(rest[begin:end], _runs(rest[begin:end])) for begin, end in spans]
    split = [_outer_words(*p) for p in pieces]
    outer = [kept(words) for words, _ in split]
    # a statement asks at its end: the relation asked is the one there ("The Memphis Hustle
    # are based in a suburb of a city with a population of what?"), reached through what
    # comes before it
    ending = None if start else _asking(rest, [begin for begin, _ in spans])
    first = next((i for i, w in enumerate(outer) if w), None)
    if ending is not None and outer[ending]:
        at, words = ending, outer[ending]
        through = split[at][1] or [run[2] for _, runs in pieces[:at] for run in runs]
    elif first is not None:
        at, words = first, outer[first]
        # what it goes through: the name the focus's own piece describes, else the names
        # from it on ("... of the association which published X"); and the names of earlier
        # pieces that only describe them ("David Jones is an international in ...")
        own = split[at][1]
        later = [run[2] for _, runs in pieces[at:] for run in runs]
        described = [run[2] for p, runs in pieces[:at] if kept(keywords(p)) for run in runs]
        through = described + (own or later)
    else:
        whole = [kept(keywords(p)) for p, _ in pieces]
        found = next((i for i, w in enumerate(whole) if w), None)
        if found is None:
            return None
        at, words = found, whole[found]
        through = [run[2] for _, runs in pieces[at:] for run in runs]
    if not through and not _named_runs(question):
        through = [" ".join(w for p, _ in pieces[at + 1 :] for w in keywords(p))]
    stems = tuple(dict.fromkeys(stem(w) for w in words))
    return Part(text=" ".join(words), kind="focus", words=stems, through=tuple(through))


_OF_END = re.compile(r"\bof\s+(?:(?:the|a|an)\s+)?$", re.IGNORECASE)
_WORD = re.compile(r"[\w'\u2019-]+")
_ASKS = re.compile(r"\b(?:what|which|who|whom|whose|when|where|how)\b", re.IGNORECASE)
_ASKS_NEAR_END = 4
_DETERMINER = re.compile(r"\b(?:the|a|an|its|his|her|their)$", re.IGNORECASE)


def _spans(text: str) -> list[tuple[int, int]]:
    """Where `text`'s pieces are: it is split where it starts describing what it goes through
    (`_BRIDGE`), never inside a name ("the producer of The Jewel of the Nile")."""
    raw = [(m.start(), m.end()) for m in _RUN.finditer(text)]
    cuts = [
        m
        for m in _BRIDGE.finditer(text)
        if not any(m.start() < end and begin < m.end() for begin, end in raw)
    ]
    # a piece keeps the article it starts with ("the city Sarah Sorge was born")
    bounds = [0]
    for m in cuts:
        article = _DETERMINER.search(m.group())
        bounds += [m.start(), m.start() + article.start() if article else m.end()]
    bounds.append(len(text))
    return list(zip(bounds[::2], bounds[1::2], strict=True))


def _asking(text: str, starts: list[int]) -> int | None:
    """Which of `text`'s pieces (by where each starts) a question written as a statement asks
    in ("... with a population of what in 2010?", "... another sport that was started
    when?"): the one its last question word is in or follows, when few words follow that
    word; None when it asks first."""
    found = list(_ASKS.finditer(text))
    if not found or len(text[found[-1].end() :].split()) > _ASKS_NEAR_END:
        return None
    return max(i for i, start in enumerate(starts) if start <= found[-1].start())


def _outer_words(piece: str, runs: list[tuple[int, int, str]]) -> tuple[list[str], list[str]]:
    """The content words of `piece` less those that describe its first named thing, and the
    names in what was left out: the noun it is linked to by "of" ("the author of Brand"),
    the word it owns ("Big Eye's main director"), its kind before it ("the city Kevin Durant
    ...", "the live album Maiden Japan") and then what follows it up to a comma, which
    describes it ("... played for before Golden State")."""
    if not runs:
        return keywords(piece), []
    begin, end, name = runs[0]
    before, after = piece[:begin], piece[end:]
    later = keywords(after)
    if name.endswith(("'s", "\u2019s", "s'")):
        return keywords(before) + later[1:], [name]
    if of := _OF_END.search(before):
        return keywords(_without_last_words(before[: of.start()])) + later, [name]
    head = _without_last_words(before)
    # its kind follows an article ("the city Kevin Durant"; not "movie stars Morgan Freeman")
    kind = head != " ".join(_WORD.findall(before)) and bool(_DETERMINER.search(head))
    if not before.strip() or kind:
        # what describes it ends at a comma: "in the city Sarah Sorge was born, is located in"
        described, comma, main = after.partition(",")
        names = [name, *(run[2] for run in runs[1:] if run[0] < end + len(described))]
        return keywords(head) + (keywords(main) if comma else []), names
    return keywords(before) + later, []


def _without_last_words(text: str) -> str:
    """`text` less its last content words (the noun phrase it ends with, articles kept)."""
    words = _WORD.findall(text)
    while words and words[-1].lower() not in STOP_WORDS:
        words.pop()
    return " ".join(words)


def misses_focus(question: str, focus: Part, sentences: list[str]) -> Part | None:
    """The focus an answer leaves unmet, None when it is met. Every sentence still names what
    the question goes through (`Part.through`: the answer stops there), and either no
    sentence uses a focus word other than to introduce a new name, or the answer never
    comes to the question's names beyond it (`unreached`: "played" of the player himself
    does not say whom his team played in the World Series). A word that only introduces a
    name the question does not hold ("the band Iron Maiden", "directed by Tim Burton",
    "the Lake District") names the thing gone through: the focus returned is without it,
    for the caller to compare in meaning."""
    through = [t for t in focus.through if _name_words(t)]
    if not sentences or not through:
        return None
    if not all(any(_names(s, t) for t in through) for s in sentences):
        return None
    asked = _name_stems(question)
    introduced = set[str]()
    used = False
    for sentence in sentences:
        said, labels = _focus_use(sentence, focus, asked)
        used, introduced = used or said, introduced | labels
    if used and not unreached(question, focus, sentences):
        return None
    words = [w for w in focus.words if w not in introduced] or list(focus.words)
    text = [w for w in focus.text.split() if stem(w) in words] or [focus.text]
    return Part(text=" ".join(text), kind="focus", words=tuple(words), through=focus.through)


def unreached(question: str, focus: Part, sentences: list[str]) -> list[str]:
    """The question's names beyond what it goes through that no sentence names ("Thinking
    Out Loud" of "Who did the producer of Songs I Wrote with Amy write the song "Thinking Out
    Loud" for?"): with the focus unmet, the answer never came to them. Numbers and single
    short words are left out: a question's capitalised first word is not a name."""
    return [
        name
        for name in _named_runs(question)
        if name not in focus.through
        and not name.replace(" ", "").isdigit()
        and (" " in name or len(name) > 3 or name.isupper())
        and not question.lstrip().startswith(name)
        and not any(_names(s, name) for s in sentences)
    ]


def _name_words(name: str) -> list[str]:
    """A name's word stems, initials left out ("Fawell" for "Harris W. Fawell")."""
    return [w for w in _stems(name) if len(w) > 1]


def _names(sentence: str, name: str) -> bool:
    """Whether `sentence` names `name`: half its words, or the last alone (a surname:
    "Malott" for "Deane Waldo Malott's")."""
    words = _name_words(name)
    have = set(_stems(sentence))
    return bool(words) and (
        words[-1] in have or sum(1 for w in words if w in have) >= max(1, len(words) / 2)
    )


def _focus_use(sentence: str, focus: Part, asked: set[str]) -> tuple[bool, set[str]]:
    """Whether `sentence` uses a focus word other than to introduce a name the question does
    not hold, and the focus words it uses only that way."""
    tokens = _WORD.findall(sentence)

    def new_name(i: int) -> bool:
        word = tokens[i] if i < len(tokens) else ""
        return word[:1].isupper() and stem(word) not in asked

    labels: set[str] = set()
    used = False
    for i, token in enumerate(tokens):
        root = stem(token)
        if root not in focus.words or token.lower() in _WH:
            continue
        # "the band Iron Maiden", "directed by Tim Burton", "the Lake District"
        j = i + 2 if tokens[i + 1 : i + 2] == ["by"] else i + 1
        inside = i > 0 and new_name(i) and (new_name(i - 1) or new_name(i + 1))
        if inside or new_name(j):
            labels.add(root)
        else:
            used = True
    return used, labels


def _runs(question: str) -> list[tuple[int, int, str]]:
    """The names the question writes, trimmed, with where each starts and ends."""
    found = ((m.start(), m.end(), _trimmed(m.group())) for m in _RUN.finditer(question))
    return [run for run in found if run[2]]


def _named_runs(question: str) -> list[str]:
    return [name for _, _, name in _runs(question)]


def _name_stems(question: str) -> set[str]:
    return {w for run in _named_runs(question) for w in _stems(run)}


def addressed(part: Part, sentences: list[str]) -> bool:
    """Whether one of `sentences` (the supported ones) holds at least half of the part's own
    words (of a compared item's name: "Temple" for "Shirley Temple")."""
    need = max(1, round(len(part.words) * COVERED_SHARE))
    for sentence in sentences:
        have = set(_stems(sentence))
        if sum(1 for w in part.words if w in have) >= need:
            return True
    return False
