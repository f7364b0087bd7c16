"""Shared fixtures: a test model store with the real SmolLM2 weights, and a live server.

The store lives at ``$LEVANT_TEST_HOME`` (``make test`` sets it to
``.levant-test`` in the checkout) so the 98 MB model is fetched once, not per run.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from levant.config import Settings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "smollm2-135m-instruct"


def test_home() -> Path:
    return Path(os.environ.get("LEVANT_TEST_HOME", REPO / ".levant-test"))


@pytest.fixture(scope="session")
def model_home() -> Path:
    """A LEVANT_HOME whose store holds the default model (pulled on first use)."""
    from levant.catalog.catalog import load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.store import ModelStore

    home = test_home()
    settings = Settings(home=home)
    card = load_catalog(settings).get(DEFAULT_MODEL)
    store = ModelStore(settings)
    if not store.is_pulled(card):
        pull(card, store)
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn serving a real Levant app on a free loopback port, in a thread."""

    def __init__(self, settings: Settings, preload: list[str]) -> None:
        import uvicorn

        from levant.api.app import create_app

        self.app = create_app(settings, preload=preload)
        self.state = self.app.state.levant
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = self.create_key("tests")
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def create_key(self, name: str, **scopes: Any) -> str:
        """A fresh API key in the default workspace (plaintext, for the client under test)."""
        from levant.access.keys import create_key

        platform = self.state.platform
        with platform.db.writing() as session:
            created = create_key(
                session,
                platform.secret,
                name=name,
                actor="tests",
                workspace_id=platform.bootstrap.workspace_id,
                **scopes,
            )
        return created.key

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    def client(self) -> httpx.Client:
        """An httpx client with this server's base URL and a valid key."""
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=120)

    def start(self, timeout: float = 120.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(model_home: Path) -> Iterator[LiveServer]:
    settings = Settings(home=model_home, max_request_bytes=256 * 1024)
    server = LiveServer(settings, preload=[DEFAULT_MODEL])
    server.start()
    yield server
    server.stop()


def isolated_home(base: Path, model_home: Path, **card_overrides: Any) -> tuple[Path, Path]:
    """A fresh LEVANT_HOME (own database, secret, credentials) whose store holds the default
    model, taken from the shared test store by a local source. Returns (home, catalog file)."""
    import yaml

    from levant.catalog.catalog import load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.store import ModelStore

    shared = Settings(home=model_home)
    card = load_catalog(shared).get(DEFAULT_MODEL)
    source = {"kind": "local", "path": str(ModelStore(shared).path(card))}
    base.mkdir(parents=True, exist_ok=True)
    catalog = base / "catalog.yaml"
    entry = {"id": DEFAULT_MODEL, "extra_sources": [source], **card_overrides}
    catalog.write_text(yaml.safe_dump({"models": [entry]}))
    settings = Settings(home=base, catalog_path=catalog)
    pull(load_catalog(settings).get(DEFAULT_MODEL), ModelStore(settings))
    return base, catalog


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def platform_server(
    request: pytest.FixtureRequest, model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A live server on its own home, once with SQLite and once with PostgreSQL."""
    from tests.db.fixtures import postgres_url

    home, catalog = isolated_home(tmp_path_factory.mktemp(f"home-{request.param}"), model_home)
    url = None if request.param == "sqlite" else postgres_url(request.config)
    settings = Settings(home=home, catalog_path=catalog, database_url=url)
    server = LiveServer(settings, preload=[DEFAULT_MODEL])
    server.start()
    yield server
    server.stop()
