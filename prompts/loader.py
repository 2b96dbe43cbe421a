"""Prompts live in `prompts/<name>.v<N>.md`; code asks for them by name (and version).

Files start with a `---`-fenced header of `key: value` lines (at least `description`), then the
text, which uses `{placeholders}` filled with `str.format`. Asking without a version gives the
highest one, so a new version is adopted by adding a file, and an old one stays reproducible.

A prompt may also come from Langfuse prompt management (see `agent.prompt_source`): its text
uses Langfuse's `{{placeholders}}`, and it carries the Langfuse prompt it came from, so the
generation made with it links to that prompt version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig

PROMPT_DIR = Path(__file__).resolve().parent
_NAME_RE = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.md$")
_MUSTACHE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_FORMAT_FIELD = re.compile(r"(\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\})")


class PromptNotFoundError(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    version: int
    description: str
    text: str
    source: Literal["local", "langfuse"] = "local"
    langfuse_prompt: Any = None
    """The Langfuse prompt client this came from (source `langfuse`)."""

    @property
    def id(self) -> str:
        return f"{self.name}.v{self.version}"

    def format(self, **values: object) -> str:
        if self.source == "langfuse":
            return _MUSTACHE.sub(lambda m: str(values[m[1]]) if m[1] in values else m[0], self.text)
        return self.text.format(**values)

    def call_config(self) -> RunnableConfig:
        """The run config of an LLM call made with this prompt: its generation in a trace
        records the prompt's name, version and source (and links a Langfuse prompt)."""
        metadata: dict[str, Any] = {
            "prompt_name": self.name,
            "prompt_version": self.version,
            "prompt_source": self.source,
        }
        if self.langfuse_prompt is not None:
            metadata["langfuse_prompt"] = self.langfuse_prompt
        return {"metadata": metadata}


def to_mustache(text: str) -> str:
    """A local prompt's text in Langfuse's placeholder syntax: `{name}` -> `{{name}}`, and the
    escaped braces `{{`/`}}` -> plain `{`/`}`."""

    def swap(match: re.Match[str]) -> str:
        token = match[1]
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return "{{" + match[2] + "}}"

    return _FORMAT_FIELD.sub(swap, text)


def _parse(path: Path, name: str, version: int) -> Prompt:
    raw = path.read_text(encoding="utf-8")
    header: dict[str, str] = {}
    body = raw
    if raw.startswith("---\n"):
        head, _, body = raw[4:].partition("\n---\n")
        for line in head.splitlines():
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip()
    return Prompt(name, version, header.get("description", ""), body.strip() + "\n")


@lru_cache(maxsize=64)
def load_prompt(name: str, version: int | None = None) -> Prompt:
    versions = available_prompts().get(name)
    if not versions:
        raise PromptNotFoundError(f"No prompt named {name!r} in {PROMPT_DIR}")
    chosen = max(versions) if version is None else version
    if chosen not in versions:
        raise PromptNotFoundError(f"Prompt {name!r} has versions {sorted(versions)}, not {chosen}")
    return _parse(PROMPT_DIR / f"{name}.v{chosen}.md", name, chosen)


@lru_cache(maxsize=1)
def available_prompts() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for path in PROMPT_DIR.glob("*.md"):
        match = _NAME_RE.match(path.name)
        if match:
            found.setdefault(match["name"], []).append(int(match["version"]))
    return found


def preload_prompts() -> None:
    """Read every prompt now, so no request path touches the disk for one."""
    for name, versions in available_prompts().items():
        load_prompt(name)
        for version in versions:
            load_prompt(name, version)


preload_prompts()
