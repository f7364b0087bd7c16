"""Shared by the chat-app tests: an app on its own home, signed-in clients, admin credentials."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from levant.config import Settings


def admin_credentials(home: Path) -> dict[str, str]:
    """email, password and api_key from the first-start credentials file."""
    out: dict[str, str] = {}
    for line in (home / "admin-credentials").read_text().splitlines():
        if ":" in line and not line.startswith("#"):
            name, _, value = line.partition(":")
            out[name.strip()] = value.strip()
    return out


def sign_in(client: TestClient, **body: str) -> str:
    """Sign ``client`` in; returns the CSRF token, also set as the client's default header."""
    r = client.post("/auth/login", json=body)
    assert r.status_code == 200, r.text
    token = client.cookies["levant_csrf"]
    assert r.json()["csrf_token"] == token
    client.headers["x-csrf-token"] = token
    return token


@pytest.fixture
def app_home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def client(request: pytest.FixtureRequest, app_home: Path) -> Iterator[TestClient]:
    """An app (no model loaded) on a fresh home and database, once per database kind;
    the client is not signed in."""
    from levant.api.app import create_app
    from tests.db.fixtures import postgres_url

    url = None if request.param == "sqlite" else postgres_url(request.config)
    app = create_app(Settings(home=app_home, database_url=url), preload=[])
    with TestClient(app) as c:
        yield c


@pytest.fixture
def admin(client: TestClient, app_home: Path) -> TestClient:
    """``client`` signed in as the bootstrap admin, with its CSRF header set."""
    creds = admin_credentials(app_home)
    sign_in(client, email=creds["email"], password=creds["password"])
    return client
