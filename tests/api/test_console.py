"""/api/console: keys (admin-only writes, audited, shown once), catalogue and policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from levant.access.limits import LimitPolicy
from levant.access.limits.workspace import set_limit
from levant.access.passwords import hash_password
from levant.access.policy import grant
from levant.config import Settings
from levant.db.tables import AuditEntry, Member, User
from tests.conftest import DEFAULT_MODEL, isolated_home
from tests.web.fixtures import admin_credentials, sign_in


@pytest.fixture(scope="module")
def home(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return isolated_home(tmp_path_factory.mktemp("console-home"), model_home)


@pytest.fixture
def admin(home: tuple[Path, Path]) -> Iterator[TestClient]:
    from levant.api.app import create_app

    app = create_app(Settings(home=home[0], catalog_path=home[1]), preload=[])
    with TestClient(app) as c:
        creds = admin_credentials(home[0])
        sign_in(c, email=creds["email"], password=creds["password"])
        yield c


def test_admin_creates_lists_and_revokes_keys(admin: TestClient) -> None:
    r = admin.post("/api/console/keys", json={"name": "ci-bot", "expires_in_days": 30})
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith("lv-") and created["prefix"] == key[:11] + "…"
    listed = admin.get("/api/console/keys").json()["data"]
    row = next(k for k in listed if k["id"] == created["id"])
    assert "key" not in row and row["status"] == "active" and row["last_used_at"] is None
    assert row["expires_at"] is not None
    bearer = {"authorization": f"Bearer {key}"}
    assert admin.get("/v1/models", headers=bearer).status_code == 200
    assert admin.get("/api/console/keys").json()["data"][0]["last_used_at"] is not None
    r = admin.delete(f"/api/console/keys/{created['id']}")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert admin.get("/v1/models", headers=bearer).json()["code"] == "revoked_api_key"
    state = admin.app.state.levant  # type: ignore[attr-defined]
    with state.platform.db.reading() as s:
        actions = [
            (a.action, a.actor)
            for a in s.scalars(
                select(AuditEntry).where(AuditEntry.target == f"key:{created['id']}")
            )
        ]
    assert [a for a, _ in actions] == ["key.created", "key.revoked"]
    assert all(actor.startswith("user:usr_") for _, actor in actions)
    assert admin.delete("/api/console/keys/key_doesnotexist").status_code == 404


def test_members_and_keys_cannot_manage_keys(admin: TestClient, home: tuple[Path, Path]) -> None:
    state = admin.app.state.levant  # type: ignore[attr-defined]
    with state.platform.db.writing() as s:
        if s.scalars(select(User).where(User.email == "m@example.eu")).first() is None:
            user = User(email="m@example.eu", password_hash=hash_password("member-pw"))
            s.add(user)
            s.flush()
            s.add(Member(workspace_id=state.platform.bootstrap.workspace_id, user_id=user.id))
    with TestClient(admin.app) as member:
        sign_in(member, email="m@example.eu", password="member-pw")
        assert member.get("/api/console/keys").status_code == 200
        r = member.post("/api/console/keys", json={"name": "x"})
        assert r.status_code == 403 and r.json()["code"] == "admin_required"
    key = admin_credentials(home[0])["api_key"]
    r = admin.post(
        "/api/console/keys", json={"name": "x"}, headers={"authorization": f"Bearer {key}"}
    )
    assert r.status_code == 403 and r.json()["code"] == "admin_required"


def test_catalogue_shows_track_licence_region_and_weights(admin: TestClient) -> None:
    data = admin.get("/api/console/catalogue").json()["data"]
    card = next(m for m in data if m["id"] == DEFAULT_MODEL)
    assert card["track"] == "open" and card["licence"] == "Apache-2.0"
    assert card["max_context_length"] == 8192 and card["regions"] == ["local"]
    assert card["weights_url"] == f"/v1/models/{DEFAULT_MODEL}/weights"
    assert admin.get(card["weights_url"]).json()["licence"] == "Apache-2.0"


def test_policy_shows_residency_limits_and_grants(admin: TestClient) -> None:
    body = admin.get("/api/console/policy").json()
    assert body["workspace"]["retention"] == "standard"
    assert body["workspace"]["allowed_regions"] is None
    assert body["gateway_region"] == "local"
    assert body["limits"] == [] and body["default_limits"] is None
    state = admin.app.state.levant  # type: ignore[attr-defined]
    workspace = state.platform.bootstrap.workspace_id
    with state.platform.db.writing() as s:
        set_limit(s, workspace, actor="tests", policy=LimitPolicy(2.0, 1000, None))
        grant(s, workspace, "acme-large", actor="tests")
    body = admin.get("/api/console/policy").json()
    assert body["grants"] == ["acme-large"]
    assert body["limits"] == [
        {
            "key_id": "*",
            "model": "*",
            "requests_per_second": 2.0,
            "tokens_per_minute": 1000,
            "tokens_per_month": None,
            "monthly_budget_micros": None,
        }
    ]
