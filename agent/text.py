"""Text facts the nodes share: answer sentences, citation marks, content words, question shapes,
and how evidence is shown to a model. One home each, so the sentence a node writes is the
sentence another node checks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage

from agent.injection import fenced
from agent.state import Citation, Evidence

NO_EVIDENCE = "I could not find anything about this in the documents I can search."
"""The answer when retrieval found nothing: written without an LLM call, checked by no one."""

SENTENCE_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
"""Where an answer sentence ends: . ! or ? then space, then what starts a sentence."""

CITATION = re.compile(r"\[(\d{1,3})\]")
_CITATION_WITH_SPACE = re.compile(r"\s*\[\d{1,3}\](?!\w)|\[\d{1,3}\]")

COMPARISON = re.compile(
    r"\b(or|both|either|neither|compare|comparison|difference|differ|same|versus|vs\.?|"
    r"older|younger|earlier|later|first|larger|smaller|bigger|more|fewer|longer|shorter|"
    r"higher|lower|which (one|of))\b",
    re.IGNORECASE,
)
"""Words that make a question compare two or more things (each needs its own search)."""

_STOP_WORDS = (
    "a an the of in on at to for from by with and or but is are was were be been being do "
    "does did what which who whom whose when where why how that this these those it its as "
    "into than then there their they them he she his her i you your we our about one"
)
STOP_WORDS = frozenset(_STOP_WORDS.split())
"""Function words: never content, never a name's own."""
_STOP = STOP_WORDS


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_BOUNDARY.split(text.strip()) if s.strip()]


def cited_numbers(text: str, limit: int) -> list[int]:
    """The evidence numbers `text` cites, in order, once each, only those that exist."""
    return [n for n in dict.fromkeys(int(m) for m in CITATION.findall(text)) if 1 <= n <= limit]


def without_citations(sentence: str) -> str:
    """A sentence without its `[n]` marks (and the space before each): what is embedded and
    compared, so the vectors are of its words, not of its citations."""
    return _CITATION_WITH_SPACE.sub("", sentence).strip()


def keywords(text: str) -> list[str]:
    """Content words, first occurrence each, stop words dropped."""
    words = re.findall(r"[\w'-]+", text)
    seen: set[str] = set()
    out = []
    for w in words:
        if w.lower() in _STOP or w.lower() in seen:
            continue
        seen.add(w.lower())
        out.append(w)
    return out


def message_text(message: BaseMessage | Mapping[str, Any]) -> str:
    """The text of a chat message (a LangChain message, or an OpenAI one as a dict) whose content
    is a string or a list of content parts; parts that are not text are left out."""
    content = message.get("content") if isinstance(message, Mapping) else message.content
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [p if isinstance(p, str) else _text_part(p) for p in content]
    return " ".join(part for part in parts if part)


def _text_part(part: object) -> str:
    if isinstance(part, dict) and part.get("type", "text") == "text":
        return str(part.get("text", ""))
    return ""


def format_evidence(evidence: list[Evidence]) -> str:
    """Numbered evidence blocks as the answer writer and the judges see them: `[n]` then where
    the chunk sits (title > headings), then its text, fenced (`agent.injection`): no document
    text can close the evidence block or pass for another block's header."""
    blocks = []
    for n, e in enumerate(evidence, 1):
        where = " > ".join(p for p in (e["title"], *e["heading_path"]) if p)
        blocks.append(f"[{n}] {fenced(where).replace(chr(10), ' ')}\n{fenced(e['text'].strip())}")
    return "\n\n".join(blocks)


def citations_for(answer: str, evidence: list[Evidence]) -> list[Citation]:
    out: list[Citation] = []
    for n in cited_numbers(answer, len(evidence)):
        e = evidence[n - 1]
        out.append(
            {
                "n": n,
                "id": e["id"],
                "doc_id": e["doc_id"],
                "title": e["title"],
                "source": e["source"],
                "chunk_index": e["chunk_index"],
                "collection": e["collection"],
            }
        )
    return out


def before_end(sentence: str, addition: str, end: str = "") -> str:
    """`sentence` with `addition` before its closing . ! or ? ("Paris is big [1]."); `end` closes
    a sentence that has none."""
    stripped = sentence.rstrip()
    closing = stripped[-1] if stripped and stripped[-1] in ".!?" else ""
    body = stripped[:-1] if closing else stripped
    return f"{body} {addition}{closing or end}"


def extractive_answer(evidence: list[Evidence], question: str) -> str:
    """Budget-out or model-down answer: the opening sentence of the top chunks, cited."""
    if not evidence:
        return NO_EVIDENCE
    lines = [
        f"{split_sentences(e['text'])[0] if split_sentences(e['text']) else e['text'][:200]} [{n}]"
        for n, e in enumerate(evidence[:2], 1)
    ]
    return "From the documents: " + " ".join(lines)


def verdict_problems(verdict: Mapping[str, Any] | None) -> list[str]:
    """What a verdict found wrong, one line each, as the answer writer is told on its retry:
    the sentence and the fact the evidence does not hold, or the part left unanswered."""
    if not verdict:
        return []
    lines = []
    for s in verdict.get("sentences") or []:
        if s.get("supported"):
            continue
        sentence = without_citations(s["sentence"])
        details = [p["detail"] for p in s.get("problems") or []]
        if details:
            lines.append(f'- "{sentence}": ' + "; ".join(details))
        elif not s.get("cited"):
            lines.append(f'- "{sentence}": cites no evidence block')
        else:
            lines.append(f'- "{sentence}": the cited evidence does not say this')
    for part in verdict.get("parts") or []:
        if not part.get("covered") and part.get("kind") == "focus":
            lines.append(
                f"- The answer stops at what the question goes through: it does not say what "
                f'"{part["part"]}" asks'
            )
        elif not part.get("covered"):
            lines.append(
                f'- The question also asks "{part["part"]}": the answer does not address it'
            )
    if not lines and not verdict.get("answers_question", True):
        lines.append("- The answer does not answer the question")
    return lines
