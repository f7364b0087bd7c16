"""/api/console/workspaces over real HTTP: workspaces, members, grants and limits.

A live server per database (SQLite, PostgreSQL); browsers sign in through /auth/login
and send the CSRF token on writes. Covers who may do what (people through their
membership, the bootstrap admin key without membership, other keys read-only), the
last-admin rule, audit rows, 404 for what is not the caller's, and that a limit set
here is in force on the very next request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from levant.config import Settings
from levant.db.tables import AuditEntry, Member, Organisation, User, Workspace
from tests.conftest import DEFAULT_MODEL, LiveServer, isolated_home
from tests.web.fixtures import admin_credentials

COMMERCIAL = "acme-admin-test"
BASE = "/api/console/workspaces"


def _add_commercial_card(home: Path, catalog: Path) -> None:
    """A commercial card served by the SmolLM2 weights (pulled locally, shared blobs)."""
    from levant.catalog.catalog import load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.store import ModelStore

    data = yaml.safe_load(catalog.read_text())
    local = data["models"][0]["extra_sources"]
    settings = Settings(home=home, catalog_path=catalog)
    card = load_catalog(settings).get(DEFAULT_MODEL).model_dump(mode="json")
    card.update(id=COMMERCIAL, aliases=[], track="commercial", licence="Proprietary")
    card.update(licence_url=None, sources=local)
    data["models"].append(card)
    catalog.write_text(yaml.safe_dump(data))
    pull(load_catalog(settings).get(COMMERCIAL), ModelStore(settings))


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    from tests.db.fixtures import postgres_url

    home, catalog = isolated_home(tmp_path_factory.mktemp(f"admin-{request.param}"), model_home)
    _add_commercial_card(home, catalog)
    url = None if request.param == "sqlite" else postgres_url(request.config)
    live = LiveServer(Settings(home=home, catalog_path=catalog, database_url=url), preload=[])
    live.start()
    yield live
    live.stop()


# --- helpers shared with test_tenant_isolation ------------------------------------------------


def browser(server: LiveServer, **login: str) -> httpx.Client:
    """A client signed in through /auth/login (cookie + the CSRF header set)."""
    c = httpx.Client(base_url=server.url, timeout=120)
    r = c.post("/auth/login", json=login)
    assert r.status_code == 200, r.text
    c.headers["x-csrf-token"] = r.json()["csrf_token"]
    assert c.cookies["levant_csrf"] == r.json()["csrf_token"]
    return c


def bearer(server: LiveServer, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"authorization": f"Bearer {key}"}, timeout=120
    )


def creds(server: LiveServer) -> dict[str, str]:
    return admin_credentials(server.state.settings.home)


def admin_browser(server: LiveServer, workspace: str | None = None) -> httpx.Client:
    c = creds(server)
    extra = {"workspace": workspace} if workspace else {}
    return browser(server, email=c["email"], password=c["password"], **extra)


def audit_rows(server: LiveServer, action: str) -> list[AuditEntry]:
    with server.state.platform.db.reading() as s:
        query = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
        return list(s.scalars(query))


def error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["object"] == "error" and body["code"] == code, body
    return body


def _default_id(server: LiveServer) -> str:
    return str(server.state.platform.bootstrap.workspace_id)


# --- workspaces ------------------------------------------------------------------------------


def test_admin_creates_lists_renames_and_sets_residency(server: LiveServer) -> None:
    a = admin_browser(server)
    r = a.post(BASE, json={"name": "research", "allowed_regions": ["EU"]})
    assert r.status_code == 201, r.text
    ws = r.json()
    assert ws["object"] == "workspace" and ws["role"] == "admin"
    assert ws["allowed_regions"] == ["EU"] and ws["retention"] == "standard"
    assert "EU" in ws["residency"]
    listed = a.get(BASE).json()
    assert listed["object"] == "list"
    names = {w["name"]: w["role"] for w in listed["data"]}
    assert names["default"] == "admin" and names["research"] == "admin"
    assert a.get(f"{BASE}/{ws['id']}").json()["name"] == "research"

    error(a.post(BASE, json={"name": "research"}), 409, "workspace_exists")
    r = a.patch(f"{BASE}/{ws['id']}", json={"name": "research-eu"})
    assert r.status_code == 200 and r.json()["name"] == "research-eu"
    error(a.patch(f"{BASE}/{ws['id']}", json={"name": "default"}), 409, "workspace_exists")

    policy = {"allowed_regions": ["eu-west-paris"], "retention": "zero"}
    r = a.put(f"{BASE}/{ws['id']}/residency", json=policy)
    assert r.status_code == 200, r.text
    assert r.json()["allowed_regions"] == ["eu-west-paris"] and r.json()["retention"] == "zero"
    assert "zero retention" in r.json()["residency"]
    bad = {"allowed_regions": ["Not A Region!"], "retention": "standard"}
    error(a.put(f"{BASE}/{ws['id']}/residency", json=bad), 400, "invalid_policy")
    assert a.get(f"{BASE}/{ws['id']}").json()["retention"] == "zero"  # unchanged
    error(
        a.put(f"{BASE}/{ws['id']}/residency", json={"allowed_regions": None}), 422, "invalid_value"
    )
    error(a.put(f"{BASE}/{ws['id']}/residency", json={**policy, "x": 1}), 422, "invalid_value")

    actors = {(e.action, e.actor) for e in audit_rows(server, "workspace.created")}
    assert any(actor.startswith("user:usr_") for _, actor in actors)
    renamed = audit_rows(server, "workspace.renamed")
    assert renamed[-1].details == {"from": "research", "to": "research-eu"}
    assert audit_rows(server, "workspace.residency")[-1].target == ws["id"]


def test_a_failed_create_leaves_nothing_behind(server: LiveServer) -> None:
    a = admin_browser(server)
    before = len(audit_rows(server, "workspace.created"))
    r = a.post(BASE, json={"name": "half-made", "allowed_regions": ["Bad Region"]})
    error(r, 400, "invalid_policy")
    with server.state.platform.db.reading() as s:
        assert s.scalars(select(Workspace).where(Workspace.name == "half-made")).first() is None
    assert len(audit_rows(server, "workspace.created")) == before
    error(a.post(BASE, json={"name": "x", "retention": "forever"}), 422, "invalid_value")
    error(a.post(BASE, json={"name": "   "}), 400, "invalid_value")


# --- members ---------------------------------------------------------------------------------


def test_members_add_change_remove_with_audit_and_no_passwords(server: LiveServer) -> None:
    a = admin_browser(server)
    ws = a.post(BASE, json={"name": "members-team"}).json()["id"]
    password = "correct horse battery"
    r = a.post(f"{BASE}/{ws}/members", json={"email": "Ada@Example.eu", "password": password})
    assert r.status_code == 201, r.text
    ada = r.json()
    assert ada["email"] == "ada@example.eu" and ada["role"] == "member"
    assert ada["created_user"] is True and "password" not in ada
    browser(server, email="ada@example.eu", password=password, workspace=ws).close()

    error(a.post(f"{BASE}/{ws}/members", json={"email": "ada@example.eu"}), 409, "member_exists")
    other = a.post(BASE, json={"name": "members-other"}).json()["id"]
    body = {"email": "ada@example.eu", "password": "an attempt to reset"}
    error(a.post(f"{BASE}/{other}/members", json=body), 409, "user_exists")
    r = a.post(f"{BASE}/{other}/members", json={"email": "ada@example.eu", "role": "admin"})
    assert r.status_code == 201 and r.json()["created_user"] is False

    r = a.post(f"{BASE}/{ws}/members", json={"email": "bo@example.eu"})
    generated = r.json()["password"]
    assert r.status_code == 201 and len(generated) >= 20
    browser(server, email="bo@example.eu", password=generated).close()

    error(a.post(f"{BASE}/{ws}/members", json={"email": "not-an-email"}), 400, "invalid_value")
    error(
        a.post(f"{BASE}/{ws}/members", json={"email": "c@x.eu", "role": "owner"}),
        422,
        "invalid_value",
    )
    error(
        a.post(f"{BASE}/{ws}/members", json={"email": "c@x.eu", "password": "short"}),
        422,
        "invalid_value",
    )

    listed = a.get(f"{BASE}/{ws}/members").json()["data"]
    assert {m["email"]: m["role"] for m in listed} == {
        creds(server)["email"]: "admin",
        "ada@example.eu": "member",
        "bo@example.eu": "member",
    }
    r = a.patch(f"{BASE}/{ws}/members/{ada['user_id']}", json={"role": "admin"})
    assert r.status_code == 200 and r.json()["role"] == "admin"
    r = a.delete(f"{BASE}/{ws}/members/{ada['user_id']}")
    assert r.json() == {"id": ada["user_id"], "object": "workspace_member", "deleted": True}
    error(a.delete(f"{BASE}/{ws}/members/{ada['user_id']}"), 404, "member_not_found")
    error(
        a.patch(f"{BASE}/{ws}/members/usr_nobody", json={"role": "admin"}), 404, "member_not_found"
    )

    added = [e for e in audit_rows(server, "member.added") if e.target == f"workspace:{ws}"]
    assert {e.details["email"] for e in added} == {"ada@example.eu", "bo@example.eu"}
    assert all(e.actor.startswith("user:usr_") for e in added)
    assert audit_rows(server, "member.role_changed")[-1].details["to"] == "admin"
    assert audit_rows(server, "member.removed")[-1].details["user_id"] == ada["user_id"]
    with server.state.platform.db.reading() as s:
        everything = json.dumps([e.details for e in s.scalars(select(AuditEntry))])
    assert password not in everything and generated not in everything
    assert "an attempt to reset" not in everything


def test_the_last_admin_cannot_be_demoted_or_removed(server: LiveServer) -> None:
    a = admin_browser(server)
    ws = a.post(BASE, json={"name": "last-admin"}).json()["id"]
    me = next(m for m in a.get(f"{BASE}/{ws}/members").json()["data"])
    body = error(
        a.patch(f"{BASE}/{ws}/members/{me['user_id']}", json={"role": "member"}), 409, "last_admin"
    )
    assert "last admin" in body["message"]
    error(a.delete(f"{BASE}/{ws}/members/{me['user_id']}"), 409, "last_admin")
    helper = a.post(f"{BASE}/{ws}/members", json={"email": "second@example.eu", "role": "admin"})
    helper_id = helper.json()["user_id"]
    r = a.patch(f"{BASE}/{ws}/members/{me['user_id']}", json={"role": "member"})
    assert r.status_code == 200 and r.json()["role"] == "member"
    # Now a member there: no longer allowed to manage it, and the other admin is the last one.
    error(a.delete(f"{BASE}/{ws}/members/{helper_id}"), 403, "admin_required")
    with server.state.platform.db.reading() as s:
        admins = s.scalar(
            select(func.count())
            .select_from(Member)
            .where(Member.workspace_id == ws, Member.role == "admin")
        )
    assert admins == 1


def test_removing_a_member_ends_their_session(server: LiveServer) -> None:
    a = admin_browser(server)
    ws = a.post(BASE, json={"name": "leavers"}).json()["id"]
    body = {"email": "leaver@example.eu", "password": "leaver-password"}
    user_id = a.post(f"{BASE}/{ws}/members", json=body).json()["user_id"]
    leaver = browser(server, email=body["email"], password=body["password"])
    assert leaver.get("/auth/me").status_code == 200
    assert a.delete(f"{BASE}/{ws}/members/{user_id}").status_code == 200
    error(leaver.get("/auth/me"), 401, "invalid_session")


# --- who may ---------------------------------------------------------------------------------


def test_members_read_but_do_not_administer(server: LiveServer) -> None:
    a = admin_browser(server)
    ws = _default_id(server)
    body = {"email": "reader@example.eu", "password": "reader-password"}
    assert a.post(f"{BASE}/{ws}/members", json=body).status_code == 201
    m = browser(server, email=body["email"], password=body["password"])
    assert m.get(f"{BASE}/{ws}").json()["role"] == "member"
    assert m.get(f"{BASE}/{ws}/members").status_code == 200
    assert m.get(f"{BASE}/{ws}/limits").status_code == 200
    error(m.patch(f"{BASE}/{ws}", json={"name": "mine"}), 403, "admin_required")
    error(m.put(f"{BASE}/{ws}/limits", json={"requests_per_second": 1}), 403, "admin_required")
    error(m.post(f"{BASE}/{ws}/grants", json={"model": COMMERCIAL}), 403, "admin_required")
    error(m.post(f"{BASE}/{ws}/members", json={"email": "x@y.eu"}), 403, "admin_required")
    error(m.post(BASE, json={"name": "by-a-member"}), 403, "admin_required")
    policy = {"allowed_regions": None, "retention": "zero"}
    error(m.put(f"{BASE}/{ws}/residency", json=policy), 403, "admin_required")
    assert a.get(f"{BASE}/{ws}").json()["retention"] == "standard"


def test_admin_key_administers_policy_but_not_membership(server: LiveServer) -> None:
    ws = _default_id(server)
    for k in (
        bearer(server, creds(server)["api_key"]),
        browser(server, api_key=creds(server)["api_key"]),
    ):
        assert k.get(f"{BASE}/{ws}").json()["role"] == "admin_key"
        assert k.get(f"{BASE}/{ws}/members").status_code == 200
        r = k.put(f"{BASE}/{ws}/limits", json={"model": DEFAULT_MODEL, "tokens_per_minute": 10**9})
        assert r.status_code == 200, r.text
        r = k.delete(f"{BASE}/{ws}/limits", params={"model": DEFAULT_MODEL})
        assert r.status_code == 200 and r.json()["deleted"] is True
        body = error(
            k.post(f"{BASE}/{ws}/members", json={"email": "k@y.eu"}), 403, "admin_required"
        )
        assert "API keys cannot change membership" in body["message"]
        error(k.post(BASE, json={"name": "by-a-key"}), 403, "admin_required")
    actors = [e.actor for e in audit_rows(server, "limit.deleted")]
    assert actors and all(a.startswith("key:key_") for a in actors)


def test_other_keys_only_read(server: LiveServer) -> None:
    k = server.client()  # the "tests" key: not the bootstrap one
    ws = _default_id(server)
    assert k.get(f"{BASE}/{ws}").json()["role"] == "key"
    assert [w["id"] for w in k.get(BASE).json()["data"]] == [ws]
    assert k.get(f"{BASE}/{ws}/grants").status_code == 200
    assert k.get(f"{BASE}/{ws}/limits").status_code == 200
    error(k.get(f"{BASE}/{ws}/members"), 403, "admin_required")
    error(k.put(f"{BASE}/{ws}/limits", json={"requests_per_second": 1000}), 403, "admin_required")
    error(k.patch(f"{BASE}/{ws}", json={"name": "renamed"}), 403, "admin_required")
    unauthenticated = httpx.get(f"{server.url}{BASE}")
    error(unauthenticated, 401, "missing_api_key")


def test_cookie_writes_need_the_csrf_token(server: LiveServer) -> None:
    a = admin_browser(server)
    ws = _default_id(server)
    token = a.headers.pop("x-csrf-token")
    error(a.post(BASE, json={"name": "no-csrf"}), 403, "csrf_failed")
    error(a.patch(f"{BASE}/{ws}", json={"name": "no-csrf"}), 403, "csrf_failed")
    error(a.put(f"{BASE}/{ws}/limits", json={"requests_per_second": 1}), 403, "csrf_failed")
    error(a.delete(f"{BASE}/{ws}/limits"), 403, "csrf_failed")
    error(a.post(f"{BASE}/{ws}/members", json={"email": "z@z.eu"}), 403, "csrf_failed")
    r = a.put(
        f"{BASE}/{ws}/limits", json={"requests_per_second": 1}, headers={"x-csrf-token": "0" * 64}
    )
    error(r, 403, "csrf_failed")
    assert a.get(f"{BASE}/{ws}/limits").json()["data"] == []  # nothing was written
    assert all(w["name"] != "no-csrf" for w in a.get(BASE).json()["data"])
    r = a.post(BASE, json={"name": "with-csrf"}, headers={"x-csrf-token": token})
    assert r.status_code == 201


def test_other_organisations_and_foreign_workspaces_are_404(server: LiveServer) -> None:
    with server.state.platform.db.writing() as s:
        org = Organisation(name="someone-else")
        s.add(org)
        s.flush()
        theirs = Workspace(organisation_id=org.id, name="default")
        s.add(theirs)
        default = s.get(Workspace, _default_id(server))
        assert default is not None
        unjoined = Workspace(organisation_id=default.organisation_id, name="not-joined")
        s.add(unjoined)
        admin_user = s.scalars(select(User).where(User.email == creds(server)["email"])).one()
        s.flush()
        # The admin is even a member of the other organisation's workspace: still not theirs
        # through a session of this organisation.
        s.add(Member(workspace_id=theirs.id, user_id=admin_user.id, role="admin"))
        ids = [theirs.id, unjoined.id]
    clients = [admin_browser(server), bearer(server, creds(server)["api_key"]), server.client()]
    for c in clients:
        listed = {w["id"] for w in c.get(BASE).json()["data"]}
        assert not listed & set(ids)
        for ws in [*ids, "ws_doesnotexist"]:
            body = error(c.get(f"{BASE}/{ws}"), 404, "workspace_not_found")
            assert body["type"] == "not_found_error" and body["param"] == "workspace_id"
            error(c.get(f"{BASE}/{ws}/members"), 404, "workspace_not_found")
            error(c.get(f"{BASE}/{ws}/grants"), 404, "workspace_not_found")
            error(c.get(f"{BASE}/{ws}/limits"), 404, "workspace_not_found")
            error(
                c.put(f"{BASE}/{ws}/limits", json={"requests_per_second": 1}),
                404,
                "workspace_not_found",
            )
            error(c.patch(f"{BASE}/{ws}", json={"name": "taken"}), 404, "workspace_not_found")
            error(c.delete(f"{BASE}/{ws}/members/{admin_user.id}"), 404, "workspace_not_found")
    with server.state.platform.db.reading() as s:
        assert s.get(Workspace, ids[0]) is not None and s.get(Workspace, ids[0]).name == "default"


# --- grants and limits -----------------------------------------------------------------------


def test_grants_only_for_commercial_catalogue_models(server: LiveServer) -> None:
    a = admin_browser(server)
    ws = _default_id(server)
    key = bearer(server, creds(server)["api_key"])
    assert COMMERCIAL not in [m["id"] for m in key.get("/v1/models").json()["data"]]
    r = a.post(f"{BASE}/{ws}/grants", json={"model": COMMERCIAL})
    assert r.status_code == 201, r.text
    assert r.json()["object"] == "model_grant" and r.json()["model"] == COMMERCIAL
    assert a.post(f"{BASE}/{ws}/grants", json={"model": COMMERCIAL}).status_code == 200
    assert [g["model"] for g in a.get(f"{BASE}/{ws}/grants").json()["data"]] == [COMMERCIAL]
    assert COMMERCIAL in [m["id"] for m in key.get("/v1/models").json()["data"]]
    error(a.post(f"{BASE}/{ws}/grants", json={"model": DEFAULT_MODEL}), 400, "not_commercial")
    error(a.post(f"{BASE}/{ws}/grants", json={"model": "no-such-model"}), 400, "model_not_found")
    r = a.delete(f"{BASE}/{ws}/grants/{COMMERCIAL}")
    assert r.json() == {"id": COMMERCIAL, "object": "model_grant", "deleted": True}
    error(a.delete(f"{BASE}/{ws}/grants/{COMMERCIAL}"), 404, "grant_not_found")
    assert COMMERCIAL not in [m["id"] for m in key.get("/v1/models").json()["data"]]
    assert [e.action for e in audit_rows(server, "grant.added")] == ["grant.added"]
    assert audit_rows(server, "grant.removed")[-1].actor.startswith("user:usr_")


def test_limit_bodies_are_checked(server: LiveServer) -> None:
    a = admin_browser(server)
    ws = _default_id(server)
    url = f"{BASE}/{ws}/limits"
    error(a.put(url, json={"requests_per_second": 0}), 422, "invalid_value")
    error(a.put(url, json={"tokens_per_minute": -5}), 422, "invalid_value")
    error(a.put(url, json={"rps": 1}), 422, "invalid_value")
    error(
        a.put(url, json={"model": "no-such-model", "requests_per_second": 1}),
        400,
        "model_not_found",
    )
    error(
        a.put(url, json={"key_id": "key_elsewhere", "requests_per_second": 1}), 400, "invalid_value"
    )
    body = {"model": DEFAULT_MODEL, "monthly_budget_micros": 5}
    error(a.put(url, json=body), 400, "invalid_value")
    error(a.delete(url, params={"key_id": "key_none"}), 404, "limit_not_found")
    assert a.get(url).json()["data"] == []


@pytest.mark.slow
def test_a_limit_set_through_the_api_applies_to_the_next_request(server: LiveServer) -> None:
    """The server caches limits for 5 s; the API drops the cache after its commit."""
    a = admin_browser(server)
    ws = _default_id(server)
    chat = server.client()
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 1,
    }
    assert chat.post("/v1/chat/completions", json=body).status_code == 200  # loads the model
    assert chat.post("/v1/chat/completions", json=body).status_code == 200  # limits now cached
    r = a.put(f"{BASE}/{ws}/limits", json={"requests_per_second": 0.2})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "object": "limit",
        "key_id": "*",
        "model": "*",
        "requests_per_second": 0.2,
        "tokens_per_minute": None,
        "tokens_per_month": None,
        "monthly_budget_micros": None,
    }
    try:
        assert chat.post("/v1/chat/completions", json=body).status_code == 200
        second = chat.post("/v1/chat/completions", json=body)
        assert second.status_code == 429, second.text
        assert second.json()["code"] == "requests_per_second"
    finally:
        r = a.delete(f"{BASE}/{ws}/limits")
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert chat.post("/v1/chat/completions", json=body).status_code == 200
    assert a.get(f"{BASE}/{ws}/limits").json()["data"] == []
    changed = audit_rows(server, "limit.changed")[-1]
    assert changed.details["requests_per_second"] == 0.2 and changed.actor.startswith("user:")
