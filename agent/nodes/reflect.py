"""reflect_answer: is every sentence supported by the evidence it cites, and is every part of
the question answered? If not, regenerate once within budget, telling the model exactly what
failed; after that, the answer is made honest. The verdicts travel with the answer.

Support is measured without an LLM. A sentence is supported when it is close in meaning to a
sentence of a chunk it cites (embedding similarity) or most of its content words appear there
(lexical support), and every fact a reader would check holds there: its numbers (with units),
names, negation and comparisons (`agent.claims`). A claim that holds in another chunk of the
evidence than the one cited is a wrong citation, corrected in place. Each part of the question
(`agent.coverage`) must be addressed by a supported sentence; of a plain choice ("Which writer
was from England, A or B?"), every option, or one option with what the question chooses it by.
At effort `high` an LLM judge also reads the answer against the evidence.

After the last attempt no unsupported claim stays presented as fact: a sentence with a wrong
number, name, negation or comparison is removed, any other unsupported sentence is marked
"(unverified)", an answer left with nothing is replaced by quotes of the evidence, and a part
the answer does not address is said to have no supported answer (flag `partial`).
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from langchain_core.messages import AIMessage, SystemMessage
from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.budget import exhausted, flag
from agent.chat_models import ChatModels
from agent.claims import check_claims, supporting_texts
from agent.context import AgentContext
from agent.coverage import (
    FOCUS_SIMILARITY,
    Part,
    addressed,
    choice_items,
    misses_focus,
    question_focus,
    question_parts,
    unchosen,
    unreached,
)
from agent.edges import after_reflect
from agent.nodes.common import step
from agent.prompt_source import PromptSource
from agent.state import AgentState, ClaimIssue, Evidence, PartVerdict, SentenceVerdict, Verdict
from agent.text import (
    CITATION,
    NO_EVIDENCE,
    before_end,
    citations_for,
    cited_numbers,
    extractive_answer,
    format_evidence,
    keywords,
    message_text,
    split_sentences,
    without_citations,
)
from agent.usage import UsageMeter
from agent.vectors import Vectors
from retrievers.similarity import cosine, cosine_matrix, mean_vector

LEXICAL_SUPPORT = 0.7
MIN_WORDS = 4
ANSWERS_SIMILARITY = 0.2
MAX_ATTEMPTS = 2
PIECES_PER_SENTENCE = 3
_REFUSAL = re.compile(
    r"(could not find|do(es)? not (say|contain|mention)|no information|"
    r"not in the documents|I don't know)",
    re.IGNORECASE,
)


def lexical_support(sentence: str, texts: list[str]) -> float:
    words = [w.lower() for w in keywords(sentence)]
    if not words:
        return 1.0
    haystack = " ".join(texts).lower()
    return sum(1 for w in words if w in haystack) / len(words)


async def judge_sentences(
    answer: str,
    evidence: list[Evidence],
    ctx: AgentContext,
    vectors: Vectors,
    given: list[str] | None = None,
) -> tuple[list[SentenceVerdict], list[float]]:
    """Chunk-level similarity and word overlap first (stored vectors: cheap); the answer's
    direction, for `answers_question`, is the mean of its sentences'. Only sentences
    still unsupported, and whose verdict a closer look can still change (cited, not short), are
    compared with the sentences of the chunks they cite that share most words with them. Then
    every sentence's facts are checked against what it cites (`given`: texts whose facts count
    as known, the question)."""
    sentences = split_sentences(answer) or [answer]
    texts = [CITATION.sub("", s).strip() for s in sentences]
    # the very strings `attach_citations` embedded before it added the citations, and those
    # `SentencePrefetch` embedded while the answer streamed: found cached
    plain = [without_citations(s) for s in sentences]
    sent_vecs = await vectors.embed(plain)
    answer_vec = mean_vector(sent_vecs)
    chunk_vecs = await vectors.chunk_vectors([(e["id"], e["text"]) for e in evidence])
    scopes: list[set[int]] = []
    semantic: list[float] = []
    lexical: list[float] = []
    to_chunks = cosine_matrix(sent_vecs, chunk_vecs)
    for sentence, text, sims in zip(sentences, texts, to_chunks, strict=True):
        scope = set(cited_numbers(sentence, len(evidence))) or set(range(1, len(evidence) + 1))
        scopes.append(scope)
        semantic.append(max(sims[n - 1] for n in scope))
        lexical.append(lexical_support(text, [evidence[n - 1]["text"] for n in scope]))
    unresolved = [
        i
        for i in range(len(sentences))
        if semantic[i] < ctx.support_threshold
        and lexical[i] < LEXICAL_SUPPORT
        and _verdict_open(sentences[i], texts[i], len(evidence))
    ]
    if unresolved:
        chosen = {i: _closest_pieces(texts[i], scopes[i], evidence) for i in unresolved}
        pieces = list(dict.fromkeys(p for i in unresolved for p in chosen[i]))
        piece_vecs = dict(zip(pieces, await vectors.embed(pieces), strict=True))
        for i in unresolved:
            if chosen[i]:
                sims = cosine_matrix([sent_vecs[i]], [piece_vecs[p] for p in chosen[i]])[0]
                semantic[i] = max(semantic[i], *sims)
    out: list[SentenceVerdict] = []
    known = list(given or [])
    for i, (sentence, text) in enumerate(zip(sentences, texts, strict=True)):
        cited = cited_numbers(sentence, len(evidence))
        short = _is_short(text)
        close = short or semantic[i] >= ctx.support_threshold or lexical[i] >= LEXICAL_SUPPORT
        verdict: SentenceVerdict = {
            "sentence": sentence,
            "cited": cited,
            "support": round(max(semantic[i], lexical[i]), 3),
            "supported": bool(close and (cited or short)),
        }
        cited_texts = [evidence[n - 1]["text"] for n in sorted(scopes[i])]
        problems = [_issue(p) for p in check_claims(text, cited_texts, known)]
        if problems and cited:
            # the claim may hold in another chunk: then the citation is wrong, not the claim.
            # Only chunks that hold the failing claims as written are read in full.
            claims = [p["claim"].lower() for p in problems]
            others = [
                n
                for n, e in enumerate(evidence, 1)
                if n not in cited and all(c in e["text"].lower() for c in claims)
            ]
            found = supporting_texts(text, [evidence[n - 1]["text"] for n in others], known)
            elsewhere = [others[k] for k in found]
            if elsewhere:
                verdict["recited"] = elsewhere[0]
                problems = []
        if problems:
            verdict["problems"] = problems
            verdict["supported"] = False
        out.append(verdict)
    return out, answer_vec


def _issue(problem: Any) -> ClaimIssue:
    return {"kind": problem.kind, "claim": problem.claim, "detail": problem.detail}


def _closest_pieces(text: str, scope: set[int], evidence: list[Evidence]) -> list[str]:
    """The sentences of the cited chunks that share most content words with `text`, at most
    `PIECES_PER_SENTENCE`, none that shares no word. Each is an encode (4-7 ms on a 2-core
    CPU); a sentence that supports another in meaning shares its names and numbers. Measured
    on 343 unresolved answer sentences (HotpotQA dev, scripted and bundled-model answers):
    1,241 chunk sentences encoded before, 457 after, the same verdict for every sentence; with
    only the best one, 2 verdicts changed."""
    words = [w.lower() for w in keywords(text)]
    pieces = [p for n in sorted(scope) for p in split_sentences(evidence[n - 1]["text"])[:30]]
    overlap = {p: sum(1 for w in words if w in p.lower()) for p in dict.fromkeys(pieces)}
    ranked = sorted((p for p, k in overlap.items() if k), key=lambda p: -overlap[p])
    return ranked[:PIECES_PER_SENTENCE]


def _is_short(text: str) -> bool:
    """Too few words to check: accepted as supported (a connective, "Yes.", a name)."""
    return len(text.split()) < MIN_WORDS


def _verdict_open(sentence: str, text: str, evidence_count: int) -> bool:
    """Whether more similarity can change this sentence's verdict: a short sentence is supported
    and an uncited one unsupported whatever its similarity."""
    return not _is_short(text) and bool(cited_numbers(sentence, evidence_count))


async def reflect_answer(
    state: AgentState,
    runtime: Runtime[AgentContext],
    *,
    models: ChatModels,
    prompts: PromptSource,
    vectors: Vectors,
    usage: UsageMeter,
) -> Command[Literal["generate_answer", "__end__"]]:
    """Records the verdict; its action (`regenerate` or not) is what `after_reflect` follows.
    A verdict that ends the turn also adds the answer to the conversation."""
    started = time.perf_counter()
    ctx = runtime.context
    turn = state["turn"]
    answer = state.get("answer", "")
    evidence = list(state.get("evidence") or [])
    route = state.get("route") or {"kind": "direct"}
    update: dict[str, Any] = {}
    if route["kind"] == "direct" or not evidence or answer == NO_EVIDENCE:
        verdict: Verdict = {
            "grounded": True,
            "answers_question": route["kind"] == "direct",
            "sentences": [],
            "method": "similarity",
            "action": "accept",
        }
        return _route(_finish(state, update, verdict, started, "nothing to check"))

    sentences, a_vec = await judge_sentences(
        answer, evidence, ctx, vectors, given=[state["question"], state["query"]]
    )
    answer, recited = _recite(answer, sentences)
    if recited:
        update["answer"] = answer
        update["citations"] = citations_for(answer, evidence)
        update["flags"] = [
            flag(turn, "citation_corrected", f"{recited} sentence(s) cited the wrong chunk")
        ]
    grounded = bool(sentences) and all(s["supported"] for s in sentences)
    q_vec = await vectors.embed_query(state["query"])
    answers = not _REFUSAL.search(answer) and cosine(q_vec, a_vec) >= ANSWERS_SIMILARITY
    parts = question_parts(state["query"], state.get("plan"))
    supported = [without_citations(s["sentence"]) for s in sentences if s["supported"]]
    missing = [p for p in parts if not addressed(p, supported)]
    if not parts and (options := choice_items(state["query"])):
        parts, missing = options, unchosen(state["query"], options, supported)
    cited = {n for s in sentences if s["supported"] for n in s["cited"]}
    left_out = [e for n, e in enumerate(evidence, 1) if n not in cited]
    if not parts and (stopped := await _stops_short(state["query"], supported, vectors, left_out)):
        parts = missing = [stopped]
    part_verdicts: list[PartVerdict] = [
        {"part": p.text, "covered": p not in missing, "kind": p.kind} for p in parts
    ]
    answers = answers and not missing
    method: Literal["similarity", "llm"] = "similarity"
    if ctx.effort == "high" and not exhausted(state, ctx, llm_calls=1):
        verdict_llm, entry = await _llm_judge(state, answer, evidence, ctx, models, prompts, usage)
        if entry is not None:
            update["usage"] = [entry]
            grounded, method = grounded and verdict_llm, "llm"
    attempts = state.get("attempts", 1)
    if grounded and answers:
        action: Literal["accept", "regenerate", "give_up"] = "accept"
    elif attempts < MAX_ATTEMPTS and not exhausted(state, ctx, llm_calls=1):
        action = "regenerate"
    else:
        action = "give_up"
    verdict = {
        "grounded": grounded,
        "answers_question": answers,
        "sentences": sentences,
        "method": method,
        "action": action,
    }
    if part_verdicts:
        verdict["parts"] = part_verdicts
    if action == "regenerate":
        update["verdict"] = verdict
        update["steps"] = [step(turn, "reflect_answer", started, "unsupported: regenerate")]
        return _route(update)
    if action == "give_up":
        problems = [] if grounded else ["ungrounded"]
        problems += [] if answers else ["unanswered"]
        budget = exhausted(state, ctx, llm_calls=1)
        flags = [flag(turn, p, f"after {attempts} attempt(s)") for p in problems]
        if budget and attempts < MAX_ATTEMPTS:
            flags.append(flag(turn, "incomplete", f"{budget} reached in reflect_answer"))
        honest, notes = honest_answer(answer, sentences, missing, evidence, state["question"])
        if honest != answer:
            verdict["revised"] = True
            update["answer"] = honest
            update["citations"] = citations_for(honest, evidence)
        flags += [flag(turn, name, reason) for name, reason in notes]
        update["flags"] = [*update.get("flags", []), *flags]
    return _route(_finish(state, update, verdict, started, action))


async def _stops_short(
    question: str,
    supported: list[str],
    vectors: Vectors,
    left_out: list[Evidence] | None = None,
) -> Part | None:
    """The question as a part left unanswered when the answer stops at what the question goes
    through (`agent.coverage.misses_focus`) and either never comes to the question's other
    names (`unreached`) or no sentence is close in meaning to what it asks of that thing:
    not `FOCUS_SIMILARITY`, nor as close as a chunk of the evidence the answer does not cite
    (`left_out`: what the answer could have said of it). The focus is encoded only then; the
    sentences and chunks come from the caches."""
    focus = question_focus(question)
    unmet = None if focus is None else misses_focus(question, focus, supported)
    if focus is None or unmet is None:
        return None
    if not unreached(question, focus, supported):
        focus_vec, *sentence_vecs = await vectors.embed([unmet.text, *supported])
        bar = FOCUS_SIMILARITY
        if left_out:
            chunks = await vectors.chunk_vectors([(e["id"], e["text"]) for e in left_out])
            bar = max(bar, *cosine_matrix([focus_vec], chunks)[0])
        if max(cosine_matrix([focus_vec], sentence_vecs)[0]) >= bar:
            return None
    return Part(text=question.strip(), kind="focus", words=unmet.words)


def _recite(answer: str, sentences: list[SentenceVerdict]) -> tuple[str, int]:
    """The answer with each mis-cited sentence citing the chunk its claim holds in."""
    changed = 0
    for verdict in sentences:
        n = verdict.get("recited")
        if n is None or verdict["sentence"] not in answer:
            continue
        fixed = before_end(without_citations(verdict["sentence"]), f"[{n}]")
        answer = answer.replace(verdict["sentence"], fixed, 1)
        verdict["sentence"], verdict["cited"] = fixed, [n]
        changed += 1
    return answer, changed


def honest_answer(
    answer: str,
    sentences: list[SentenceVerdict],
    missing: list[Part],
    evidence: list[Evidence],
    question: str,
) -> tuple[str, list[tuple[str, str]]]:
    """The answer as it may be shown after the last attempt, and the flags that say what was
    done: sentences with a wrong fact removed, other unsupported ones marked, the evidence
    quoted instead when nothing is left, missing parts said to be missing."""
    kept: list[str] = []
    removed: list[str] = []
    marked = 0
    for verdict in sentences:
        sentence = verdict["sentence"]
        if verdict["supported"]:
            kept.append(sentence)
        elif verdict.get("problems"):
            removed += [p["claim"] for p in verdict.get("problems", [])]
        else:
            kept.append(before_end(sentence, "(unverified)", end="."))
            marked += 1
    notes: list[tuple[str, str]] = []
    if removed:
        # a model that repeats itself repeats its wrong claims: each is named once
        named = list(dict.fromkeys(removed))
        more = f" and {len(named) - 20} more" if len(named) > 20 else ""
        notes.append(
            ("claims_removed", "not in the cited evidence: " + "; ".join(named[:20]) + more)
        )
    if marked:
        notes.append(("unverified", f"{marked} sentence(s) marked (unverified)"))
    if not removed and not marked and not missing:
        return answer, notes
    text = " ".join(kept) if any(v["supported"] for v in sentences) or marked else ""
    if not text.strip():
        text = quoted_answer(evidence, [p.text for p in missing] or [question]) or (
            extractive_answer(evidence, question)
        )
        notes.append(("quoted_evidence", "no claim of the answer held: the evidence is quoted"))
        quoted = [without_citations(s) for s in split_sentences(text)]
        missing = [p for p in missing if not addressed(p, quoted)]
    if missing:
        text += " " + " ".join(_missing_sentence(p) for p in missing)
        notes.append(("partial", "not answered: " + "; ".join(p.text for p in missing)))
    return text.strip(), notes


def quoted_answer(evidence: list[Evidence], asks: list[str]) -> str:
    """For each of `asks` (the question, or its parts), the evidence sentence sharing most of
    its content words, quoted and cited; empty when none shares any."""
    quotes: list[str] = []
    for ask in asks:
        words = {w.lower() for w in keywords(ask)}
        best, best_n, best_shared = "", 0, 0
        for n, e in enumerate(evidence, 1):
            for sentence in split_sentences(e["text"])[:30]:
                shared = len(words & {w.lower() for w in keywords(sentence)})
                if shared > best_shared:
                    best, best_n, best_shared = sentence, n, shared
        quote = f"{best.rstrip()} [{best_n}]"
        if best and quote not in quotes:
            quotes.append(quote)
    return "From the documents: " + " ".join(quotes) if quotes else ""


def _missing_sentence(part: Part) -> str:
    """Says what the answer leaves out, not what the documents lack: the part may be in the
    documents and only the answer missed it."""
    if part.kind == "item":
        return f"No supported answer was found about {part.text}."
    end = "" if part.text.endswith(("?", ".", "!")) else "."
    return f"No supported answer was found to: {part.text}{end}"


def _route(update: dict[str, Any]) -> Command[Literal["generate_answer", "__end__"]]:
    return Command(update=update, goto=after_reflect(update))


def _finish(
    state: AgentState, update: dict[str, Any], verdict: Verdict, started: float, note: str
) -> dict[str, Any]:
    update["verdict"] = verdict
    update["messages"] = [
        AIMessage(
            content=update.get("answer", state.get("answer", "")),
            additional_kwargs={"citations": update.get("citations", state.get("citations") or [])},
        )
    ]
    update["steps"] = [step(state["turn"], "reflect_answer", started, note)]
    return update


async def _llm_judge(
    state: AgentState,
    answer: str,
    evidence: list[Evidence],
    ctx: AgentContext,
    models: ChatModels,
    prompts: PromptSource,
    usage: UsageMeter,
) -> tuple[bool, Any]:
    template = prompts.get("check_answer")
    messages = [
        SystemMessage(
            template.format(
                evidence=format_evidence(evidence), question=state["question"], answer=answer
            )
        )
    ]
    started = time.perf_counter()
    try:
        reply = await (await models.aget("judge", ctx)).ainvoke(
            messages, config=template.call_config()
        )
    except Exception:
        return True, None
    ok = message_text(reply).strip().lower().startswith("yes")
    return ok, await usage.aentry(
        state["turn"], "reflect_answer", "judge", messages, reply, started
    )
