"""The chat models each role uses (generator, planner, judge), made once per model name.

A run may name a different model per role in its context; the first use of a model may start
the bundled LLM server, so it is made off the event loop.
"""

from __future__ import annotations

import asyncio
import threading

from langchain_core.language_models import BaseChatModel

from agent.context import AgentContext
from agent.llm import Role, make_chat_model, supports_tools
from agent.settings import Settings

ROLE_FIELD: dict[Role, str] = {
    "generator": "generator_model",
    "planner": "planner_model",
    "judge": "judge_model",
}
"""The context field that names each role's model."""


class ChatModels:
    """`models` replaces what settings would make: by role, or `default` for every role (tests
    and benchmarks script a model's exact words this way)."""

    def __init__(
        self,
        settings: Settings,
        models: dict[str, BaseChatModel] | None = None,
        tools: bool | None = None,
    ) -> None:
        self._settings = settings
        self._given = dict(models or {})
        self._tools = tools
        self._made: dict[tuple[Role, str | None], BaseChatModel] = {}
        self._lock = threading.Lock()

    @property
    def supports_tools(self) -> bool:
        """Whether to ask for tool calls and structured output (see `agent.llm.supports_tools`)."""
        return supports_tools(self._settings) if self._tools is None else self._tools

    def get(self, role: Role, ctx: AgentContext) -> BaseChatModel:
        ready = self._ready(role, ctx)
        if ready is not None:
            return ready
        name: str | None = getattr(ctx, ROLE_FIELD[role])
        with self._lock:
            if (role, name) not in self._made:
                self._made[(role, name)] = make_chat_model(self._settings, role, model=name)
            return self._made[(role, name)]

    async def aget(self, role: Role, ctx: AgentContext) -> BaseChatModel:
        """`get` in a worker thread when a model has to be made; one made before comes back
        without a thread hop."""
        ready = self._ready(role, ctx)
        if ready is not None:
            return ready
        return await asyncio.to_thread(self.get, role, ctx)

    def _ready(self, role: Role, ctx: AgentContext) -> BaseChatModel | None:
        given = self._given.get(role) or self._given.get("default")
        if given is not None:
            return given
        with self._lock:
            return self._made.get((role, getattr(ctx, ROLE_FIELD[role])))
