"""Web search fallback, against a real HTTP server speaking the SearxNG JSON API on loopback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from agent.context import AgentContext
from agent.errors import ConfigError
from agent.settings import load_settings
from tests.agent.conftest import run_turn, scripted
from tools.web_search import WebSearch, WebSearchError

RESULT = {
    "title": "1998 FIFA World Cup final",
    "url": "https://example.org/1998-final",
    "content": "France won the 1998 FIFA World Cup, beating Brazil 3-0 in the final in Paris.",
}


class _Searx(BaseHTTPRequestHandler):
    queries: ClassVar[list[str]] = []
    fail: ClassVar[bool] = False

    def do_GET(self) -> None:
        url = urlparse(self.path)
        params = parse_qs(url.query)
        type(self).queries.append(params.get("q", [""])[0])
        if type(self).fail:
            self.send_response(503)
            self.end_headers()
            return
        assert url.path == "/search" and params.get("format") == ["json"]
        body = json.dumps({"results": [RESULT, {"title": "empty", "url": "", "content": ""}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def searx() -> Iterator[str]:
    _Searx.queries, _Searx.fail = [], False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Searx)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_client_parses_results_and_reports_failures(searx: str) -> None:
    results = await WebSearch(searx).asearch("world cup 1998", k=5)
    assert results == [{"title": RESULT["title"], "url": RESULT["url"], "text": RESULT["content"]}]
    _Searx.fail = True
    with pytest.raises(WebSearchError, match="503"):
        await WebSearch(searx).asearch("x")
    with pytest.raises(WebSearchError, match="Cannot reach"):
        await WebSearch("http://127.0.0.1:9", timeout_s=2).asearch("x")


def test_web_search_url_is_validated() -> None:
    with pytest.raises(ConfigError, match="web_search_url"):
        load_settings(web_search_url="searx.local")


async def test_poor_evidence_falls_back_to_the_web(
    make_services: Any, searx: str, agent_settings: Any
) -> None:
    services = make_services(
        default=scripted("France won the 1998 World Cup [1]."),
        settings=agent_settings.model_copy(update={"web_search_url": searx}),
    )
    ctx = AgentContext(relevance_threshold=0.9, ambiguous_threshold=0.3, max_rewrites=1)
    result = await run_turn(services, "Who won the 1998 football World Cup final?", ctx)
    assert _Searx.queries  # the web was asked only after the documents came up empty
    assert any(f["flag"] == "web_fallback" for f in result["flags"])
    web = [e for e in result["evidence"] if e["collection"] == "web"]
    assert web and web[0]["source"] == RESULT["url"]
    assert result["citations"][0]["source"] == RESULT["url"]


async def test_no_web_search_unless_configured(make_services: Any, searx: str) -> None:
    services = make_services(default=scripted("I could not find this [1]."))
    ctx = AgentContext(relevance_threshold=0.9, ambiguous_threshold=0.3, max_rewrites=1)
    result = await run_turn(services, "Who won the 1998 football World Cup final?", ctx)
    assert _Searx.queries == []
    assert all(e["collection"] != "web" for e in result["evidence"])
