"""/api/conversations: per-owner history stored one row per message; search, rename, truncate,
export; zero-retention workspaces store nothing."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from levant.access.passwords import hash_password
from levant.db.conversation_tables import ConversationMessage
from levant.db.tables import Member, User, Workspace
from tests.web.fixtures import admin, app_home, client, sign_in

__all__ = ["admin", "app_home", "client"]

MODEL = "smollm2-135m-instruct"


def new(c: TestClient, name: str = "chat", **body: object) -> str:
    r = c.post("/api/conversations", json={"name": name, "model": MODEL, **body})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def say(c: TestClient, conv: str, role: str, content: str, **extra: object) -> dict[str, object]:
    r = c.post(
        f"/api/conversations/{conv}/messages", json={"role": role, "content": content, **extra}
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def message_rows(c: TestClient) -> int:
    state = c.app.state.levant  # type: ignore[attr-defined]
    with state.platform.db.reading() as s:
        return int(s.scalar(select(func.count()).select_from(ConversationMessage)) or 0)


def test_messages_are_rows_in_order(admin: TestClient) -> None:
    conv = new(
        admin, instructions="Be brief.", completion_args={"temperature": 0.2, "max_tokens": 64}
    )
    assert say(admin, conv, "user", "Hi")["seq"] == 0
    assert say(admin, conv, "assistant", "Hello!", model=MODEL, finish_reason="stop")["seq"] == 1
    assert message_rows(admin) == 2  # one row per message, nothing rewritten
    body = admin.get(f"/api/conversations/{conv}").json()
    assert body["instructions"] == "Be brief."
    assert body["completion_args"] == {"temperature": 0.2, "max_tokens": 64}
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "Hi"),
        ("assistant", "Hello!"),
    ]
    assert body["messages"][1]["finish_reason"] == "stop"


def test_list_is_newest_first_and_searchable(admin: TestClient) -> None:
    a = new(admin, "Paris trip")
    b = new(admin, "Rust lifetimes")
    say(admin, a, "user", "Which museums open on Monday?")  # touches a: now the newest
    ids = [c["id"] for c in admin.get("/api/conversations").json()["data"]]
    assert ids == [a, b]
    assert [c["id"] for c in admin.get("/api/conversations?q=RUST").json()["data"]] == [b]
    assert [c["id"] for c in admin.get("/api/conversations?q=museums").json()["data"]] == [a]
    assert admin.get("/api/conversations?q=100%25").json()["data"] == []  # LIKE is escaped


def test_rename_settings_and_clear(admin: TestClient) -> None:
    conv = new(admin, instructions="x", completion_args={"temperature": 1.0})
    r = admin.patch(f"/api/conversations/{conv}", json={"name": "Renamed"})
    assert r.json()["name"] == "Renamed" and r.json()["instructions"] == "x"
    r = admin.patch(
        f"/api/conversations/{conv}",
        json={"instructions": None, "completion_args": {"max_tokens": 10}},
    )
    assert r.json()["instructions"] is None
    assert r.json()["completion_args"] == {"temperature": None, "max_tokens": 10}
    bad = admin.patch(f"/api/conversations/{conv}", json={"completion_args": {"temperature": 9}})
    assert bad.status_code == 422


def test_truncate_supports_edit_and_regenerate(admin: TestClient) -> None:
    conv = new(admin)
    for role, text in [("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")]:
        say(admin, conv, role, text)
    r = admin.delete(f"/api/conversations/{conv}/messages?from_seq=2")
    assert r.json()["deleted"] == 2
    assert say(admin, conv, "user", "c2")["seq"] == 2
    msgs = admin.get(f"/api/conversations/{conv}").json()["messages"]
    assert [m["content"] for m in msgs] == ["a", "b", "c2"]


def test_export_markdown_and_json(admin: TestClient) -> None:
    conv = new(admin, "Export me", instructions="Be kind.")
    say(admin, conv, "user", "Hello")
    say(admin, conv, "assistant", "```python\nprint(1)\n```", model=MODEL)
    md = admin.get(f"/api/conversations/{conv}/export")
    assert md.headers["content-type"].startswith("text/markdown")
    assert f'filename="{conv}.md"' in md.headers["content-disposition"]
    assert md.text.startswith("# Export me\n")
    assert "## System prompt\n\nBe kind." in md.text
    assert f"## Assistant ({MODEL})\n\n```python\nprint(1)\n```" in md.text
    js = admin.get(f"/api/conversations/{conv}/export?format=json")
    data = json.loads(js.text)
    assert data["name"] == "Export me" and len(data["messages"]) == 2


def test_delete_removes_conversation_and_its_rows(admin: TestClient) -> None:
    conv = new(admin)
    say(admin, conv, "user", "bye")
    assert admin.delete(f"/api/conversations/{conv}").status_code == 204
    assert admin.get(f"/api/conversations/{conv}").status_code == 404
    assert message_rows(admin) == 0


def test_one_user_never_sees_anothers(admin: TestClient, app_home: Path) -> None:
    conv = new(admin, "secret plans")
    state = admin.app.state.levant  # type: ignore[attr-defined]
    with state.platform.db.writing() as s:
        user = User(email="member@example.eu", password_hash=hash_password("pw-member-1"))
        s.add(user)
        s.flush()
        s.add(Member(workspace_id=state.platform.bootstrap.workspace_id, user_id=user.id))
    with TestClient(admin.app) as other:
        sign_in(other, email="member@example.eu", password="pw-member-1")
        assert other.get("/api/conversations").json()["data"] == []
        for r in (
            other.get(f"/api/conversations/{conv}"),
            other.post(
                f"/api/conversations/{conv}/messages", json={"role": "user", "content": "x"}
            ),
            other.delete(f"/api/conversations/{conv}"),
            other.get(f"/api/conversations/{conv}/export"),
        ):
            assert r.status_code == 404 and r.json()["code"] == "conversation_not_found"
    assert admin.get(f"/api/conversations/{conv}").status_code == 200


def test_zero_retention_refuses_to_store(admin: TestClient) -> None:
    state = admin.app.state.levant  # type: ignore[attr-defined]
    conv = new(admin)
    with state.platform.db.writing() as s:
        s.execute(update(Workspace).values(retention="zero"))
    assert admin.get("/auth/me").json()["stores_conversations"] is False
    refused = [
        admin.post("/api/conversations", json={"model": MODEL}),
        admin.post(f"/api/conversations/{conv}/messages", json={"role": "user", "content": "x"}),
        admin.patch(f"/api/conversations/{conv}", json={"name": "y"}),
    ]
    for r in refused:
        assert r.status_code == 403 and r.json()["code"] == "zero_retention"
        assert r.json()["type"] == "permission_error"
        assert "zero retention" in r.json()["message"]
    assert message_rows(admin) == 0
    assert admin.get("/api/conversations").json()["retention"] == "zero"


def test_bodies_are_validated(admin: TestClient) -> None:
    r = admin.post("/api/conversations", json={"model": MODEL, "surprise": 1})
    assert r.status_code == 422 and r.json()["object"] == "error"
    conv = new(admin)
    r = admin.post(f"/api/conversations/{conv}/messages", json={"role": "system", "content": "x"})
    assert r.status_code == 422
