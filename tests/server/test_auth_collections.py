"""API keys, tenancy and collections over HTTP."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from agent.services import Services
from server.app import create_app
from tests.server.conftest import QUESTION_HOT as QUESTION
from tests.server.conftest import sse_events


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_missing_or_invalid_key_is_401(keyed_client: TestClient) -> None:
    for headers in ({}, auth("wrong"), {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        resp = keyed_client.post("/v1/chat", json={"message": QUESTION}, headers=headers)
        assert resp.status_code == 401, headers
        assert resp.json()["error"]["code"] == "unauthorized"
    assert keyed_client.get("/v1/threads").status_code == 401
    assert keyed_client.get("/v1/collections").status_code == 401
    # liveness and readiness stay open for orchestrators
    assert keyed_client.get("/healthz").status_code == 200


def test_key_limited_to_a_collection(keyed_client: TestClient) -> None:
    key = auth("ar-astro-key")
    forbidden = keyed_client.post(
        "/v1/chat", json={"message": QUESTION, "collections": ["handbook"]}, headers=key
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden_collection"
    names = [
        c["name"] for c in keyed_client.get("/v1/collections", headers=key).json()["collections"]
    ]
    assert names == ["astronomy"]
    # asking about the handbook without naming collections still searches only astronomy
    with keyed_client.stream(
        "POST", "/v1/chat", json={"message": "How do I configure ingestion?"}, headers=key
    ) as resp:
        events = sse_events(resp.iter_lines())
    searched = {c["collection"] for e in events if e["type"] == "retrieval" for c in e["chunks"]}
    assert searched <= {"astronomy"}


def test_tenants_see_only_their_own_documents_and_threads(keyed_client: TestClient) -> None:
    public, alpha = auth("ar-public-key"), auth("ar-alpha-key")
    done = keyed_client.post(
        "/v1/chat", json={"message": QUESTION, "stream": False}, headers=public
    ).json()
    assert done["citations"], "the public tenant has the sample documents"

    # alpha's retrieval is filtered to tenant alpha on the server: nothing to cite
    alpha_done = keyed_client.post(
        "/v1/chat", json={"message": QUESTION, "stream": False}, headers=alpha
    ).json()
    assert alpha_done["citations"] == []
    # a request cannot widen its tenant
    widened = keyed_client.post(
        "/v1/chat",
        json={"message": QUESTION, "stream": False, "tenant": "public"},
        headers=alpha,
    )
    assert widened.status_code == 422

    thread = done["thread_id"]
    assert keyed_client.get(f"/v1/threads/{thread}", headers=alpha).status_code == 404
    assert keyed_client.delete(f"/v1/threads/{thread}", headers=alpha).status_code == 404
    other = keyed_client.post(
        "/v1/chat", json={"message": QUESTION, "thread_id": thread}, headers=alpha
    )
    assert other.status_code == 404
    alpha_threads = keyed_client.get("/v1/threads", headers=alpha).json()["threads"]
    assert [t["thread_id"] for t in alpha_threads] == [alpha_done["thread_id"]]
    assert keyed_client.get(f"/v1/threads/{thread}", headers=public).status_code == 200


def test_upload_then_ask_then_delete(
    keyed_client: TestClient, tmp_path: Path, services: Services
) -> None:
    alpha = auth("ar-alpha-key")
    note = (
        "# Kepler-452b\n\nKepler-452b orbits a Sun-like star 1,400 light-years away. "
        "It takes 385 days to go around its star.\n"
    )
    files = {"files": ("kepler.md", note.encode(), "text/markdown")}
    # a turn before the upload: the collection list it read must not hide the new collection
    hello = keyed_client.post("/v1/chat", json={"message": "hello", "stream": False}, headers=alpha)
    assert hello.status_code == 200
    first = keyed_client.post(
        "/v1/collections/exoplanets/documents",
        files=files,
        data={"description": "Exoplanet notes"},
        headers=alpha,
    )
    assert first.status_code == 200, first.text
    report = first.json()
    assert report["files"] == ["kepler.md"] and report["chunks_added"] >= 1
    again = keyed_client.post(
        "/v1/collections/exoplanets/documents", files=files, headers=alpha
    ).json()
    assert again["chunks_added"] == 0 and again["unchanged"] == 1

    done = keyed_client.post(
        "/v1/chat",
        json={
            "message": "How long is a year on Kepler-452b?",
            "collections": ["exoplanets"],
            "stream": False,
        },
        headers=alpha,
    ).json()
    assert done["citations"][0]["doc_id"] == "upload:kepler.md"
    # the public tenant cannot see alpha's upload, nor that alpha's collection exists
    public = keyed_client.post(
        "/v1/chat",
        json={"message": "Kepler-452b", "collections": ["exoplanets"], "stream": False},
        headers=auth("ar-public-key"),
    )
    assert public.status_code == 404
    assert public.json()["error"]["message"] == (
        "No collection 'exoplanets'. Available: astronomy, handbook."
    )
    listed = keyed_client.get("/v1/collections", headers=auth("ar-public-key")).json()
    assert "exoplanets" not in {c["name"] for c in listed["collections"]}
    mine = keyed_client.get("/v1/collections", headers=alpha).json()["collections"]
    assert mine == [{"name": "exoplanets", "description": "Exoplanet notes", "points": 1}]

    gone = keyed_client.delete(
        "/v1/collections/exoplanets/documents/upload:kepler.md", headers=alpha
    )
    assert gone.status_code == 204
    again_gone = keyed_client.delete(
        "/v1/collections/exoplanets/documents/upload:kepler.md", headers=alpha
    )
    assert again_gone.status_code == 404
    assert again_gone.json()["error"]["code"] == "document_not_found"


def test_bad_uploads(services: Services) -> None:
    settings = services.settings.model_copy(update={"max_upload_bytes": 5_000})
    with TestClient(create_app(settings, services)) as client:
        url = "/v1/collections/notes/documents"
        unsupported = client.post(url, files={"files": ("tool.exe", b"MZ...", "x/y")})
        assert unsupported.status_code == 415
        assert unsupported.json()["error"]["code"] == "unsupported_file_type"
        big = client.post(url, files={"files": ("big.txt", b"word " * 2_000, "text/plain")})
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "request_too_large"
        empty = client.post(url, files={"files": ("empty.txt", b"", "text/plain")})
        assert empty.status_code == 200
        assert empty.json()["skipped"][0]["file"] == "empty.txt"
        assert "empty" in empty.json()["skipped"][0]["reason"]
        mixed = client.post(
            url,
            files=[
                ("files", ("ok.txt", b"Pluto is a dwarf planet.", "text/plain")),
                ("files", ("bad.exe", b"MZ", "x/y")),
            ],
        ).json()
        assert mixed["files"] == ["ok.txt"] and mixed["chunks_added"] == 1
        assert mixed["skipped"] == [{"file": "bad.exe", "reason": "unsupported file type"}]
        bad_name = client.post(
            "/v1/collections/no%20spaces/documents",
            files={"files": ("ok.txt", b"x", "text/plain")},
        )
        assert bad_name.status_code == 422
        no_files = client.post(url)
        assert no_files.status_code == 422
    with TestClient(create_app(services.settings, services)) as client:
        many = [("files", (f"n{i}.txt", b"x", "text/plain")) for i in range(101)]
        too_many = client.post(url, files=many)
        assert too_many.status_code == 413
        assert too_many.json()["error"]["code"] == "too_many_files"


def test_an_upload_may_have_a_name_of_any_length(keyed_client: TestClient) -> None:
    """The file system takes 255 bytes; the name is the document's, whatever its length."""
    name = "Ünïcode notes " + "a very long title " * 20 + ".txt"  # 376 characters
    files = {"files": (name, b"Kepler-452b takes 385 days to go around its star.", "text/plain")}
    reply = keyed_client.post(
        "/v1/collections/longnames/documents", files=files, headers=auth("ar-alpha-key")
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["files"] == [name] and reply.json()["chunks_added"] == 1
    assert "/tmp" not in reply.text
    done = keyed_client.post(
        "/v1/chat",
        json={"message": "Kepler-452b year", "collections": ["longnames"], "stream": False},
        headers=auth("ar-alpha-key"),
    ).json()
    assert done["citations"][0]["doc_id"] == f"upload:{name}"
    assert done["citations"][0]["title"] == name.removesuffix(".txt")
