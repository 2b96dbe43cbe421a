"""Loaders turn real files of every supported format into documents with the right headings."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import docx
import pytest

from agent.errors import IngestError
from retrievers import loaders
from retrievers.documents import Document, Section
from retrievers.loaders import SUPPORTED_SUFFIXES, LoaderError, iter_files, load_file, load_paths

MARKDOWN = """\
Preamble before any heading.

# User Guide

Welcome to the guide.

## Install

Run the installer.

```bash
# this is a shell comment, not a heading
pip install agentrag
```

### From source ###

Clone the repository.

## Empty heading with no body

## Usage

Call `agentrag ingest`.
"""

HTML = """\
<!DOCTYPE html>
<html>
<head><title>Service Handbook</title><style>p { color: red; }</style></head>
<body>
<nav>Home | About</nav>
<h1>Handbook</h1>
<p>Intro   paragraph
   spread over lines.</p>
<h2>On-call</h2>
<ul><li>Page the owner.</li><li>Open an incident.</li></ul>
<script>trackVisitor();</script>
<h3>Escalation</h3>
<p>Call the <b>duty manager</b>.</p>
<footer>Copyright notice</footer>
</body>
</html>
"""


def _minimal_pdf(text: str, title: str) -> bytes:
    """A one-page PDF with a Helvetica text stream, written byte by byte."""
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>".encode("ascii"),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets: list[int] = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_offset = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % (len(objects) + 1)
    out += b"startxref\n%d\n%%%%EOF\n" % xref_offset
    return bytes(out)


def _write_docx(path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("Quarterly Report", style="Title")
    document.add_paragraph("Summary before the first heading.")
    document.add_heading("Results", level=1)
    document.add_paragraph("Revenue grew.")
    document.add_heading("By region", level=2)
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Region"
    table.cell(0, 1).text = "Growth"
    table.cell(1, 0).text = "North"
    table.cell(1, 1).text = "12%"
    document.add_heading("Outlook", level=1)
    document.add_paragraph("Stable.")
    document.save(str(path))


def _only(documents: list[Document]) -> Document:
    assert len(documents) == 1
    return documents[0]


def _sections(document: Document) -> list[tuple[tuple[str, ...], str]]:
    return [(section.heading_path, section.text) for section in document.sections]


def test_supported_suffixes_cover_every_format() -> None:
    expected = {".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx", ".jsonl"}
    assert expected == SUPPORTED_SUFFIXES


def test_markdown_sections_follow_the_heading_stack(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(MARKDOWN, encoding="utf-8")

    document = _only(load_file(path))

    assert document.doc_id == str(path.resolve())
    assert document.source == str(path.resolve())
    assert document.title == "User Guide"
    paths = [section.heading_path for section in document.sections]
    assert paths == [(), (), ("Install",), ("Install", "From source"), ("Usage",)]
    install = document.sections[2].text
    assert "# this is a shell comment, not a heading" in install
    assert "pip install agentrag" in install
    assert document.sections[0].text == "Preamble before any heading."
    assert document.sections[3].text == "Clone the repository."


def test_markdown_heading_lines_stay_out_of_the_body(tmp_path: Path) -> None:
    path = tmp_path / "guide.md"
    path.write_text(MARKDOWN, encoding="utf-8")

    document = _only(load_file(path))

    assert all("##" not in section.text for section in document.sections)
    assert "Empty heading" not in document.text


def test_markdown_without_h1_is_titled_by_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "release-notes.markdown"
    path.write_text("## Fixed\n\nA crash on start.\n", encoding="utf-8")

    document = _only(load_file(path))

    assert document.title == "release-notes"
    assert _sections(document) == [(("Fixed",), "A crash on start.")]


def test_markdown_front_matter_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "page.md"
    path.write_text("---\ntitle: From Front Matter\nweight: 3\n---\nBody text.\n", "utf-8")

    document = _only(load_file(path))

    assert document.title == "From Front Matter"
    assert document.text == "Body text."


def test_html_keeps_content_drops_chrome_and_builds_heading_paths(tmp_path: Path) -> None:
    path = tmp_path / "handbook.html"
    path.write_text(HTML, encoding="utf-8")

    document = _only(load_file(path))

    assert document.title == "Service Handbook"
    assert _sections(document) == [
        (("Handbook",), "Intro paragraph spread over lines."),
        (("Handbook", "On-call"), "Page the owner.\nOpen an incident."),
        (("Handbook", "On-call", "Escalation"), "Call the duty manager."),
    ]
    for chrome in ("Home | About", "trackVisitor", "color: red", "Copyright"):
        assert chrome not in document.text


def test_html_without_title_tag_is_titled_by_its_h1(tmp_path: Path) -> None:
    path = tmp_path / "page.htm"
    path.write_text("<h1>Runbook</h1><p>Restart it.</p><h2>Checks</h2><p>Ping.</p>", "utf-8")

    document = _only(load_file(path))

    assert document.title == "Runbook"
    assert _sections(document) == [((), "Restart it."), (("Checks",), "Ping.")]


def test_text_file_is_one_section_and_survives_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"first line\nbad byte \xff here\n")

    document = _only(load_file(path))

    assert document.title == "notes"
    assert _sections(document) == [((), "first line\nbad byte \ufffd here")]


def test_docx_uses_heading_styles_and_includes_tables(tmp_path: Path) -> None:
    path = tmp_path / "report.docx"
    _write_docx(path)

    document = _only(load_file(path))

    assert document.title == "Quarterly Report"
    assert _sections(document) == [
        ((), "Summary before the first heading."),
        (("Results",), "Revenue grew."),
        (("Results", "By region"), "Region | Growth\nNorth | 12%"),
        (("Outlook",), "Stable."),
    ]


def test_a_docx_bomb_is_refused_before_it_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file whose document.xml unpacks to 20 MB of empty paragraphs."""
    source = tmp_path / "plain.docx"
    docx.Document().save(str(source))
    bomb = tmp_path / "bomb.docx"
    with (
        zipfile.ZipFile(source) as original,
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for item in original.infolist():
            data = original.read(item.filename)
            if item.filename == "word/document.xml":
                head, _, tail = data.decode().partition("<w:body>")
                data = (head + "<w:body>" + "<w:p/>" * 3_500_000 + tail).encode()
            out.writestr(item, data)
    assert bomb.stat().st_size < 200_000

    def parse(*args: object) -> None:
        raise AssertionError("the bomb was parsed")

    monkeypatch.setattr(docx, "Document", parse)  # only the zip directory is read
    with pytest.raises(LoaderError, match="unpacks to 21,0"):
        load_file(bomb)


def test_a_docx_with_too_many_paragraphs_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loaders, "MAX_DOCX_BLOCKS", 3)
    path = tmp_path / "report.docx"
    _write_docx(path)
    with pytest.raises(LoaderError, match="more than 3 paragraphs"):
        load_file(path)


def test_pdf_text_is_extracted_per_page(tmp_path: Path) -> None:
    path = tmp_path / "hello.pdf"
    path.write_bytes(_minimal_pdf("Hello PDF world", "Greeting Card"))

    document = _only(load_file(path))

    assert document.title == "Greeting Card"
    assert document.sections == (Section(text="Hello PDF world", heading_path=("page 1",)),)
    assert document.doc_id == str(path.resolve())


@pytest.mark.parametrize("name", ["scan.pdf", "letter.docx"])
def test_corrupt_binary_documents_are_errors(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(random.Random(name).randbytes(2048))

    with pytest.raises(LoaderError, match="corrupt or unreadable"):
        load_file(path)


@pytest.mark.parametrize("content", [b"", b"  \n\n\t \n"])
def test_file_without_text_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "blank.md"
    path.write_bytes(content)

    with pytest.raises(LoaderError, match="no text found"):
        load_file(path)


def test_unsupported_suffix_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "data.xyz"
    path.write_text("anything", encoding="utf-8")

    with pytest.raises(LoaderError, match=r"^unsupported file type \.xyz$"):
        load_file(path)


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "folder.md"
    path.mkdir()
    (path / "inner.txt").write_text("x", encoding="utf-8")

    with pytest.raises(LoaderError, match="cannot read file"):
        load_file(path)


def _write_jsonl(path: Path) -> None:
    lines = [
        json.dumps({"id": 7, "title": "Aspirin", "text": "Aspirin thins blood.", "year": 1999}),
        '{"id": "broken", "text": ',
        json.dumps({"id": "no-text", "title": "Missing"}),
        "",
        json.dumps({"title": "No id", "text": "orphan"}),
        json.dumps({"id": "b2", "text": "Untitled record."}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_jsonl_records_become_documents(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    _write_jsonl(path)

    documents = load_file(path)

    assert [document.doc_id for document in documents] == ["7", "b2"]
    first, second = documents
    assert first.source == f"{path.resolve()}#7"
    assert first.title == "Aspirin"
    assert first.metadata == {"year": 1999}
    assert first.sections == (Section(text="Aspirin thins blood."),)
    assert second.title == "b2"


def test_jsonl_malformed_lines_are_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    _write_jsonl(path)

    documents, skipped = load_paths([path])

    assert [document.doc_id for document in documents] == ["7", "b2"]
    assert [item.path for item in skipped] == [f"{path}:2", f"{path}:3", f"{path}:5"]
    assert skipped[0].reason.startswith("invalid JSON")
    assert '"text"' in skipped[1].reason
    assert '"id"' in skipped[2].reason


def test_jsonl_duplicate_id_is_reported_not_loaded_twice(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n', "utf-8")

    documents, skipped = load_paths([path])

    assert [document.text for document in documents] == ["one"]
    assert [(item.path, item.reason) for item in skipped] == [
        (f"{path}:2", "duplicate id 'a' (first at line 1)")
    ]


def test_large_jsonl_loads_every_line(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    body = "Evidence sentence about a protein. " * 45
    with path.open("w", encoding="utf-8") as out:
        for number in range(5000):
            out.write(json.dumps({"id": number, "title": f"Paper {number}", "text": body}) + "\n")
    assert path.stat().st_size > 7_000_000

    documents = load_file(path)

    assert len(documents) == 5000
    assert documents[4999].title == "Paper 4999"
    assert documents[4999].text.startswith("Evidence sentence about a protein.")


def test_load_paths_reports_every_file_it_did_not_take(tmp_path: Path) -> None:
    (tmp_path / "guide.md").write_text(MARKDOWN, encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.txt").write_text("Plain notes.", encoding="utf-8")
    (tmp_path / "sub" / "empty.txt").write_bytes(b"")
    (tmp_path / "sub" / "image.xyz").write_bytes(b"\x89PNG")
    (tmp_path / "broken.pdf").write_bytes(random.Random(1).randbytes(512))
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD.md").write_text("# hidden", encoding="utf-8")
    (tmp_path / ".draft.md").write_text("# hidden too", encoding="utf-8")

    documents, skipped = load_paths([tmp_path])

    assert [Path(document.doc_id).name for document in documents] == ["guide.md", "notes.txt"]
    reasons = {Path(item.path).name: item.reason for item in skipped}
    assert set(reasons) == {"broken.pdf", "empty.txt", "image.xyz"}
    assert reasons["image.xyz"] == "unsupported file type .xyz"
    assert reasons["empty.txt"].startswith("no text found")
    assert reasons["broken.pdf"].startswith("corrupt or unreadable PDF")


def test_iter_files_is_sorted_skips_hidden_and_keeps_explicit_files(tmp_path: Path) -> None:
    for name in ("b.md", "a.txt", "z/c.md", ".hidden/d.md", ".e.md"):
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("x", encoding="utf-8")
    explicit = tmp_path / ".e.md"

    files = iter_files([tmp_path, explicit, tmp_path / "b.md"])

    relative = [file.relative_to(tmp_path).as_posix() for file in files]
    assert relative == ["a.txt", "b.md", "z/c.md", ".e.md"]


def test_missing_path_stops_ingestion_and_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist"

    with pytest.raises(IngestError, match="does-not-exist"):
        load_paths([missing])
