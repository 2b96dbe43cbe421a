"""Per-document access: documents given groups are read, replaced and deleted only through keys
in one of those groups; documents without groups stay open to every key of the tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from agent.services import Services
from agent.settings import ApiKeySettings
from retrievers.documents import Document, Section
from server.app import create_app
from server.auth import hash_key
from tests.server.conftest import sse_events

SECRET = "The salary bands of 2026 are kept under code word ZEBRA-42 by human resources."
QUESTION = "What code word keeps the salary bands of 2026?"

KEYS = {
    "ar-hr": ApiKeySettings(sha256=hash_key("ar-hr"), tenant="public", groups=["hr"]),
    "ar-eng": ApiKeySettings(sha256=hash_key("ar-eng"), tenant="public", groups=["eng"]),
    "ar-none": ApiKeySettings(sha256=hash_key("ar-none"), tenant="public", groups=[]),
    "ar-admin": ApiKeySettings(sha256=hash_key("ar-admin"), tenant="public"),
}


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    services.stack.ingestor.ingest_documents(
        [Document("salary-bands", "hr/salary.md", "Salary bands", (Section(SECRET),))],
        "astronomy",
        groups=["hr"],
    )
    settings = services.settings.model_copy(update={"api_keys": list(KEYS.values())})
    with TestClient(create_app(settings, services)) as c:
        yield c


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def retrieved(client: TestClient, key: str) -> set[str]:
    """Titles of every chunk the turn retrieved (events) or cited (done)."""
    body = {"message": QUESTION, "collections": ["astronomy"], "effort": "medium"}
    with client.stream("POST", "/v1/chat", json=body, headers=as_key(key)) as resp:
        assert resp.status_code == 200
        events = sse_events(resp.iter_lines())
    assert events[-1]["type"] == "done", events[-1]
    titles = {c["title"] for e in events if e["type"] == "retrieval" for c in e["chunks"]}
    return titles | {c["title"] for c in events[-1]["citations"]}


def test_only_members_retrieve_a_group_document(client: TestClient) -> None:
    assert "Salary bands" in retrieved(client, "ar-hr")
    assert "Salary bands" in retrieved(client, "ar-admin")
    for outsider in ("ar-eng", "ar-none"):
        seen = retrieved(client, outsider)
        assert seen, "documents for everyone are still found"
        assert "Salary bands" not in seen


def test_only_members_delete_a_group_document(client: TestClient) -> None:
    path = "/v1/collections/astronomy/documents/salary-bands"
    assert client.delete(path, headers=as_key("ar-eng")).status_code == 404
    assert "Salary bands" in retrieved(client, "ar-hr")
    assert client.delete(path, headers=as_key("ar-hr")).status_code == 204
    assert "Salary bands" not in retrieved(client, "ar-admin")


def upload(client: TestClient, key: str, name: str, text: str, **form: Any) -> Any:
    return client.post(
        "/v1/collections/astronomy/documents",
        files=[("files", (name, text.encode(), "text/markdown"))],
        data=form,
        headers=as_key(key),
    )


def test_uploads_go_to_the_uploaders_groups_and_no_further(client: TestClient) -> None:
    text = "# Eng roadmap\n\nThe salary bands of 2026 are not on the engineering roadmap.\n"
    assert upload(client, "ar-eng", "roadmap.md", text).status_code == 200
    # given to eng by default: hr does not see it, eng does
    assert "Eng roadmap" not in retrieved(client, "ar-hr")
    assert "Eng roadmap" in retrieved(client, "ar-eng")

    refused = upload(client, "ar-eng", "other.md", text, groups="hr")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden_group"

    # hr may not replace eng's document by uploading a file of the same name
    hidden = upload(client, "ar-hr", "roadmap.md", "# Roadmap\n\nReplaced.\n")
    assert hidden.status_code == 403
    assert hidden.json()["error"]["code"] == "document_not_visible"
    assert "Eng roadmap" in retrieved(client, "ar-eng")

    # a key without a group limit gives documents to any group, or to everyone
    assert upload(client, "ar-admin", "open.md", text.replace("Eng", "Open")).status_code == 200
    assert "Open roadmap" in retrieved(client, "ar-none")


def test_a_jsonl_record_names_its_own_groups(client: TestClient) -> None:
    lines = (
        '{"id": "ops-1", "title": "Ops pay", "text": "Salary bands of 2026: ops code ZEBRA-7.", '
        '"groups": ["ops"]}\n'
        '{"id": "bad", "title": "Bad", "text": "Salary bands.", "groups": "ops"}\n'
    )
    resp = client.post(
        "/v1/collections/astronomy/documents",
        files=[("files", ("pay.jsonl", lines.encode(), "application/jsonl"))],
        headers=as_key("ar-admin"),
    )
    assert resp.status_code == 200, resp.text
    assert [s["reason"] for s in resp.json()["skipped"]] == [
        '"groups" must be a list of non-empty strings'
    ]
    assert "Ops pay" not in retrieved(client, "ar-hr")
    assert "Ops pay" in retrieved(client, "ar-admin")
    eng = client.post(
        "/v1/collections/astronomy/documents",
        files=[("files", ("pay2.jsonl", lines.encode(), "application/jsonl"))],
        headers=as_key("ar-eng"),
    )
    assert eng.status_code == 200
    assert "this key may not give documents to ops" in str(eng.json()["skipped"])


def test_a_thread_of_a_group_key_is_not_read_by_a_key_with_other_groups(
    client: TestClient,
) -> None:
    body = {"message": QUESTION, "collections": ["astronomy"], "stream": False}
    done = client.post("/v1/chat", json=body, headers=as_key("ar-hr")).json()
    thread = done["thread_id"]
    assert client.get(f"/v1/threads/{thread}", headers=as_key("ar-hr")).status_code == 200
    for other in ("ar-eng", "ar-none", "ar-admin"):
        assert client.get(f"/v1/threads/{thread}", headers=as_key(other)).status_code == 404
        listed = client.get("/v1/threads", headers=as_key(other)).json()
        assert thread not in str(listed)
        more = client.post("/v1/chat", json={**body, "thread_id": thread}, headers=as_key(other))
        assert more.status_code == 404
        cancel = client.post(f"/v1/runs/{done['run_id']}/cancel", headers=as_key(other))
        assert cancel.status_code == 404
    assert (
        client.post(
            "/v1/chat", json={**body, "thread_id": thread}, headers=as_key("ar-hr")
        ).status_code
        == 200
    )
