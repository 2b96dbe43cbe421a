"""The composition root: every long-lived thing the nodes use, built once per process from
settings and handed to each node as the few named pieces it needs (see `graphs/`).

Per-request choices come from the runtime context instead. Tests and benchmarks build a
`Services` with scripted chat models, a temporary store and a shared embedding model.
"""

from __future__ import annotations

from langchain_core.language_models import BaseChatModel

from agent.catalog import Catalog
from agent.chat_models import ChatModels
from agent.prompt_source import PromptSource
from agent.settings import Settings
from agent.tracing import Tracing
from agent.usage import UsageMeter
from agent.vectors import Vectors
from retrievers.rerank import Reranker
from retrievers.stack import RetrievalStack


class Services:
    def __init__(
        self,
        settings: Settings,
        *,
        stack: RetrievalStack | None = None,
        reranker: Reranker | None = None,
        chat_models: dict[str, BaseChatModel] | None = None,
        supports_tools: bool | None = None,
    ) -> None:
        self.settings = settings
        self.stack = stack or RetrievalStack(settings)
        self.vectors = Vectors(lambda: self.stack.embeddings)
        self.models = ChatModels(settings, chat_models, supports_tools)
        self.catalog = Catalog(settings, self.stack, self.vectors, reranker)
        self.usage = UsageMeter()
        self.tracing = Tracing(settings, self.usage.count_tokens)
        self.prompts = PromptSource(settings, self.tracing)

    async def aclose(self) -> None:
        """Close the web search client (an async one) and the store: for a process done with
        its services; the server only closes the web client, the services outlive an app."""
        await self.catalog.aclose()
        self.close()

    def close(self) -> None:
        self.prompts.close()
        self.stack.close()
