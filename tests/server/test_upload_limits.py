"""Uploads are read in a child process bounded in memory and time, and stopped when the client
goes away: a hostile file costs its own upload, never the server."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.services import Services
from retrievers.parse_worker import ParseLimitError, parse_bounded
from retrievers.store import PayloadFilter
from server.app import create_app
from tests.server.conftest import LiveServer


def workers_alive() -> int:
    """Child processes reading uploads, right now (read from /proc: no procps needed)."""
    alive = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"retrievers.parse_worker" in cmdline.read_bytes():
                alive += 1
        except OSError:  # the process ended while we looked
            pass
    return alive


def test_files_are_read_in_the_child_and_come_back_whole(tmp_path: Path) -> None:
    note = tmp_path / "note.md"
    note.write_text("# Venus\n\nVenus is the hottest planet.\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    documents, skipped = parse_bounded([note, empty], timeout_s=60, memory_mb=1024)
    assert [d.title for d in documents] == ["Venus"]
    assert documents[0].sections[0].text == "Venus is the hottest planet."
    assert [(Path(s.path).name, s.reason) for s in skipped] == [
        ("empty.txt", "no text found (the file is empty)")
    ]


def test_a_file_that_needs_more_memory_than_the_cap_is_skipped_alone(tmp_path: Path) -> None:
    huge = tmp_path / "huge.txt"
    with huge.open("w") as out:
        for _ in range(60):
            out.write(("word " * 200 + "\n") * 1000)  # 60 MB: bytes and text exceed 128 MB
    note = tmp_path / "note.md"
    note.write_text("# Venus\n\nHot.\n")
    documents, skipped = parse_bounded([huge, note], timeout_s=120, memory_mb=128)
    assert [d.title for d in documents] == ["Venus"]
    assert len(skipped) == 1 and Path(skipped[0].path).name == "huge.txt"
    assert "more than 128 MB" in skipped[0].reason


def test_the_deadline_kills_the_child(tmp_path: Path) -> None:
    note = tmp_path / "note.md"
    note.write_text("# Venus\n\nHot.\n")
    # no child starts Python and its parsers in a millisecond
    with pytest.raises(ParseLimitError, match=r"longer than 0\.001 s") as caught:
        parse_bounded([note], timeout_s=0.001, memory_mb=1024)
    assert caught.value.reason == "time"


def test_a_stop_signal_kills_the_child(tmp_path: Path) -> None:
    note = tmp_path / "note.md"
    note.write_text("# Venus\n\nHot.\n")
    stop = threading.Event()
    stop.set()
    with pytest.raises(ParseLimitError) as caught:
        parse_bounded([note], timeout_s=60, memory_mb=1024, stop=stop)
    assert caught.value.reason == "stopped"


def test_an_upload_over_the_time_limit_is_413_and_stores_nothing(services: Services) -> None:
    settings = services.settings.model_copy(update={"upload_parse_timeout_s": 0.001})
    with TestClient(create_app(settings, services)) as client:
        resp = client.post(
            "/v1/collections/astronomy/documents",
            files=[("files", ("mars.md", b"# Mars\n\nMars is red.\n", "text/markdown"))],
        )
        assert resp.status_code == 413, resp.text
        assert resp.json()["error"]["code"] == "upload_too_slow"
        assert "AGENTRAG_UPLOAD_PARSE_TIMEOUT_S" in resp.json()["error"]["message"]
    stored = PayloadFilter(must={"doc_id": "upload:mars.md"})
    assert services.stack.store.count("astronomy", stored) == 0


def test_a_client_that_goes_away_stops_the_reading_of_its_upload(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """Two million JSONL lines take the child seconds to read; the client leaves at once."""
    lines = b"".join(b'{"text": "line %d"}\n' % i for i in range(2_000_000))
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="big.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        + lines
        + f"\r\n--{boundary}--\r\n".encode()
    )
    settings = services.settings.model_copy(update={"max_upload_bytes": len(body) + 1024})
    with LiveServer(create_app(settings, services)) as server:
        assert workers_alive() == 0
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(
                (
                    "POST /v1/collections/astronomy/documents HTTP/1.1\r\n"
                    f"Host: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}"
                    f"\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
            )
            deadline = time.monotonic() + 60
            while workers_alive() == 0:  # the server is reading it
                assert time.monotonic() < deadline, "the upload was never read"
                time.sleep(0.05)
        # the client is gone: the child is killed, not left reading for nobody
        deadline = time.monotonic() + 30
        while workers_alive():
            assert time.monotonic() < deadline, "the child kept reading for nobody"
            time.sleep(0.05)
        deadline = time.monotonic() + 30
        while "upload stopped: the client went away" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text[-2000:]
            time.sleep(0.05)
