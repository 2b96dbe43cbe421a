"""The web chat page, driven in a real headless Chromium against the real app under uvicorn.

Only the chat model's words are scripted (slowly, so streaming can be watched); the page, the
browser, the server, the graph and the embedded store are the real ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from agent.services import Services
from eval.langfuse_recorder import LangfuseRecorder
from server.app import create_app
from tests.conftest import traced_settings
from tests.server.conftest import KEYS, QUESTION_HOT, LiveServer, LoopingChatModel, looping

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "eval" / "results" / "web-chat.png"
TURN_TIMEOUT_MS = 60_000
FOLLOW_UP = "How hot does it get there?"

# Records every change of the newest answer, with its state and a timestamp, inside the page:
# polling from the test could miss intermediate states, a MutationObserver cannot.
RECORD_ANSWERS = """() => {
  window.answerSnapshots = [];
  const log = document.getElementById("messages");
  new MutationObserver(() => {
    const answers = log.querySelectorAll(".message.assistant .answer");
    const answer = answers[answers.length - 1];
    if (!answer) return;
    window.answerSnapshots.push(
      {n: answers.length, text: answer.textContent, state: answer.dataset.state,
       t: performance.now()});
  }).observe(log, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def _browser_unavailable(reason: str) -> None:
    if os.environ.get("AGENTRAG_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (AGENTRAG_REQUIRE_BROWSER=1 requires the browser tests to run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        _browser_unavailable(f"Chromium not found at {CHROMIUM}: install the chromium package")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_unavailable("the playwright package is not installed")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class ChatPage:
    """The page plus what it did: every URL it requested and every uncaught script error."""

    def __init__(self, browser: Browser, server: LiveServer) -> None:
        self.server = server
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page: Page = self.context.new_page()
        self.requests: list[str] = []
        self.script_errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.script_errors.append(str(e)))
        self.page.goto(server.url + "/")

    def ask(self, text: str) -> None:
        self.page.locator("#message").fill(text)
        self.page.locator("#message").press("Enter")

    def answer(self, n: int) -> Any:
        return self.page.locator(".message.assistant").nth(n)

    def wait_done(self, n: int) -> None:
        from playwright.sync_api import expect

        expect(self.answer(n).locator(".answer")).to_have_attribute(
            "data-state", "done", timeout=TURN_TIMEOUT_MS
        )

    def close(self) -> None:
        foreign = [u for u in self.requests if not u.startswith((self.server.url, "data:"))]
        assert not foreign, f"the page reached outside the server: {foreign}"
        assert not self.script_errors, f"script errors on the page: {self.script_errors}"
        self.context.close()


def serve(make_services: Callable[..., Services], model: LoopingChatModel, **update: Any) -> Any:
    services = make_services(supports_tools=False, default=model)
    settings = services.settings.model_copy(update=update) if update else services.settings
    return LiveServer(create_app(settings, services))


def test_chat_streams_cites_shows_steps_and_keeps_the_thread(
    browser: Browser, make_services: Callable[..., Services]
) -> None:
    from playwright.sync_api import expect

    model = looping("Venus has the hottest surface of any planet [1].", delay_s=0.1)
    with serve(make_services, model) as server:
        chat = ChatPage(browser, server)
        page = chat.page
        expect(page.locator("#threads-status")).to_have_text("No threads yet.")

        # 1. the answer streams in, token by token, before the run is done
        page.evaluate(RECORD_ANSWERS)
        chat.ask(QUESTION_HOT)
        expect(page.locator(".message.user").first).to_have_text(QUESTION_HOT)
        chat.wait_done(0)
        final = chat.answer(0).locator(".answer").inner_text()
        assert final == "Venus has the hottest surface of any planet [1]."
        snapshots = page.evaluate("window.answerSnapshots")
        streamed = [s for s in snapshots if s["state"] == "streaming" and s["text"]]
        lengths = sorted({len(s["text"]) for s in streamed})
        assert len(lengths) >= 5, f"the answer did not grow token by token: {streamed}"
        assert all(final.startswith(s["text"]) for s in streamed)
        assert len(streamed[0]["text"]) < len(final)
        done_at = next(s["t"] for s in snapshots if s["state"] == "done")
        assert done_at - streamed[0]["t"] > 500, "tokens only appeared when the run ended"

        # 2. [1] links to the cited chunk: title, source, chunk index, and the text on demand
        link = chat.answer(0).locator(".answer a.cite")
        expect(link).to_have_count(1)
        expect(link).to_have_text("1")
        href = link.get_attribute("href")
        assert href and href.startswith("#")
        source = page.locator(href)
        expect(source).to_have_count(1)
        expect(source.locator(".source-title")).to_have_text("The Solar System")
        expect(source).to_contain_text("solar-system.md")
        expect(source).to_contain_text("chunk 1")
        chunk = source.locator(".chunk-text")
        expect(chunk).to_be_hidden()
        link.click()
        expect(chunk).to_be_visible()
        expect(chunk).to_contain_text("465 degrees Celsius")

        # 3. the steps panel: route, retrieval with chunk titles and scores, grade, verdict, usage
        steps = chat.answer(0).locator("details.steps")
        expect(steps.locator(".step-list")).to_be_hidden()
        steps.locator("summary").click()
        expect(steps.locator('[data-kind="route"]')).to_contain_text("Route: retrieve")
        expect(steps.locator('[data-kind="route"]')).to_contain_text("astronomy")
        retrieval = steps.locator('[data-kind="retrieval"]').first
        expect(retrieval).to_contain_text(QUESTION_HOT)
        expect(retrieval.locator(".chunk-title").first).to_have_text("The Solar System")
        expect(retrieval).to_contain_text("relevance 0.")
        expect(steps.locator('[data-kind="grade"]')).to_contain_text("correct")
        expect(steps.locator('[data-kind="verdict"]')).to_contain_text("accept")
        expect(steps.locator('[data-kind="usage"]')).to_contain_text("1 LLM call")
        expect(steps.locator('[data-kind="timings"]')).to_contain_text("first token")

        # 4. the new thread is listed, and current
        threads = page.locator("#threads button.thread")
        expect(threads).to_have_count(1)
        expect(threads.first).to_contain_text(QUESTION_HOT)
        expect(threads.first).to_have_attribute("aria-current", "true")
        thread_id = threads.first.get_attribute("data-thread-id")
        assert thread_id

        # 5. a follow-up goes to the same thread
        with page.expect_request(lambda r: r.url.endswith("/v1/chat")) as sent:
            chat.ask(FOLLOW_UP)
        assert json.loads(sent.value.post_data or "{}")["thread_id"] == thread_id
        chat.wait_done(1)
        expect(chat.answer(1).locator(".answer a.cite")).to_have_count(1)
        expect(threads).to_have_count(1)
        history = httpx.get(f"{server.url}/v1/threads/{thread_id}").json()
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"] * 2
        assert history["messages"][2]["content"] == FOLLOW_UP

        steps.locator("summary").click()
        chat.answer(1).locator("details.steps summary").click()
        chat.answer(1).locator(".answer a.cite").click()
        page.set_viewport_size({"width": 1280, "height": 1300})
        page.locator("#messages").evaluate("m => { m.scrollTop = m.scrollHeight; }")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))

        # 6. a new thread starts empty; clicking the old one brings its history back
        page.locator("#new-thread").click()
        expect(page.locator(".message")).to_have_count(0)
        expect(threads.first).not_to_have_attribute("aria-current", "true")
        threads.first.click()
        expect(page.locator(".message.user")).to_have_count(2)
        expect(page.locator(".message.assistant")).to_have_count(2)
        expect(page.locator(".message.user").nth(1)).to_have_text(FOLLOW_UP)
        expect(threads.first).to_have_attribute("aria-current", "true")
        old_link = chat.answer(0).locator(".answer a.cite")
        expect(old_link).to_have_count(1)
        old_source = page.locator(old_link.get_attribute("href") or "#missing")
        expect(old_source.locator(".source-title")).to_have_text("The Solar System")

        # 7. a message over the server's limit: the error shows, the text comes back to edit
        too_long = "x" * 9000
        chat.ask(too_long)
        error = chat.answer(2).locator(".error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("message_too_long")
        expect(error).to_contain_text("the limit is 8000")
        expect(page.locator("#message")).to_have_value(too_long)
        expect(page.locator("#send")).to_be_enabled()
        chat.close()


def test_stop_button_cancels_the_run(
    browser: Browser, make_services: Callable[..., Services]
) -> None:
    from playwright.sync_api import expect

    model = looping(" ".join(["word"] * 300) + " [1].", delay_s=0.05)
    with serve(make_services, model) as server:
        chat = ChatPage(browser, server)
        page = chat.page
        chat.ask(QUESTION_HOT)
        answer = chat.answer(0).locator(".answer")
        expect(answer).to_have_attribute("data-state", "streaming", timeout=TURN_TIMEOUT_MS)
        expect(page.locator("#send")).to_be_disabled()
        page.locator("#stop").click()
        error = chat.answer(0).locator(".error")
        expect(error).to_contain_text("cancelled", timeout=10_000)
        expect(answer).to_have_attribute("data-state", "error")
        partial = answer.inner_text()
        assert 0 < len(partial) < 300 * 5, "the whole answer arrived despite Stop"
        expect(page.locator("#stop")).to_be_disabled()
        expect(page.locator("#send")).to_be_enabled()
        assert model.calls == 1
        chat.close()


def test_api_key_field_authorizes_requests(
    browser: Browser, make_services: Callable[..., Services]
) -> None:
    from playwright.sync_api import expect

    model = looping("Venus has the hottest surface of any planet [1].")
    with serve(make_services, model, api_keys=list(KEYS.values())) as server:
        chat = ChatPage(browser, server)
        page = chat.page
        banner = page.locator("#banner")
        expect(banner).to_contain_text("unauthorized")
        expect(banner).to_contain_text("Enter an API key")

        # a wrong key: the chat request's 401 shows in the answer
        page.locator("#api-key").fill("ar-wrong-key")
        page.locator("#api-key").press("Tab")
        chat.ask(QUESTION_HOT)
        expect(chat.answer(0).locator(".error")).to_contain_text("Invalid API key")

        page.locator("#api-key").fill("ar-public-key")
        page.locator("#api-key").press("Tab")
        expect(banner).to_be_hidden()
        with page.expect_request(lambda r: r.url.endswith("/v1/chat")) as sent:
            chat.ask(QUESTION_HOT)
        assert sent.value.all_headers()["authorization"] == "Bearer ar-public-key"
        chat.wait_done(1)
        expect(page.locator("#threads button.thread")).to_have_count(1)

        page.reload()
        expect(page.locator("#api-key")).to_have_value("ar-public-key")
        expect(page.locator("#threads button.thread")).to_have_count(1)
        chat.close()


def test_regenerated_answer_replaces_the_streamed_one_and_flags_show(
    browser: Browser, make_services: Callable[..., Services]
) -> None:
    from playwright.sync_api import expect

    unsupported = "Bananas are a purple fruit that grows on the moon [1]."
    supported = "Venus has the hottest surface of any planet [1]."
    # turn 1: unsupported, then supported (regenerate, accept); turn 2: unsupported twice (give up)
    replies = [unsupported, supported, unsupported, unsupported]
    model = LoopingChatModel(replies=replies, repeat=True, token_delay_s=0.05)
    with serve(make_services, model) as server:
        chat = ChatPage(browser, server)
        page = chat.page
        page.evaluate(RECORD_ANSWERS)
        chat.ask(QUESTION_HOT)
        chat.wait_done(0)
        answer = chat.answer(0)
        expect(answer.locator(".answer")).to_have_text(supported)
        texts = [s["text"] for s in page.evaluate("window.answerSnapshots") if s["n"] == 1]
        assert unsupported in texts, "the first answer never streamed"
        restart = texts.index(unsupported)
        assert "" in texts[restart:], "the rejected answer was not cleared before the new one"
        assert not any(unsupported[:20] in t and supported[:20] in t for t in texts)
        verdicts = answer.locator('[data-kind="verdict"]')
        expect(verdicts).to_have_count(2)
        expect(verdicts.nth(0)).to_contain_text("regenerate")
        expect(verdicts.nth(1)).to_contain_text("accept")
        expect(answer.locator(".flags")).to_be_hidden()

        page.locator("#new-thread").click()
        chat.ask(QUESTION_HOT)
        chat.wait_done(0)
        flags = chat.answer(0).locator(".flags .flag")
        expect(flags.first).to_be_visible()
        expect(chat.answer(0).locator(".flags")).to_contain_text("ungrounded")
        expect(chat.answer(0).locator('[data-kind="verdict"]').last).to_contain_text("give_up")
        chat.close()


def test_traced_answers_link_their_trace_and_take_thumbs(
    browser: Browser,
    make_services: Callable[..., Services],
    agent_settings: Any,
    langfuse: LangfuseRecorder,
) -> None:
    from playwright.sync_api import expect

    services = make_services(
        supports_tools=False, settings=traced_settings(agent_settings, langfuse), default=looping()
    )
    with LiveServer(create_app(services.settings, services)) as server:
        chat = ChatPage(browser, server)
        chat.ask(QUESTION_HOT)
        chat.wait_done(0)
        bar = chat.answer(0).locator(".feedback")
        trace_id = bar.get_attribute("data-trace-id")
        assert trace_id
        expect(bar.locator("a.trace-link")).to_have_attribute(
            "href", f"{langfuse.base_url}/trace/{trace_id}"
        )
        bar.locator("button[data-thumbs=down]").click()
        expect(bar.locator("button[data-thumbs=down]")).to_have_attribute("aria-pressed", "true")
        expect(bar.locator(".feedback-note")).to_contain_text("recorded")
        expect(bar.locator("button[data-thumbs=up]")).to_be_disabled()
        chat.close()
    assert langfuse.wait_for(
        lambda r: any(s["name"] == "user_feedback" for s in r.scores(trace_id))
    )
    (score,) = [s for s in langfuse.scores(trace_id) if s["name"] == "user_feedback"]
    assert score["value"] == 0.0
    services.tracing.shutdown(timeout_s=1)


def test_untraced_answers_show_no_feedback_bar(
    browser: Browser, make_services: Callable[..., Services]
) -> None:
    with serve(make_services, looping()) as server:
        chat = ChatPage(browser, server)
        chat.ask(QUESTION_HOT)
        chat.wait_done(0)
        assert chat.answer(0).locator(".feedback").count() == 0
        chat.close()
