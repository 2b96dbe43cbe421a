"""Where nodes get their prompts: the local prompt files, or Langfuse prompt management.

With `langfuse_prompt_label` set (and tracing on), a prompt is the version Langfuse holds under
that label, so a team edits and rolls back prompts in Langfuse and sees each generation linked
to the version it used. A turn never waits on Langfuse for one: the local file serves until
the Langfuse version has arrived, fetched in the background and refetched after
`langfuse_prompt_ttl_s`, and whenever Langfuse has no such prompt. While Langfuse cannot be
reached, the version fetched last stays in use (the local file, if none ever arrived).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait

from agent.settings import Settings
from agent.tracing import Tracing
from prompts.loader import Prompt, available_prompts, load_prompt

log = logging.getLogger("agentrag.prompts")

FETCH_TIMEOUT_S = 5
"""Longest a background fetch waits on Langfuse."""


class PromptSource:
    def __init__(self, settings: Settings, tracing: Tracing) -> None:
        self.label = settings.langfuse_prompt_label if tracing.enabled else None
        self._ttl = settings.langfuse_prompt_ttl_s
        self._tracing = tracing
        self._fetched: dict[str, tuple[Prompt | None, float]] = {}
        """Name -> (the Langfuse version, or None when there is none; when it was asked)."""
        self._pending: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def get(self, name: str) -> Prompt:
        """The prompt to use now: Langfuse's when it has arrived, else the local file. A stale
        or missing entry is fetched again in the background."""
        local = load_prompt(name)
        if self.label is None:
            return local
        now = time.monotonic()
        with self._lock:
            fetched, at = self._fetched.get(name, (None, -float("inf")))
            stale = now - at >= self._ttl
            if stale and name not in self._pending:
                self._pending[name] = self._executor().submit(self._fetch, name)
        return fetched or local

    def prefetch(self) -> None:
        """Ask for every prompt now (a server at start), so the first turns already use
        Langfuse's versions."""
        if self.label is not None:
            for name in available_prompts():
                self.get(name)

    def settle(self, timeout_s: float | None = None) -> bool:
        """Wait for the fetches under way (a command about to run turns it wants consistent);
        True when none is left."""
        with self._lock:
            pending = list(self._pending.values())
        return not wait(pending, timeout=timeout_s).not_done

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="agentrag-prompts")
        return self._pool

    def _fetch(self, name: str) -> None:
        with self._lock:
            fetched = self._fetched.get(name, (None, 0.0))[0]
        try:
            remote = self._tracing.client.get_prompt(
                name,
                label=self.label,
                type="text",
                cache_ttl_seconds=0,
                max_retries=0,
                fetch_timeout_seconds=FETCH_TIMEOUT_S,
            )
            fetched = Prompt(
                name=name,
                version=int(remote.version),
                description=load_prompt(name).description,
                text=str(remote.prompt),
                source="langfuse",
                langfuse_prompt=remote,
            )
        except Exception as exc:
            if _not_found(exc):
                fetched = None
            log.info("prompt %r label %r not taken from Langfuse: %s", name, self.label, exc)
        with self._lock:
            self._fetched[name] = (fetched, time.monotonic())
            self._pending.pop(name, None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _not_found(exc: Exception) -> bool:
    """Langfuse answered and has no such prompt (as opposed to not answering)."""
    return getattr(exc, "status_code", None) == 404
