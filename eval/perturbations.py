"""Candidate answers for measuring an answer self-check, built from a question's gold paragraphs.

A self-check must accept what the evidence says and flag what it does not. To measure both, the
gold supporting sentences of a question become answers a model could have written:

- faithful: the sentence verbatim; `attributed` ("According to the documents, ..."); `reordered`
  (a fronted phrase such as "In 1999," moved to the end of the sentence, or back); `inverted`
  ("X is the Y" -> "The Y is X"). Each keeps every number, name and negation of the sentence.
- unfaithful, exactly one change each: `number` (a number, year or amount changed to a value the
  gold paragraphs do not hold), `name` (a name swapped for another of the same kind from the
  corpus: a person for a person, a film for a film, a place for a place, one absent from every
  paragraph shipped with the question), `negation` (a negation added or removed), `comparison`
  (an ordering word flipped: older/younger, before/after, more/less, first/last, ...),
  `miscited` (the sentence verbatim, cited to an evidence block that does not hold it);
- multi-part: for a question with several parts (MuSiQue's `decomposition`, a HotpotQA
  comparison naming both entities, two questions joined by "and"), `partial` answers only the
  first part; `all_parts` (faithful) answers each part with its own sentence.

Which sentence of a paragraph a candidate starts from: the sentences are ranked by whether they
hold the gold answer (or the part's answer) and by how many of the question's content words they
share, and each perturbation takes the best-ranked sentence it applies to. Names are known by
kind from the corpus itself (titles, classified by the first sentence of their paragraph:
"... is a 1945 American film", "... is a city", a birth date in parentheses) and from the
"Name (born ..." pattern anywhere in the corpus; there is no tagger, so a name the corpus does not
know is never swapped, and one whose kind is ambiguous neither.

Every candidate carries the original sentence, the changed span and the expected verdict;
where the evidence block that holds each sentence sits is known only when the agent has
retrieved it, so citing is left to the runner (`bench/self_check.py`).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from agent.text import keywords, split_sentences
from eval.datasets import CorpusDoc, Question

__all__ = [
    "FAITHFUL_VARIANTS",
    "KINDS",
    "Candidate",
    "Claim",
    "Edit",
    "NameIndex",
    "attributed",
    "build_candidates",
    "change_number",
    "flip_comparison",
    "inverted",
    "names_and_numbers",
    "question_parts",
    "reordered",
    "swap_name",
    "toggle_negation",
]

Kind = Literal["faithful", "number", "name", "negation", "comparison", "miscited", "partial"]
KINDS: tuple[Kind, ...] = (
    "faithful",
    "number",
    "name",
    "negation",
    "comparison",
    "miscited",
    "partial",
)
FAITHFUL_VARIANTS = ("verbatim", "attributed", "reordered", "inverted", "all_parts")
Expected = Literal["supported", "unsupported", "incomplete"]

_T = TypeVar("_T")

MIN_WORDS = 5
MAX_WORDS = 70


@dataclass(frozen=True, slots=True)
class Edit:
    """A sentence after one change: `before` in the original became `after` here."""

    text: str
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class Claim:
    """One sentence of a candidate answer, without its citation mark. `source` is the gold
    sentence it comes from, verbatim, in paragraph `doc_id`; the runner cites the evidence block
    that holds `source`, or, with `miscite`, one that does not."""

    text: str
    source: str
    doc_id: str
    miscite: bool = False


@dataclass(frozen=True, slots=True)
class Candidate:
    """An answer to `question` whose truth is known. `expected` is the verdict a sound check
    gives it: `supported` (faithful), `unsupported` (one fact changed or miscited),
    `incomplete` (true, but it answers only `parts_covered` of the question's `parts`)."""

    id: str
    question_id: str
    question: str
    kind: Kind
    variant: str
    claims: tuple[Claim, ...]
    original: str
    changed: Edit | None
    expected: Expected
    parts: int = 1
    parts_covered: int = 1
    name_kind: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "question_id": self.question_id,
            "kind": self.kind,
            "variant": self.variant,
            "claims": [
                {"text": c.text, "source": c.source, "doc_id": c.doc_id, "miscite": c.miscite}
                for c in self.claims
            ],
            "original": self.original,
            "changed": (
                {"from": self.changed.before, "to": self.changed.after} if self.changed else None
            ),
            "expected": self.expected,
            "parts": self.parts,
            "parts_covered": self.parts_covered,
            **({"name_kind": self.name_kind} if self.name_kind else {}),
        }


# -- names ---------------------------------------------------------------------------------------

_CONNECTORS = frozenset(
    [
        *("of", "and", "the", "de", "del", "della", "di", "da", "van", "von", "der", "la"),
        *("le", "du", "y", "&", "for", "on", "in"),
    ]
)
_NAME_TOKEN = re.compile(r"[A-Z][\w.'&-]*|\d+")
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_PERSON_AT = re.compile(
    r"^(?P<name>[A-Z][\w.'-]+(?: (?:[A-Z][\w.'-]+|de|van|von|da|di|del|la|le)){1,3}) \("
    rf"(?:[^()]{{0,60}}?\b(?:born|née|b\.)\s|[^()]{{0,20}}?\b(?:{_MONTHS})\b[^()]{{0,12}}?\d{{3,4}}"
    r"|c?\.?\s?\d{3,4}\s*[\u2013\u2014-]\s*(?:c\.\s?)?\d{3,4}\))"
)
"""A person opening their own paragraph: "Shirley Temple Black (April 23, 1928 - ...",
"Ed Wood (born ...", "Jean Racine (1639-1699)" (with an en dash)."""
_PREDICATE = re.compile(
    r"\b(?:is|was|are|were)\s+(?:an?|the|one of the)\s+(.{0,80}?)"
    r"(?P<stop>\s(?:in|of|at|on|to|from|by|for|with|as|that|which|who|located|based|situated"
    r"|near)\b|[,.;(\"]|$)"
)
"""What a paragraph's subject is, up to the first preposition or clause: "a 1945 American
comedy film", "a South Korean boy group formed", "a city"."""
_KIND_WORDS: dict[str, str] = {
    word: kind
    for kind, words in {
        "settlement": "city town village hamlet suburb borough neighborhood neighbourhood commune "
        "municipality township community metropolis capital parish",
        "region": "country state province county district region island archipelago peninsula",
        "landform": "river lake mountain valley bay",
        "film": "film movie",
        "music": "album song single ep soundtrack",
        "writing": "novel book poem anthology comic magazine newspaper",
        "series": "series sitcom show miniseries episode documentary",
        "game": "game",
        "band": "band duo trio",
        "school": "university college school",
        "company": "company corporation airline brand manufacturer network channel label "
        "publisher studio firm retailer chain conglomerate agency franchise",
        "team": "team club",
    }.items()
    for word in words.split()
}
"""A paragraph's subject's kind from the head of its description: a swap stays within one
(a film for a film, a band for a band, a city for a village)."""
_TRAILING_PARENS = re.compile(r"\s*\([^)]*\)\s*$")
_GLUED_BEFORE = re.compile(
    r"\b(?!(?:In|On|At|The|A|An|By|From|To|With|For|After|Before|During|According|Since|As)\b)"
    r"[A-Z][\w'-]*(?: (?:of|and|the|de|&|to))? $"
)
_GLUED_AFTER = re.compile(r" (?:(?:of|and|the|de|&|to) )?[A-Z]")
"""A known name inside a longer one ("Kiss" in "Kiss and Tell", "December" in "Back to
December", "Temple" in "Shirley Temple Black") is not that name; one after a capitalised
sentence opener ("In London, ...") is."""


def _surface(title: str) -> str | None:
    """How a title reads in running text ("Kiss and Tell (1945 film)" -> "Kiss and Tell"), or
    None when it does not look like a name (lower-case words, too long, no capital)."""
    text = _TRAILING_PARENS.sub("", title).strip()
    tokens = text.split()
    if not 1 <= len(tokens) <= 6 or len(text) < 3 or not text[0].isupper():
        return None
    if not all(t.lower() in _CONNECTORS or _NAME_TOKEN.fullmatch(t) for t in tokens):
        return None
    if tokens[-1].lower() in _CONNECTORS or text.isdigit():
        return None
    return text


_COLLECTIVE = frozenset({"series", "chain", "network", "group", "range", "collection", "family"})


def _kind_of(first_sentence: str) -> str | None:
    if _PERSON_AT.match(first_sentence):
        return "person"
    predicate = _PREDICATE.search(first_sentence)
    if predicate is None:
        return None
    words = re.findall(r"[a-z]+", predicate.group(1).lower())
    if words and words[-1] in _COLLECTIVE and predicate.group("stop").strip() == "of":
        return None  # "a series of battles", "a chain of islands": of what, not which kind
    kinds = [_KIND_WORDS[w] for w in words if w in _KIND_WORDS]
    return kinds[-1] if kinds else None  # the head noun comes last: "a film studio"


@dataclass(slots=True)
class NameIndex:
    """Names the corpus knows, by kind: paragraph titles classified by the paragraph's opening
    sentence, and people named with a birth date anywhere. A surface seen with two kinds is
    dropped: a swap must stay within one kind."""

    kind_of: dict[str, str] = field(default_factory=dict)
    by_kind: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_corpus(cls, docs: Iterable[CorpusDoc]) -> NameIndex:
        seen: dict[str, set[str]] = defaultdict(set)
        for doc in docs:
            opening = (split_sentences(doc.text) or [doc.text])[0]
            surface = _surface(doc.title)
            kind = _kind_of(opening)
            if surface is not None and kind is not None:
                seen[surface].add(kind)
            person = _PERSON_AT.match(opening)
            if person is not None and _surface(person.group("name")) == person.group("name"):
                seen[person.group("name")].add("person")  # "Shirley Temple Black" too
        index = cls()
        for surface, kinds in seen.items():
            if len(kinds) == 1:
                (kind,) = kinds
                index.kind_of[surface] = kind
                index.by_kind.setdefault(kind, []).append(surface)
        for names in index.by_kind.values():
            names.sort()
        return index

    def names_in(self, sentence: str) -> list[tuple[int, int, str]]:
        """(start, end, name) of each known name in `sentence` that stands alone (no capitalised
        word glued before or after it, directly or across "of", "and", "the"), longest first
        where two overlap."""
        found: list[tuple[int, int, str]] = []
        tokens = list(re.finditer(r"[\w.'&-]+", sentence))
        for i in range(len(tokens)):
            for j in range(min(len(tokens), i + 6), i, -1):
                start, end = tokens[i].start(), tokens[j - 1].end()
                text = sentence[start:end].rstrip(".")
                end = start + len(text)
                if text not in self.kind_of:
                    continue
                if _GLUED_BEFORE.search(sentence[:start]) or _GLUED_AFTER.match(sentence[end:]):
                    continue
                if any(s < end and start < e for s, e, _ in found):
                    continue
                found.append((start, end, text))
                break
        return sorted(found)


# -- perturbations -------------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w|[.,]\d)")
_NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _new_number(raw: str, rng: random.Random, day: bool = False) -> str:
    plain = raw.replace(",", "")
    if day:
        return str(rng.choice([d for d in range(1, 29) if d != int(plain)]))
    if "." in plain:
        whole, frac = plain.split(".")
        last = int(frac[-1])
        digit = rng.choice([d for d in range(10) if d != last])
        value = f"{whole}.{frac[:-1]}{digit}"
        return f"{int(whole):,}.{frac[:-1]}{digit}" if "," in raw else value
    n = int(plain)
    if 1000 <= n <= 2100 and len(plain) == 4:  # a year
        out = n + rng.choice([-1, 1]) * rng.randint(1, 9)
    elif n < 10:
        out = rng.choice([k for k in range(1, 13) if k != n])
    else:
        out = max(1, round(n * rng.choice([0.5, 0.7, 1.3, 1.5, 2.0])))
        if out == n:
            out = n + 1
    return f"{out:,}" if "," in raw else str(out)


def _is_day(sentence: str, start: int, end: int) -> bool:
    """A day of the month ("27 November", "November 27,"): changed to another day, not to 54."""
    if not sentence[start:end].isdigit() or int(sentence[start:end]) > 31:
        return False
    return bool(
        re.match(rf"\s+(?:{_MONTHS})\b", sentence[end:])
        or re.search(rf"\b(?:{_MONTHS})\s+$", sentence[:start])
    )


def change_number(sentence: str, rng: random.Random, forbidden: str = "") -> Edit | None:
    """One number (a year, a count, an amount; digits, or a number word from two to ten)
    changed to a value that does not occur in `forbidden` (the gold paragraphs)."""
    spans = [(m.start(), m.end(), m.group()) for m in _NUMBER.finditer(sentence)]
    if not spans:
        words = re.finditer(rf"\b({'|'.join(_NUMBER_WORDS)})\b", sentence)
        spans = [(m.start(), m.end(), m.group()) for m in words]
    rng.shuffle(spans)
    for start, end, raw in spans:
        for _ in range(8):
            if raw.isalpha():
                new = rng.choice([w for w in _NUMBER_WORDS if w != raw])
            else:
                new = _new_number(raw, rng, day=_is_day(sentence, start, end))
            if new != raw and not re.search(rf"(?<![\d,.]){re.escape(new)}(?![\d])", forbidden):
                return Edit(sentence[:start] + new + sentence[end:], raw, new)
    return None


def swap_name(
    sentence: str, names: NameIndex, rng: random.Random, forbidden: str = ""
) -> tuple[Edit, str] | None:
    """One known name swapped for another of its kind that `forbidden` (every paragraph the
    question ships with) and the sentence do not mention."""
    found = names.names_in(sentence)
    rng.shuffle(found)
    haystack = f"{forbidden}\n{sentence}".lower()
    for start, end, name in found:
        kind = names.kind_of[name]
        pool = names.by_kind.get(kind, [])
        for _ in range(30):
            if len(pool) < 2:
                break
            other = rng.choice(pool)
            if other == name or other.lower() in haystack:
                continue
            if any(w.lower() in haystack for w in other.split() if len(w) > 3 and w[0].isupper()):
                continue  # no shared surname or word with a name of the evidence
            return Edit(sentence[:start] + other + sentence[end:], name, other), kind
    return None


_NEGATED = re.compile(r"\b(?:(not|never) |(can)not\b|(won)'t\b|(\w+)n't\b)", re.IGNORECASE)
_AUXILIARY = re.compile(
    r"\b(?:(is|was|are|were)|(has|have|had)(?= (?:been|\w+ed|\w+en)\b)"
    r"|(will|would|can|could|should|may|might|must)(?= [a-z]))\b(?! not\b)"
)
"""Where "not" can follow: a copula, "has" before a participle, a modal before a verb."""


def toggle_negation(sentence: str) -> Edit | None:
    """Removes the first negation ("not", "never", "n't", "cannot"), or, when there is none,
    adds "not" after the first auxiliary or copula ("was an actress" -> "was not an actress")."""
    negated = _NEGATED.search(sentence)
    if negated is not None:
        span = negated.group()
        if negated.group(1):
            after = ""
        elif negated.group(2):
            after = negated.group(2)
        elif negated.group(3):
            after = "will" if negated.group(3).islower() else "Will"
        else:
            after = negated.group(4)
        text = sentence[: negated.start()] + after + sentence[negated.end() :]
        return Edit(re.sub(r"\s{2,}", " ", text), span.strip(), after)
    aux = _AUXILIARY.search(sentence)
    if aux is None:
        return None
    text = sentence[: aux.end()] + " not" + sentence[aux.end() :]
    return Edit(text, aux.group(), f"{aux.group()} not")


_ANTONYMS = {
    "older": "younger",
    "oldest": "youngest",
    "elder": "younger",
    "eldest": "youngest",
    "before": "after",
    "earlier": "later",
    "earliest": "latest",
    "more": "less",
    "fewer": "more",
    "most": "least",
    "larger": "smaller",
    "largest": "smallest",
    "bigger": "smaller",
    "biggest": "smallest",
    "greater": "smaller",
    "greatest": "smallest",
    "higher": "lower",
    "highest": "lowest",
    "longer": "shorter",
    "longest": "shortest",
    "taller": "shorter",
    "tallest": "shortest",
    "first": "last",
    "better": "worse",
    "best": "worst",
    "above": "below",
    "newer": "older",
    "newest": "oldest",
}
_REVERSE = {
    "younger": "older",
    "youngest": "oldest",
    "after": "before",
    "later": "earlier",
    "latest": "earliest",
    "less": "more",
    "least": "most",
    "smaller": "larger",
    "smallest": "largest",
    "lower": "higher",
    "lowest": "highest",
    "shorter": "longer",
    "shortest": "longest",
    "last": "first",
    "worse": "better",
    "worst": "best",
    "below": "above",
}
FLIPS = {**_REVERSE, **_ANTONYMS}
_FLIPPABLE = re.compile(rf"\b({'|'.join(sorted(FLIPS, key=len, reverse=True))})\b")
_NOT_ORDER = re.compile(r"\b(named|modell?ed|called|titled|after whom|at least|at most)\s*$")


def flip_comparison(sentence: str) -> Edit | None:
    """The first lower-case comparative or ordering word flipped to its antonym; "named after",
    "at least" and the like are not orderings and are left alone."""
    for match in _FLIPPABLE.finditer(sentence):
        word = match.group()
        if _NOT_ORDER.search(sentence[: match.end()]) or _NOT_ORDER.search(
            sentence[: match.start()]
        ):
            continue
        new = FLIPS[word]
        return Edit(sentence[: match.start()] + new + sentence[match.end() :], word, new)
    return None


# -- faithful restatements -----------------------------------------------------------------------

_LOWER_STARTS = frozenset(
    [
        *("the", "a", "an", "it", "he", "she", "they", "his", "her", "its", "their", "this"),
        *("these", "those", "there", "in", "on", "at", "during", "after", "before", "since"),
        *("from", "by", "following", "upon", "as", "until"),
    ]
)


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    return text[0].lower() + text[1:] if first.lower() in _LOWER_STARTS else text


def _upper_first(text: str) -> str:
    return text[0].upper() + text[1:] if text else text


def _body_and_end(sentence: str) -> tuple[str, str]:
    stripped = sentence.rstrip()
    if stripped and stripped[-1] in ".!?":
        return stripped[:-1].rstrip(), stripped[-1]
    return stripped, "."


def attributed(sentence: str) -> Edit:
    """ "According to the documents, ..." before the sentence, its first word lower-cased only
    when that word is not a name."""
    text = f"According to the documents, {_lower_first(sentence)}"
    return Edit(text, sentence[:1], text[: len(text) - len(sentence) + 1])


_FRONTED = re.compile(
    r"^(?P<lead>(?:In|On|At|During|After|Before|Since|From|By|Following|Upon|Until|Throughout)"
    r"\b[^,;()]{2,60}),\s+(?P<main>[^,;]{10,}?)(?P<end>[.!?])$"
)
_TRAILING = re.compile(
    r"^(?P<main>[^,;]{10,}?)\s+(?P<tail>(?:in|on|during|since|until)\s+(?:[A-Z][\w-]*,?\s*)*"
    r"\d{3,4})(?P<end>[.!?])$"
)


_SUBORDINATE = "when|while|after|before|because|who|whom|which|that|where|as|if|since|until|and|or"
"""A clause inside the main one: a phrase moved past it could attach to it instead."""


def reordered(sentence: str) -> Edit | None:
    """Clause order changed, facts kept: a fronted phrase without commas inside ("In 1999, he
    moved to Paris.") goes to the end ("He moved to Paris in 1999."), or a closing "in 1999"
    to the front; only across a main clause with no clause of its own that the phrase could
    come to modify ("... when she joined the Navy in 1943")."""
    fronted = _FRONTED.match(sentence)
    if fronted is not None and not re.search(rf"\b({_SUBORDINATE})\b", fronted.group("main")):
        lead, main, end = fronted.group("lead"), fronted.group("main"), fronted.group("end")
        text = f"{_upper_first(main)} {lead[0].lower()}{lead[1:]}{end}"
        return Edit(text, f"{lead}, {main}", f"{_upper_first(main)} {lead[0].lower()}{lead[1:]}")
    trailing = _TRAILING.match(sentence)
    if trailing is not None:
        main, tail, end = trailing.group("main"), trailing.group("tail"), trailing.group("end")
        if _NUMBER.search(main) is None and not re.search(rf"\b(is|are|{_SUBORDINATE})\b", main):
            text = f"{_upper_first(tail)}, {_lower_first(main)}{end}"
            return Edit(text, f"{main} {tail}", f"{_upper_first(tail)}, {_lower_first(main)}")
    return None


_IDENTITY = re.compile(
    r"^(?P<x>[A-Z][\w.'&-]*(?: (?:[A-Z][\w.'&-]*|of|and|the|de|van|von)){0,5}) "
    r"(?P<cop>is|was|are|were) (?P<y>the (?!same\b|only\b)[^,;()]{3,120}?)(?P<end>[.!?])$"
)


def inverted(sentence: str) -> Edit | None:
    """ "X is the Y." -> "The Y is X." where X is a name (not a pronoun) and Y a definite
    description without commas or clauses of its own: an identity, which reads the same both
    ways. A leading "The" of X is lower-cased in its new place."""
    match = _IDENTITY.match(sentence)
    if match is None or re.search(r"\b(is|was|are|were|who|which|that)\b", match.group("y")):
        return None
    x, cop, y, end = match.group("x"), match.group("cop"), match.group("y"), match.group("end")
    if x.split()[0].lower() in _LOWER_STARTS and x.split()[0] != "The":
        return None
    x_after = "the" + x[3:] if x.startswith("The ") else x
    text = f"{_upper_first(y)} {cop} {x_after}{end}"
    return Edit(text, f"{x} {cop} {y}", f"{_upper_first(y)} {cop} {x_after}")


def names_and_numbers(text: str) -> tuple[list[str], list[str]]:
    """The numbers and the capitalised words (not sentence-initial stop words) of `text`,
    sorted: two texts that state the same facts have the same of both."""
    numbers = sorted(re.findall(r"\d+(?:[.,]\d+)*", text))
    words = [
        w
        for w in re.findall(r"\b[A-Z][\w'-]*", text)
        if w.lower() not in _LOWER_STARTS and w not in ("According",)
    ]
    return numbers, sorted(words)


# -- questions and sentences ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a question: what it asks, its answer when known, its gold paragraph."""

    question: str
    answer: str | None
    doc_ids: tuple[str, ...]


_JOINED = re.compile(
    r"^(?P<a>(?:what|who|when|where|which|how|in what|in which)\b.{12,}?)(?:,\s*|\s+)and\s+"
    r"(?P<b>(?:what|who|when|where|which|how)\b(?: \w+)? "
    r"(?:is|was|are|were|did|does|do|has|have|had)\b.{6,})$",
    re.IGNORECASE,
)
"""Two questions joined: "Who directed X, and when was it released?" (a wh-word then a verb
after "and"; "... the player who was ..." is a relative clause and does not count)."""


def question_parts(question: Question, titles: Mapping[str, str]) -> list[Part]:
    """The parts a complete answer must cover; one part (the question) when it is not several.

    MuSiQue lists its sub-questions (`decomposition`, in the order of `supporting_doc_ids`);
    "#1" in a later one stands for the first one's answer. A HotpotQA comparison names both
    entities, each a gold paragraph's title, joined by "and" or "or" ("Who is older, Annie
    Morton or Terry Richardson?"). Two questions joined by "and" are two parts."""
    whole = [Part(question.question, question.answer, tuple(question.supporting_doc_ids))]
    steps = question.extra.get("decomposition")
    docs = question.supporting_doc_ids
    if isinstance(steps, list) and len(steps) == len(docs) and len(steps) > 1:
        answers = [str(s.get("answer", "")) for s in steps if isinstance(s, dict)]
        parts = []
        for step, doc_id in zip(steps, docs, strict=True):
            text = str(step.get("question", "")) if isinstance(step, dict) else ""
            text = re.sub(r"#(\d)", lambda m: answers[int(m.group(1)) - 1], text)
            answer = str(step.get("answer", "")) if isinstance(step, dict) else None
            parts.append(Part(text.replace(" >> ", " "), answer, (doc_id,)))
        return parts
    named = [_surface(titles.get(d, "")) or titles.get(d, "") for d in docs]
    if len(docs) == 2 and all(named) and named[0].lower() != named[1].lower():
        a, b = (re.escape(n) for n in named)
        pair = rf"\b(?:{a})\W+(?:and|or)\W+(?:the\s+)?(?:{b})\b"
        swapped = rf"\b(?:{b})\W+(?:and|or)\W+(?:the\s+)?(?:{a})\b"
        if re.search(f"{pair}|{swapped}", question.question, re.IGNORECASE):
            return [Part(f"{n}?", None, (d,)) for n, d in zip(named, docs, strict=True)]
    joined = _JOINED.match(question.question.strip())
    if joined is not None:
        first = joined.group("a").rstrip(" ,") + "?"
        second = _upper_first(joined.group("b"))
        return [Part(first, None, tuple(docs)), Part(second, question.answer, tuple(docs))]
    return whole


def _usable(sentence: str) -> bool:
    words = sentence.split()
    return MIN_WORDS <= len(words) <= MAX_WORDS and bool(re.search(r"[A-Za-z]", sentence))


def _rank(question: str, answer: str | None, sentences: Sequence[str]) -> list[str]:
    asked = {w.lower() for w in keywords(question)}
    gold = (answer or "").strip().lower()
    scorable = gold not in ("", "yes", "no")

    def score(sentence: str) -> float:
        words = {w.lower() for w in keywords(sentence)}
        holds = 1.0 if scorable and gold in sentence.lower() else 0.0
        return holds + len(asked & words) / (len(asked) + 1)

    order = sorted(range(len(sentences)), key=lambda i: (-score(sentences[i]), i))
    return [sentences[i] for i in order]


def build_candidates(
    question: Question,
    corpus: Mapping[str, CorpusDoc],
    names: NameIndex,
    seed: int = 0,
) -> list[Candidate]:
    """Every candidate of one question, in a fixed order; the same `seed` gives the same ones
    whatever other questions are built (each draws from its own random stream)."""
    gold = [corpus[d] for d in dict.fromkeys(question.supporting_doc_ids) if d in corpus]
    if not gold:
        return []
    shipped = [
        corpus[d].text
        for d in [*question.supporting_doc_ids, *question.extra.get("distractor_doc_ids", [])]
        if d in corpus
    ]
    gold_text = "\n".join(d.text for d in gold)
    forbidden_names = "\n".join([question.question, *shipped])
    ranked: list[tuple[str, str]] = []  # (sentence, doc_id), best first per paragraph, merged
    per_doc: dict[str, list[str]] = {}
    for doc in gold:
        usable = [s for s in split_sentences(doc.text) if _usable(s)]
        per_doc[doc.id] = _rank(question.question, question.answer, usable)
    depth = max((len(v) for v in per_doc.values()), default=0)
    for i in range(depth):
        for doc_id, sentences in sorted(
            per_doc.items(), key=lambda kv: _first_score(question, kv[1])
        ):
            if i < len(sentences):
                ranked.append((sentences[i], doc_id))
    if not ranked:
        return []

    out: list[Candidate] = []

    def rng(kind: str) -> random.Random:
        return random.Random(f"{seed}:{question.id}:{kind}")

    def add(
        kind: Kind,
        variant: str,
        claims: Sequence[Claim],
        original: str,
        changed: Edit | None,
        expected: Expected,
        *,
        parts: int = 1,
        parts_covered: int = 1,
        name_kind: str | None = None,
    ) -> None:
        out.append(
            Candidate(
                id=f"{question.id}:{variant}:{len(out)}",
                question_id=question.id,
                question=question.question,
                kind=kind,
                variant=variant,
                claims=tuple(claims),
                original=original,
                changed=changed,
                expected=expected,
                parts=parts,
                parts_covered=parts_covered,
                name_kind=name_kind,
            )
        )

    for doc_id, sentences in per_doc.items():
        if not sentences:
            continue
        top = sentences[0]
        add("faithful", "verbatim", [Claim(top, top, doc_id)], top, None, "supported")
        said = attributed(top)
        add("faithful", "attributed", [Claim(said.text, top, doc_id)], top, said, "supported")
        for variant, restate in (("reordered", reordered), ("inverted", inverted)):
            found = next(((s, e) for s in sentences if (e := restate(s)) is not None), None)
            if found is not None:
                source, change = found
                claim = Claim(change.text, source, doc_id)
                add("faithful", variant, [claim], source, change, "supported")

    name_rng = rng("name")
    perturbations: list[tuple[Kind, Callable[[str], tuple[Edit, str | None] | None]]] = [
        ("number", lambda s: _unnamed(change_number(s, rng("number"), gold_text))),
        ("name", lambda s: swap_name(s, names, name_rng, forbidden_names)),
        ("negation", lambda s: _unnamed(toggle_negation(s))),
        ("comparison", lambda s: _unnamed(flip_comparison(s))),
    ]
    for kind, perturb in perturbations:
        changed = _first(ranked, perturb)
        if changed is not None:
            (source, doc_id), (edit, name_kind) = changed
            claim = Claim(edit.text, source, doc_id)
            add(kind, kind, [claim], source, edit, "unsupported", name_kind=name_kind)
    top, top_doc = ranked[0]
    add("miscited", "miscited", [Claim(top, top, top_doc, miscite=True)], top, None, "unsupported")

    titles = {d: corpus[d].title for d in question.supporting_doc_ids if d in corpus}
    parts = question_parts(question, titles)
    if len(parts) > 1:
        claims = _part_claims(parts, corpus)
        if claims is not None:
            n = len(parts)
            first = claims[0]
            add(
                "partial",
                "partial",
                [first],
                first.source,
                None,
                "incomplete",
                parts=n,
                parts_covered=1,
            )
            add(
                "faithful",
                "all_parts",
                claims,
                " ".join(c.source for c in claims),
                None,
                "supported",
                parts=n,
                parts_covered=n,
            )
    return out


def _unnamed(edit: Edit | None) -> tuple[Edit, str | None] | None:
    return None if edit is None else (edit, None)


def _first_score(question: Question, sentences: list[str]) -> float:
    """Paragraphs whose best sentence holds the answer come first in the merged ranking."""
    gold = (question.answer or "").lower()
    holds = bool(sentences) and gold not in ("", "yes", "no") and gold in sentences[0].lower()
    return 0.0 if holds else 1.0


def _first(
    ranked: Sequence[tuple[str, str]], change: Callable[[str], _T | None]
) -> tuple[tuple[str, str], _T] | None:
    for sentence, doc_id in ranked:
        edit = change(sentence)
        if edit is not None:
            return (sentence, doc_id), edit
    return None


def _part_claims(parts: Sequence[Part], corpus: Mapping[str, CorpusDoc]) -> list[Claim] | None:
    """One gold sentence per part, each the best of its paragraph(s) for that part; None when a
    part has none or two parts would say the same sentence."""
    claims: list[Claim] = []
    for part in parts:
        best: tuple[str, str] | None = None
        for doc_id in part.doc_ids:
            if doc_id not in corpus:
                continue
            usable = [s for s in split_sentences(corpus[doc_id].text) if _usable(s)]
            taken = {c.source for c in claims}
            ranked = [s for s in _rank(part.question, part.answer, usable) if s not in taken]
            if ranked and (best is None or _holds(part, ranked[0])):
                best = (ranked[0], doc_id)
                if _holds(part, ranked[0]):
                    break
        if best is None:
            return None
        claims.append(Claim(best[0], best[0], best[1]))
    return claims


def _holds(part: Part, sentence: str) -> bool:
    answer = (part.answer or "").strip().lower()
    return bool(answer) and answer in sentence.lower()
