"""Tenant isolation: a key of one workspace never reaches another workspace's objects.

Two workspaces on one live server (SQLite and PostgreSQL): A, the default one, and
B, made through the console API, each with its own key, usage and conversation.
Every object of the other workspace is a 404 (or absent from a list), both ways
round: usage (``/v1/usage``), keys (``/api/console/keys``), conversations
(``/api/conversations/{id}``) and the console admin API. Files are not built yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from tests.api.test_console_admin import BASE, admin_browser, bearer, browser, creds, error
from tests.conftest import DEFAULT_MODEL, LiveServer

pytestmark = pytest.mark.slow  # the live server loads the model; usage needs real requests

CHAT = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}


@dataclass
class Tenant:
    name: str
    workspace_id: str
    key: str
    key_id: str
    admin: httpx.Client
    """The bootstrap admin signed in to this workspace."""
    conversation_id: str
    requests: int

    def client(self, server: LiveServer) -> httpx.Client:
        return bearer(server, self.key)


@dataclass
class Tenants:
    server: LiveServer
    a: Tenant
    b: Tenant

    def pair(self, direction: str) -> tuple[Tenant, Tenant]:
        return (self.a, self.b) if direction == "a->b" else (self.b, self.a)


def _tenant(server: LiveServer, name: str, workspace_id: str, requests: int) -> Tenant:
    admin = admin_browser(server, workspace=workspace_id)
    assert admin.get("/auth/me").json()["workspace"]["id"] == workspace_id
    r = admin.post("/api/console/keys", json={"name": f"app-{name}"})
    assert r.status_code == 201, r.text
    key, key_id = r.json()["key"], r.json()["id"]
    c = bearer(server, key)
    for _ in range(requests):
        assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    r = c.post("/api/conversations", json={"model": DEFAULT_MODEL, "name": f"chat {name}"})
    assert r.status_code == 201, r.text
    return Tenant(name, workspace_id, key, key_id, admin, r.json()["id"], requests)


@pytest.fixture(scope="module")
def tenants(platform_server: LiveServer) -> Tenants:
    server = platform_server
    r = admin_browser(server).post(BASE, json={"name": "tenant-b"})
    assert r.status_code == 201, r.text
    a = _tenant(server, "a", server.state.platform.bootstrap.workspace_id, requests=1)
    b = _tenant(server, "b", r.json()["id"], requests=2)
    return Tenants(server, a, b)


DIRECTIONS = ["a->b", "b->a"]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_usage_is_only_ever_the_callers_workspace(tenants: Tenants, direction: str) -> None:
    mine, _theirs = tenants.pair(direction)
    c = mine.client(tenants.server)
    for params in ({}, {"workspace_id": _theirs.workspace_id}):
        body = c.get("/v1/usage", params=params).json()
        assert body["object"] == "list"
        assert sum(row["requests"] for row in body["data"]) == mine.requests


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_keys_of_another_workspace_are_invisible(tenants: Tenants, direction: str) -> None:
    mine, theirs = tenants.pair(direction)
    server = tenants.server
    ids = [k["id"] for k in mine.client(server).get("/api/console/keys").json()["data"]]
    assert mine.key_id in ids and theirs.key_id not in ids
    ids = [k["id"] for k in mine.admin.get("/api/console/keys").json()["data"]]
    assert mine.key_id in ids and theirs.key_id not in ids
    # Even the admin who runs both workspaces, signed in to this one, cannot revoke theirs.
    error(mine.admin.delete(f"/api/console/keys/{theirs.key_id}"), 404, "key_not_found")
    assert theirs.client(server).get("/v1/models").status_code == 200


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_conversations_of_another_workspace_are_404(tenants: Tenants, direction: str) -> None:
    mine, theirs = tenants.pair(direction)
    c = mine.client(tenants.server)
    url = f"/api/conversations/{theirs.conversation_id}"
    error(c.get(url), 404, "conversation_not_found")
    error(c.patch(url, json={"name": "mine now"}), 404, "conversation_not_found")
    error(c.get(f"{url}/export"), 404, "conversation_not_found")
    message = {"role": "user", "content": "hello"}
    error(c.post(f"{url}/messages", json=message), 404, "conversation_not_found")
    error(c.delete(url), 404, "conversation_not_found")
    ids = [x["id"] for x in c.get("/api/conversations").json()["data"]]
    assert mine.conversation_id in ids and theirs.conversation_id not in ids
    own = theirs.client(tenants.server).get(url)
    assert own.status_code == 200 and own.json()["name"] == f"chat {theirs.name}"


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_console_admin_objects_of_another_workspace_are_404(
    tenants: Tenants, direction: str
) -> None:
    mine, theirs = tenants.pair(direction)
    server = tenants.server
    ws = f"{BASE}/{theirs.workspace_id}"
    callers = [mine.client(server)]
    if mine.name == "a":  # the bootstrap admin key belongs to workspace A
        callers.append(bearer(server, creds(server)["api_key"]))
    for c in callers:
        assert [w["id"] for w in c.get(BASE).json()["data"]] == [mine.workspace_id]
        assert c.get(f"{BASE}/{mine.workspace_id}").status_code == 200
        error(c.get(ws), 404, "workspace_not_found")
        for path in ("members", "grants", "limits"):
            error(c.get(f"{ws}/{path}"), 404, "workspace_not_found")
        error(c.patch(ws, json={"name": "taken"}), 404, "workspace_not_found")
        policy = {"allowed_regions": ["US"], "retention": "standard"}
        error(c.put(f"{ws}/residency", json=policy), 404, "workspace_not_found")
        error(c.put(f"{ws}/limits", json={"requests_per_second": 1}), 404, "workspace_not_found")
        error(c.delete(f"{ws}/limits"), 404, "workspace_not_found")
        error(c.post(f"{ws}/grants", json={"model": "x"}), 404, "workspace_not_found")
        error(c.delete(f"{ws}/members/usr_x"), 404, "workspace_not_found")
    theirs_now = theirs.admin.get(ws).json()
    assert theirs_now["name"] == ("tenant-b" if theirs.name == "b" else "default")
    assert theirs_now["allowed_regions"] is None
    assert theirs.admin.get(f"{ws}/limits").json()["data"] == []


def test_a_person_sees_only_the_workspaces_they_belong_to(tenants: Tenants) -> None:
    server = tenants.server
    body = {"email": "only-a@example.eu", "password": "only-a-password", "role": "admin"}
    r = tenants.a.admin.post(f"{BASE}/{tenants.a.workspace_id}/members", json=body)
    assert r.status_code == 201, r.text
    person = browser(server, email=body["email"], password=body["password"])
    assert [w["id"] for w in person.get(BASE).json()["data"]] == [tenants.a.workspace_id]
    error(person.get(f"{BASE}/{tenants.b.workspace_id}"), 404, "workspace_not_found")
    error(person.get(f"{BASE}/{tenants.b.workspace_id}/members"), 404, "workspace_not_found")
    error(person.delete(f"/api/console/keys/{tenants.b.key_id}"), 404, "key_not_found")
    url = f"/api/conversations/{tenants.b.conversation_id}"
    error(person.get(url), 404, "conversation_not_found")
