"""Browser sessions: password and API-key sign-in, cookie flags, CSRF, sign-out, Bearer intact."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from levant.access.keys import revoke_key
from levant.db.conversation_tables import WebSession
from levant.db.tables import ApiKey
from tests.web.fixtures import admin, admin_credentials, app_home, client, sign_in

__all__ = ["admin", "app_home", "client"]


def test_password_sign_in_sets_httponly_session_and_readable_csrf(
    client: TestClient, app_home: Path
) -> None:
    creds = admin_credentials(app_home)
    r = client.post("/auth/login", json={"email": creds["email"], "password": creds["password"]})
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "admin" and r.json()["workspace"]["name"] == "default"
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("levant_session="))
    csrf = next(c for c in cookies if c.startswith("levant_csrf="))
    assert "HttpOnly" in session and "SameSite=lax" in session and "Path=/" in session
    assert "Secure" not in session  # plain http here; https adds it
    assert "HttpOnly" not in csrf  # the page must read it
    me = client.get("/auth/me").json()
    assert me["display"] == creds["email"] and me["stores_conversations"] is True


def test_token_is_stored_only_as_hmac(admin: TestClient) -> None:
    token = admin.cookies["levant_session"]
    state = admin.app.state.levant  # type: ignore[attr-defined]
    with state.platform.db.reading() as s:
        hashes = list(s.scalars(select(WebSession.token_hash)))
    assert hashes and token not in hashes and all(len(h) == 64 for h in hashes)


def test_wrong_password_and_unknown_email_look_the_same(client: TestClient, app_home: Path) -> None:
    email = admin_credentials(app_home)["email"]
    a = client.post("/auth/login", json={"email": email, "password": "nope"})
    b = client.post("/auth/login", json={"email": "who@else", "password": "nope"})
    assert a.status_code == b.status_code == 401
    assert a.json() == b.json() and a.json()["code"] == "sign_in_failed"
    assert "levant_session" not in client.cookies


def test_login_needs_json_and_same_origin(client: TestClient, app_home: Path) -> None:
    creds = admin_credentials(app_home)
    form = client.post("/auth/login", data={"email": creds["email"], "password": "x"})
    assert form.status_code == 422
    body = {"email": creds["email"], "password": creds["password"]}
    r = client.post("/auth/login", json=body, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["code"] == "bad_origin"
    r = client.post("/auth/login", json=body, headers={"origin": "http://testserver"})
    assert r.status_code == 200


def test_state_changing_calls_need_the_csrf_header(admin: TestClient) -> None:
    body = {"model": "smollm2-135m-instruct", "name": "x"}
    token = admin.headers.pop("x-csrf-token")
    r = admin.post("/api/conversations", json=body)
    assert r.status_code == 403 and r.json()["code"] == "csrf_failed"
    r = admin.post("/api/conversations", json=body, headers={"x-csrf-token": "0" * 64})
    assert r.status_code == 403
    r = admin.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 403 and r.json()["code"] == "csrf_failed"
    assert admin.get("/api/conversations").status_code == 200  # reads need none
    r = admin.post("/api/conversations", json=body, headers={"x-csrf-token": token})
    assert r.status_code == 201


def test_api_key_sign_in_acts_as_the_key_and_ends_with_it(
    client: TestClient, app_home: Path
) -> None:
    key = admin_credentials(app_home)["api_key"]
    sign_in(client, api_key=key)
    me = client.get("/auth/me").json()
    assert me["role"] == "key" and me["display"].startswith("key admin")
    assert client.get("/v1/models").status_code == 200
    state = client.app.state.levant  # type: ignore[attr-defined]
    with state.platform.db.writing() as s:
        key_id = s.scalars(select(ApiKey.id).where(ApiKey.name == "admin")).one()
        revoke_key(s, key_id, actor="tests")
    r = client.get("/v1/models")
    assert r.status_code == 401 and r.json()["code"] == "invalid_session"


def test_bad_api_key_sign_in_is_401(client: TestClient) -> None:
    r = client.post("/auth/login", json={"api_key": "lv-nothing"})
    assert r.status_code == 401 and r.json()["code"] == "sign_in_failed"


def test_logout_ends_the_session_server_side(admin: TestClient) -> None:
    token = admin.cookies["levant_session"]
    assert admin.post("/auth/logout").status_code == 204
    assert "levant_session" not in admin.cookies
    admin.cookies.set("levant_session", token)
    r = admin.get("/auth/me")
    assert r.status_code == 401 and r.json()["code"] == "invalid_session"


def test_bearer_wins_over_a_cookie_and_needs_no_csrf(client: TestClient, app_home: Path) -> None:
    key = admin_credentials(app_home)["api_key"]
    client.cookies.set("levant_session", "stale-token")
    r = client.post(
        "/api/conversations",
        json={"model": "smollm2-135m-instruct"},
        headers={"authorization": f"Bearer {key}"},
    )
    assert r.status_code == 201, r.text
    r = client.get("/v1/models")  # no header: the stale cookie is what is judged
    assert r.status_code == 401 and r.json()["code"] == "invalid_session"
    client.cookies.clear()
    r = client.get("/v1/models")
    assert r.status_code == 401 and r.json()["code"] == "missing_api_key"
    assert r.headers["www-authenticate"] == "Bearer"


def test_pages_are_served_with_a_strict_csp(client: TestClient) -> None:
    for path in ("/", "/console"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/v1/nothing-here").status_code == 404
