"""Langfuse's LangChain callback handler, fitted to agentrag's turns. Imported only when
tracing is on.

Five additions to the stock handler:
- it runs inline on the event loop: the stock one is synchronous, and LangChain hops to a
  worker thread for every callback of such a handler (dozens per turn);
- a generation links the prompt its call was made with: nodes pass the prompt in the call's
  metadata (`langfuse_prompt`), the stock handler only reads it from an enclosing chain;
- token usage is counted with the bundled tokenizer when the model reports none (a server that
  streams without usage), and marked as counted;
- at the root of a run with no turn of agentrag's around it (`langgraph dev`), the thread id
  becomes the session id and the tenant the user id;
- there too, the run's end posts the turn's scores (`finish_root`), as agentrag's own turns do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langfuse.langchain import CallbackHandler
from langfuse.langchain.CallbackHandler import _parse_usage

TokenCount = Callable[[Sequence[str]], int]
RootFinish = Callable[[str, Mapping[str, Any]], None]


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
        if prompt is not None and self._count_tokens and _parse_usage(response) is None:
            response = self._with_counted_usage(response, prompt, run_id)
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

    def _with_counted_usage(
        self, response: LLMResult, prompt: list[str], run_id: UUID
    ) -> LLMResult:
        assert self._count_tokens is not None
        try:
            reply = [g.text for batch in response.generations for g in batch]
            tokens_in = self._count_tokens(prompt)
            tokens_out = self._count_tokens(reply)
        except Exception:
            return response
        generation = self._runs.get(run_id)
        if generation is not None:
            generation.update(metadata={"usage_source": "counted with the bundled tokenizer"})
        usage = {
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        }
        return response.model_copy(
            update={"llm_output": {**(response.llm_output or {}), "token_usage": usage}}
        )
