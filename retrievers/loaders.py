"""Turn files into `Document`s whose sections keep the headings they sat under.

Every format ends in the same shape (a title and sections with heading paths), so chunking and
citations behave alike whatever the source was. One bad file never stops an ingest: `load_paths`
records it as a `SkippedFile` and carries on; only a path that does not exist at all stops it,
because that is almost always a typo the user wants to hear about before anything is indexed.

A document's title is also the first part of every chunk's context line, so a heading path
that starts with the title (the H1 a title was taken from) has that part dropped rather than
paying for it twice in each chunk's token budget.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import docx
from bs4 import BeautifulSoup, Tag
from bs4.element import NavigableString, PageElement, PreformattedString
from docx.table import Table
from docx.text.paragraph import Paragraph
from pypdf import PdfReader

from agent.errors import AgentragError, IngestError
from retrievers.documents import Document, Section, SkippedFile, document_groups


class LoaderError(AgentragError):
    """One file cannot be turned into documents; its message is the reason shown to the user."""


_ParsedFile = tuple[list[Document], list[SkippedFile]]

_MARKDOWN_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$")
_MARKDOWN_CLOSING_HASHES = re.compile(r"(?:^|[ \t]+)#+$")
_MARKDOWN_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKDOWN_EMPHASIS = re.compile(r"[*_`]+")
_FRONT_MATTER_TITLE = re.compile(r"^title:\s*(.+?)\s*$", re.IGNORECASE)
_BLANK_LINE_RUNS = re.compile(r"\n{3,}")
_WHITESPACE_RUN = re.compile(r"\s+")
_DOCX_HEADING_STYLE = re.compile(r"Heading ([1-9])")

_HTML_HEADING_LEVELS = {f"h{level}": level for level in range(1, 7)}
_HTML_DROPPED_TAGS = ("script", "style", "nav", "footer", "noscript", "template", "head")
_HTML_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "caption",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "form",
        "header",
        "hr",
        "li",
        "main",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    }
)

_JSONL_KNOWN_KEYS = frozenset({"id", "title", "text"})


def iter_files(paths: Sequence[Path]) -> list[Path]:
    """Expand directories into the files below them, in a stable order.

    Hidden entries inside a directory (.git, .venv, editor files) are never documents, so they
    are pruned; a file named explicitly is kept as given, even if hidden or unsupported, so that
    `load_paths` can say why it was not taken instead of ignoring what the user asked for.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise IngestError(
                f"Path does not exist: {path}. Check the spelling, or pass an existing file "
                "or directory."
            )
        candidates = _walk_directory(path) if path.is_dir() else iter([path])
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                files.append(candidate)
    return files


def load_file(path: Path) -> list[Document]:
    """Load one file; malformed JSONL lines are dropped here (use `load_paths` to see them)."""
    documents, skipped = _load(path)
    if not documents:
        raise LoaderError(f"no valid records ({len(skipped)} malformed lines)")
    return documents


def load_paths(paths: Sequence[Path]) -> tuple[list[Document], list[SkippedFile]]:
    """Load every file under `paths`, reporting each file or JSONL line that was not taken."""
    documents: list[Document] = []
    skipped: list[SkippedFile] = []
    for path in iter_files(paths):
        try:
            loaded, bad_lines = _load(path)
        except LoaderError as error:
            skipped.append(SkippedFile(path=str(path), reason=str(error)))
            continue
        documents.extend(loaded)
        skipped.extend(bad_lines)
    return documents, skipped


def _walk_directory(directory: Path) -> Iterator[Path]:
    for root, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(root) / name


def _load(path: Path) -> _ParsedFile:
    suffix = path.suffix.lower()
    loader = _LOADERS.get(suffix)
    if loader is None:
        raise LoaderError(f"unsupported file type {suffix or '(no suffix)'}")
    try:
        if path.stat().st_size == 0:
            raise LoaderError("no text found (the file is empty)")
        return loader(path)
    except OSError as error:
        raise LoaderError(f"cannot read file ({error.strerror or error})") from error


def _file_document(path: Path, title: str | None, sections: Sequence[Section]) -> Document:
    if not sections:
        raise LoaderError("no text found")
    doc_id = str(path.resolve())
    title = title or path.stem
    return Document(
        doc_id=doc_id,
        source=doc_id,
        title=title,
        sections=tuple(_without_title(section, title) for section in sections),
    )


def _without_title(section: Section, title: str) -> Section:
    if section.heading_path[:1] == (title,):
        return Section(text=section.text, heading_path=section.heading_path[1:])
    return section


class _SectionBuilder:
    """Collects text under the current heading stack, the one rule every format shares.

    A heading closes the section before it and pops every open heading of the same or deeper
    level, so its path is always the chain of headings that enclose it.
    """

    def __init__(self, joiner: str, tidy: Callable[[str], str]) -> None:
        self._joiner = joiner
        self._tidy = tidy
        self._headings: list[tuple[int, str]] = []
        self._parts: list[str] = []
        self._sections: list[Section] = []

    def heading(self, level: int, text: str) -> None:
        self._flush()
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, text))

    def add(self, text: str) -> None:
        self._parts.append(text)

    def sections(self) -> list[Section]:
        self._flush()
        return self._sections

    def _flush(self) -> None:
        text = self._tidy(self._joiner.join(self._parts))
        self._parts = []
        if text:
            path = tuple(heading for _, heading in self._headings)
            self._sections.append(Section(text=text, heading_path=path))


def _tidy(text: str) -> str:
    lines = (line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return _BLANK_LINE_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _tidy_html(text: str) -> str:
    """Markup whitespace carries no meaning; only block boundaries (already newlines) do."""
    return "\n".join(filter(None, (_collapse(line) for line in text.split("\n"))))


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _decode(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def _load_text(path: Path) -> _ParsedFile:
    text = _tidy(_decode(path.read_bytes()))
    sections = [Section(text=text)] if text else []
    return [_file_document(path, None, sections)], []


def _load_markdown(path: Path) -> _ParsedFile:
    lines = _decode(path.read_bytes()).splitlines()
    lines, front_matter_title = _strip_front_matter(lines)
    builder = _SectionBuilder(joiner="\n", tidy=_tidy)
    title: str | None = None
    fence: str | None = None
    for line in lines:
        fence_match = _MARKDOWN_FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            builder.add(line)
            continue
        heading = None if fence else _MARKDOWN_HEADING.match(line)
        if heading is None:
            builder.add(line)
            continue
        text = _markdown_heading_text(heading.group(2) or "")
        if not text:
            continue
        level = len(heading.group(1))
        if level == 1 and title is None:
            title = text
        builder.heading(level, text)
    return [_file_document(path, title or front_matter_title, builder.sections())], []


def _strip_front_matter(lines: list[str]) -> tuple[list[str], str | None]:
    """Drop a leading YAML block (static-site docs): it is settings, not text to retrieve."""
    if not lines or lines[0].strip() != "---":
        return lines, None
    for end, line in enumerate(lines[1:], start=1):
        if line.strip() in ("---", "..."):
            titles = (_FRONT_MATTER_TITLE.match(item) for item in lines[1:end])
            title = next((match.group(1).strip("\"'") for match in titles if match), None)
            return lines[end + 1 :], title or None
    return lines, None


def _markdown_heading_text(raw: str) -> str:
    text = _MARKDOWN_CLOSING_HASHES.sub("", raw.strip())
    text = _MARKDOWN_LINK.sub(r"\1", text)
    return _collapse(_MARKDOWN_EMPHASIS.sub("", text))


def _load_html(path: Path) -> _ParsedFile:
    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    title = _collapse(soup.title.get_text(" ")) if soup.title else ""
    for tag in soup.find_all(_HTML_DROPPED_TAGS):
        tag.decompose()
    builder = _SectionBuilder(joiner="", tidy=_tidy_html)
    first_h1 = _walk_html(soup.body or soup, builder)
    return [_file_document(path, title or first_h1, builder.sections())], []


def _walk_html(root: Tag, builder: _SectionBuilder) -> str | None:
    """Feed text to `builder` in document order; returns the first h1.

    Iterative rather than recursive because real-world pages nest deeper than Python's
    recursion limit. `None` on the stack marks a block boundary, which becomes a newline.
    """
    first_h1: str | None = None
    pending: list[PageElement | None] = list(reversed(list(root.children)))
    while pending:
        node = pending.pop()
        if node is None:
            builder.add("\n")
        elif isinstance(node, Tag):
            level = _HTML_HEADING_LEVELS.get(node.name)
            if level is not None:
                text = _collapse(node.get_text(" "))
                if text:
                    first_h1 = first_h1 or (text if level == 1 else None)
                    builder.heading(level, text)
                continue
            children: list[PageElement | None] = list(reversed(list(node.children)))
            if node.name in _HTML_BLOCK_TAGS:
                children = [None, *children, None]
            pending.extend(children)
        elif isinstance(node, NavigableString) and not isinstance(node, PreformattedString):
            builder.add(_WHITESPACE_RUN.sub(" ", str(node)))
    return first_h1


MAX_PDF_PAGES = 5_000
"""Pages read from one PDF; a longer one is refused rather than parsed for minutes."""


def _load_pdf(path: Path) -> _ParsedFile:
    data = path.read_bytes()
    sections: list[Section] = []
    # pypdf raises a wide, undocumented range of exceptions on damaged files (KeyError,
    # ValueError, AssertionError, ...); any of them means the same thing to the user.
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoaderError("encrypted PDF: remove the password and ingest it again")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise LoaderError(
                f"PDF has {len(reader.pages):,} pages; the limit is {MAX_PDF_PAGES:,}"
            )
        for number, page in enumerate(reader.pages, start=1):
            text = _tidy(page.extract_text() or "")
            if text:
                sections.append(Section(text=text, heading_path=(f"page {number}",)))
        title = reader.metadata.title if reader.metadata else None
    except LoaderError:
        raise
    except Exception as error:
        raise LoaderError(f"corrupt or unreadable PDF ({error})") from error
    if not sections:
        raise LoaderError("no text found (a scanned PDF needs OCR before ingesting)")
    clean_title = _collapse(title) if isinstance(title, str) else ""
    return [_file_document(path, clean_title, sections)], []


MAX_DOCX_PART_BYTES = 16_000_000
"""Largest XML part a .docx may unpack to. A 500-page text-heavy document is a few MB; a
31 KB file whose `word/document.xml` unpacks to 20 MB of empty paragraphs is a bomb that keeps
a core busy for minutes."""
MAX_DOCX_PARTS = 2_000
MAX_DOCX_BLOCKS = 200_000
"""Paragraphs and tables read from one .docx before it is refused."""


def _check_docx_size(data: bytes) -> None:
    """Refuses a .docx that would unpack to more than the limits, from the zip's directory
    alone (no part is decompressed)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as error:
        raise LoaderError(f"corrupt or unreadable DOCX ({error})") from error
    if len(parts) > MAX_DOCX_PARTS:
        raise LoaderError(f"DOCX has {len(parts):,} parts; the limit is {MAX_DOCX_PARTS:,}")
    for part in parts:
        if part.file_size > MAX_DOCX_PART_BYTES:
            raise LoaderError(
                f"DOCX part {part.filename} unpacks to {part.file_size:,} bytes; the limit is "
                f"{MAX_DOCX_PART_BYTES:,}"
            )


def _load_docx(path: Path) -> _ParsedFile:
    data = path.read_bytes()
    _check_docx_size(data)
    builder = _SectionBuilder(joiner="\n", tidy=_tidy)
    title: str | None = None
    heading_1: str | None = None
    # Like pypdf, python-docx surfaces damage as whatever the zip or XML layer raised.
    try:
        document = docx.Document(io.BytesIO(data))
        for count, block in enumerate(document.iter_inner_content()):
            if count >= MAX_DOCX_BLOCKS:
                raise LoaderError(
                    f"DOCX has more than {MAX_DOCX_BLOCKS:,} paragraphs and tables; split it"
                )
            if isinstance(block, Table):
                builder.add(_docx_table_text(block))
                continue
            text = _collapse(block.text)
            level = _docx_heading_level(block)
            if level is None:
                builder.add(text)
            elif text:
                if level == 0:
                    title = title or text
                elif level == 1:
                    heading_1 = heading_1 or text
                builder.heading(level, text)
    except LoaderError:
        raise
    except Exception as error:
        raise LoaderError(f"corrupt or unreadable DOCX ({error})") from error
    return [_file_document(path, title or heading_1, builder.sections())], []


def _docx_heading_level(paragraph: Paragraph) -> int | None:
    """`Title` sits above `Heading 1`, so it gets level 0."""
    style = paragraph.style
    name = style.name if style is not None else None
    if not name:
        return None
    if name == "Title":
        return 0
    match = _DOCX_HEADING_STYLE.fullmatch(name)
    return int(match.group(1)) if match else None


def _docx_table_text(table: Table) -> str:
    rows: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = _collapse(cell.text)
            # A merged cell is returned once per grid column it spans.
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def _load_jsonl(path: Path) -> _ParsedFile:
    """One document per line; a bad line is reported and the rest of the file still loads.

    Streams the file so a large corpus export never sits in memory twice.
    """
    resolved = str(path.resolve())
    documents: list[Document] = []
    skipped: list[SkippedFile] = []
    first_seen: dict[str, int] = {}
    with path.open(encoding="utf-8-sig", errors="replace") as lines:
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                document = _jsonl_document(line, resolved)
            except ValueError as error:
                skipped.append(SkippedFile(path=f"{path}:{lineno}", reason=str(error)))
                continue
            if document.doc_id in first_seen:
                first = first_seen[document.doc_id]
                reason = f"duplicate id {document.doc_id!r} (first at line {first})"
                skipped.append(SkippedFile(path=f"{path}:{lineno}", reason=reason))
                continue
            first_seen[document.doc_id] = lineno
            documents.append(document)
    if not documents and not skipped:
        raise LoaderError("no text found")
    return documents, skipped


def _jsonl_document(line: str, resolved_path: str) -> Document:
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON ({error.msg})") from error
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    raw_id = record.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or str(raw_id) == "":
        raise ValueError('missing "id" (a string or integer)')
    text = record.get("text")
    if not isinstance(text, str):
        raise ValueError('missing "text" (a string)')
    text = _tidy(text)
    if not text:
        raise ValueError('empty "text"')
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        raise ValueError('"title" must be a string')
    doc_id = str(raw_id)
    document_groups(record)
    return Document(
        doc_id=doc_id,
        source=f"{resolved_path}#{doc_id}",
        title=_collapse(title or "") or doc_id,
        sections=(Section(text=text),),
        metadata={key: value for key, value in record.items() if key not in _JSONL_KNOWN_KEYS},
    )


_LOADERS: dict[str, Callable[[Path], _ParsedFile]] = {
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".txt": _load_text,
    ".html": _load_html,
    ".htm": _load_html,
    ".pdf": _load_pdf,
    ".docx": _load_docx,
    ".jsonl": _load_jsonl,
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_LOADERS)
