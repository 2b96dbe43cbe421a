"""Answer metrics for short-answer QA sets, computed the way the SQuAD v1.1 script computes them.

HotpotQA, MuSiQue and SQuAD report exact match (EM) and token F1 after the same normalisation:
lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace. Numbers from this
module are compared with those papers, so the normalisation is theirs, word for word, and a
question with several gold aliases scores its best alias (the official scripts' ``max`` over
ground truths).

Two choices the official scripts do not have to make:

- Citation markers (``[1]``, ``[2][3]``) are removed before scoring. Normalisation would turn
  them into number tokens that no gold answer contains, so a cited answer would lose F1 for being
  cited.
- ``answer_in_text`` asks whether a gold answer occurs in a text as whole normalised tokens
  (``"paris"`` is in ``"in paris france"``, not in ``"parisian"``). It scores evidence (could a
  reader have found the answer?) and long-form predictions (did the answer say it somewhere?),
  where EM is zero by construction.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

__all__ = [
    "YES_NO",
    "answer_in_text",
    "exact_match",
    "is_yes_no",
    "normalize_answer",
    "strip_citations",
    "token_f1",
]

YES_NO = frozenset({"yes", "no"})
"""Comparison questions answered by yes or no; an answer string in the evidence means nothing."""

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
_CITATION = re.compile(r"\s*(\[\d{1,3}\])+")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, no punctuation, no articles, single spaces."""
    lowered = text.lower()
    no_punctuation = "".join(ch for ch in lowered if ch not in _PUNCTUATION)
    no_articles = _ARTICLES.sub(" ", no_punctuation)
    return " ".join(no_articles.split())


def strip_citations(text: str) -> str:
    """Remove ``[n]`` markers (and the space before them) that cite evidence in an answer."""
    return _CITATION.sub("", text).strip()


def _check_answers(answers: Sequence[str]) -> None:
    if isinstance(answers, str):
        # A bare string is a Sequence[str] too; scoring against its characters would be wrong.
        raise TypeError("answers must be a sequence of gold aliases, not a single string")


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold alias, else 0.0."""
    _check_answers(answers)
    predicted = normalize_answer(strip_citations(prediction))
    return max((1.0 if predicted == normalize_answer(a) else 0.0 for a in answers), default=0.0)


def _f1(predicted_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(predicted_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """Bag-of-tokens F1 of the normalised prediction against its best gold alias.

    As in the SQuAD script, an empty side (nothing left after normalisation) scores 0, even
    against an equally empty side.
    """
    _check_answers(answers)
    predicted = normalize_answer(strip_citations(prediction)).split()
    return max((_f1(predicted, normalize_answer(a).split()) for a in answers), default=0.0)


def answer_in_text(answers: Sequence[str], text: str) -> bool:
    """Whether a gold alias occurs in ``text`` as a run of whole normalised tokens."""
    _check_answers(answers)
    haystack = f" {normalize_answer(strip_citations(text))} "
    for answer in answers:
        needle = normalize_answer(answer)
        if needle and f" {needle} " in haystack:
            return True
    return False


def is_yes_no(answers: Sequence[str]) -> bool:
    """A yes/no question: every gold alias normalises to ``yes`` or ``no``."""
    _check_answers(answers)
    normalised = [normalize_answer(a) for a in answers]
    return bool(normalised) and all(a in YES_NO for a in normalised)
