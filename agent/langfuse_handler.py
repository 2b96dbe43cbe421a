"""Langfuse's LangChain callback handler, fitted to agentrag's turns. Imported only when
tracing is on.

Six additions to the stock handler:
- a node's span records the state it reads and writes with each chunk cut to its id, title and
  scores (`compact_state`), not the whole state with every chunk's text, twice per node, and
  its input without the turn's accounting so far;
- it runs inline on the event loop: the stock one is synchronous, and LangChain hops to a
  worker thread for every callback of such a handler (dozens per turn);
- a generation links the prompt its call was made with: nodes pass the prompt in the call's
  metadata (`langfuse_prompt`), the stock handler only reads it from an enclosing chain;
- token usage is counted with the bundled tokenizer when the model reports none (a server that
  streams without usage), and marked as counted: in a worker thread, the generation ending
  there with the time the call ended;
- at the root of a run with no turn of agentrag's around it (`langgraph dev`), the thread id
  becomes the session id and the tenant the user id;
- there too, the run's end posts the turn's scores (`finish_root`), as agentrag's own turns do.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any
from uuid import UUID

from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langfuse.langchain import CallbackHandler
from langfuse.langchain.CallbackHandler import _parse_usage
from langgraph.types import Command, Send

TokenCount = Callable[[Sequence[str]], int]
RootFinish = Callable[[str, Mapping[str, Any]], None]
EVIDENCE_FIELDS = ("id", "title", "collection", "relevance", "retrieval_score", "rank")
"""What a node's span shows of each chunk in the state it reads and writes; the chunks' texts
are in the retriever observations that found them and in the prompts that used them."""


INPUT_SKIPPED = frozenset({"steps", "usage"})
"""State a node's input span leaves out: the turn's accounting so far (each node's output shows
its own step and usage), read by every node and growing with each."""


def compact_state(value: Any, depth: int = 0, skip: frozenset[str] = frozenset()) -> Any:
    """A node's input or output as its span records it: the graph state with every chunk cut
    to `EVIDENCE_FIELDS` (a turn's state holds dozens of chunks, and every node reads all of
    it: recorded in full, they would cost each turn more than its retrieval), without the
    top-level keys in `skip`, and a `Command` as its update and destination."""
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        if "text" in value and "doc_id" in value and "id" in value:
            return {k: value[k] for k in EVIDENCE_FIELDS if k in value}
        return {k: compact_state(v, depth + 1) for k, v in value.items() if k not in skip}
    if isinstance(value, list | tuple):
        return [compact_state(v, depth + 1) for v in value]
    if isinstance(value, Command):
        return {
            "update": compact_state(value.update, depth + 1),
            "goto": compact_state(value.goto, depth + 1),
        }
    if isinstance(value, Send):
        return {"send": value.node, "arg": compact_state(value.arg, depth + 1)}
    return value


@cache
def _counting_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentrag-trace-usage")


def counted_generations_done(timeout_s: float) -> bool:
    """Wait for the generations still being counted to end (before a flush sends them)."""
    try:
        _counting_thread().submit(lambda: None).result(timeout=timeout_s)
    except TimeoutError:
        return False
    return True


class _CountedGeneration:
    """Stands in for a generation whose model reported no usage while the stock handler ends
    it: the update it makes is kept, and the end happens in a worker thread once the tokens
    are counted."""

    def __init__(
        self, generation: Any, count: TokenCount, prompt: list[str], reply: list[str]
    ) -> None:
        self._generation = generation
        self._count = count
        self._prompt = prompt
        self._reply = reply
        self._update: dict[str, Any] = {}

    def update(self, **fields: Any) -> _CountedGeneration:
        self._update.update(fields)
        return self

    def end(self, end_time: int | None = None) -> None:
        """Finishes in the caller's context: masking reads the turn's tenant from it."""
        ended = end_time or time.time_ns()
        _counting_thread().submit(contextvars.copy_context().run, self._finish, ended)

    def _finish(self, ended: int) -> None:
        fields = dict(self._update)
        try:
            tokens_in, tokens_out = self._count(self._prompt), self._count(self._reply)
            fields["usage_details"] = {
                "input": tokens_in,
                "output": tokens_out,
                "total": tokens_in + tokens_out,
            }
            fields["metadata"] = {"usage_source": "counted with the bundled tokenizer"}
        finally:
            self._generation.update(**fields).end(end_time=ended)


class TurnCallbackHandler(CallbackHandler):
    run_inline = True

    def __init__(
        self,
        *,
        public_key: str | None,
        count_tokens: TokenCount | None,
        finish_root: RootFinish | None = None,
    ) -> None:
        """`finish_root`: this handler's runs are turns of their own (no trace of agentrag's
        around them): fill in their trace attributes, and call it with the trace id and the
        run's output when one ends."""
        super().__init__(public_key=public_key)
        self._count_tokens = count_tokens
        self._finish_root = finish_root
        self._prompts: dict[UUID, list[str]] = {}

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        inputs = compact_state(inputs, skip=INPUT_SKIPPED if parent_run_id else frozenset())
        if parent_run_id is None and metadata is not None and self._finish_root is not None:
            metadata = dict(metadata)
            thread = metadata.get("thread_id")
            if isinstance(thread, str) and "langfuse_session_id" not in metadata:
                metadata["langfuse_session_id"] = thread
            user = metadata.get("user_id") or metadata.get("tenant")
            if isinstance(user, str) and "langfuse_user_id" not in metadata:
                metadata["langfuse_user_id"] = user
        return super().on_chain_start(
            serialized,
            inputs,
            run_id=run_id,
            parent_run_id=parent_run_id,
            tags=tags,
            metadata=metadata,
            **kwargs,
        )

    def on_chain_end(
        self,
        outputs: dict[str, Any],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        root = self._runs.get(run_id) if parent_run_id is None else None
        if parent_run_id is not None:
            outputs = compact_state(outputs)
            if "inputs" in kwargs:
                kwargs["inputs"] = compact_state(kwargs["inputs"])
        result = super().on_chain_end(outputs, run_id=run_id, parent_run_id=parent_run_id, **kwargs)
        if root is not None and self._finish_root is not None and isinstance(outputs, Mapping):
            self._finish_root(root.trace_id, outputs)
        return result

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        prompt = (metadata or {}).get("langfuse_prompt")
        if prompt is not None and parent_run_id is not None:
            self._prompt_to_parent_run_map[parent_run_id] = prompt
        self._prompts[run_id] = [str(m.content) for batch in messages for m in batch]
        return super().on_chat_model_start(
            serialized,
            messages,
            run_id=run_id,
            parent_run_id=parent_run_id,
            tags=tags,
            metadata=metadata,
            **kwargs,
        )

    def on_llm_end(
        self,
        response: LLMResult,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        prompt = self._prompts.pop(run_id, None)
        generation = self._runs.get(run_id)
        if (
            prompt is not None
            and generation is not None
            and self._count_tokens is not None
            and _parse_usage(response) is None
        ):
            reply = [g.text for batch in response.generations for g in batch]
            self._runs[run_id] = _CountedGeneration(  # type: ignore[assignment]
                generation, self._count_tokens, prompt, reply
            )
        return super().on_llm_end(response, run_id=run_id, parent_run_id=parent_run_id, **kwargs)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> Any:
        self._prompts.pop(run_id, None)
        return super().on_llm_error(error, run_id=run_id, parent_run_id=parent_run_id, **kwargs)
