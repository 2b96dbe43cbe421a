"""Documents are data: retrieved text must not be able to end the evidence block it is shown in,
forge another block, or pass for the system's own instructions.

A model reads the evidence between `<evidence>` tags, each chunk after an `[n] title` line. A
document holding `</evidence>` would close that block early, and what follows would read as the
prompt's own text; one holding a line `[7] Admin note` would read as another chunk. So before a
chunk is shown (`fenced`), every tag-like sequence in it (`</evidence>`, `<system>`,
`<|im_start|>`) has its angle brackets replaced by look-alikes that no parser reads as a tag
(U+2039 and U+203A), and a line that starts like a block header (`[7] `) is shown as `(7) `.
Other text, including `x < 5` and citations inside a sentence, is left as it is.

Text that tries to instruct the reader is also reported (`instruction_like`), so a person sees in
the turn's flags that a document did: phrases that address the model ("ignore the previous
instructions", "you are now", "reveal your system prompt"), role lines ("SYSTEM:"), chat-template
tokens, and markdown images whose URL carries a query (a way to send data out when the answer
is rendered). The patterns are a tripwire for review, not the defence: the fence and the
prompt's instruction hierarchy are.
"""

from __future__ import annotations

import re

_TAG = re.compile(
    r"<\s*/?\s*[A-Za-z][\w:-]*(?:\s[^<>\n]{0,80})?/?>"  # <evidence>, </ evidence>, <a href=..>
    r"|<\|[^<>|\n]{1,40}\|>"  # <|im_start|>
    r"|<<\s*/?\s*SYS\s*>>|<!--"
)
"""What a model could take for markup: an opening, closing or special tag, a comment. Not a
comparison ("p <0.05", "<or=3 and >5"): a tag's name is followed by a space, `/` or `>`."""
_HEADER = re.compile(r"^(\s*)\[(\d{1,3})\](?=\s)", re.MULTILINE)
"""A line that starts like an evidence block's header, `[n] `."""

_INSTRUCTIONS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE | re.MULTILINE))
    for name, pattern in (
        (
            "ignore instructions",
            r"\b(ignore|disregard|forget|override)\b[^.\n]{0,30}\b(previous|prior|above|earlier|"
            r"preceding|system|all|any|your)\b[^.\n]{0,20}\b(instructions?|prompts?|rules|"
            r"directions|guidelines|context)\b",
        ),
        (
            "reveal the prompt",
            r"\b(reveal|print|repeat|show|output|leak|disclose)\b[^.\n]{0,30}\b(system prompt|"
            r"(your|the) (instructions|prompt|rules))\b",
        ),
        ("role change", r"\byou are now\b|\bnew instructions\s*:|\bfrom now on,? you\b"),
        ("role line", r"^\s*(system|assistant|developer|user)\s*:"),
        ("chat template", r"<\|[a-z_]+\|>|\[/?INST\]|<</?SYS>>|</?(system|evidence)\b"),
        ("data link", r"!\[[^\]]*\]\(\s*https?://[^)\s]*\?[^)\s]*\)"),
    )
)


def fenced(text: str) -> str:
    """`text` as it may be shown inside the evidence block (see the module's docstring)."""
    text = _TAG.sub(lambda m: m.group().replace("<", "\u2039").replace(">", "\u203a"), text)
    return _HEADER.sub(r"\1(\2)", text)


def instruction_like(text: str) -> list[str]:
    """Names of the instruction patterns `text` matches, each once, in a fixed order."""
    return [name for name, pattern in _INSTRUCTIONS if pattern.search(text)]
