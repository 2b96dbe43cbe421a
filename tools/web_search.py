"""Optional web search, the corrective-RAG fallback when a team's documents have nothing.

Off unless `AGENTRAG_WEB_SEARCH_URL` is set: agentrag never reaches the internet on its own.
It speaks the SearxNG JSON API (`GET {url}/search?q=...&format=json`), which SearxNG serves and
which is easy to put in front of any other search provider.
"""

from __future__ import annotations

from typing import Any

import httpx

from agent.errors import AgentragError


class WebSearchError(AgentragError):
    """The configured web search endpoint failed."""


class WebSearch:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    async def asearch(self, query: str, k: int = 5) -> list[dict[str, str]]:
        """Results as {title, url, text}; an unreachable or broken endpoint raises."""
        try:
            response = await self._client.get("/search", params={"q": query, "format": "json"})
        except httpx.HTTPError as exc:
            raise WebSearchError(f"Cannot reach web search at {self.base_url}: {exc}") from exc
        if response.status_code != 200:
            raise WebSearchError(
                f"Web search at {self.base_url} answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        try:
            results: list[dict[str, Any]] = response.json().get("results") or []
        except ValueError as exc:
            raise WebSearchError(f"Web search at {self.base_url} returned invalid JSON") from exc
        out = []
        for item in results:
            text = str(item.get("content") or "").strip()
            url = str(item.get("url") or "").strip()
            if text and url:
                out.append({"title": str(item.get("title") or url), "url": url, "text": text})
            if len(out) >= k:
                break
        return out

    async def aclose(self) -> None:
        await self._client.aclose()
