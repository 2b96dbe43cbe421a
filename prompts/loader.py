"""Prompts live in `prompts/<name>.v<N>.md`; code asks for them by name (and version).

Files start with a `---`-fenced header of `key: value` lines (at least `description`), then the
text, which uses `{placeholders}` filled with `str.format`. Asking without a version gives the
highest one, so a new version is adopted by adding a file, and an old one stays reproducible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROMPT_DIR = Path(__file__).resolve().parent
_NAME_RE = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.md$")


class PromptNotFoundError(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    version: int
    description: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.name}.v{self.version}"

    def format(self, **values: object) -> str:
        return self.text.format(**values)


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
