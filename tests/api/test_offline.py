"""Air-gapped mode: with ``LEVANT_OFFLINE=1`` nothing connects outside loopback.

A socket guard wraps ``socket.connect``/``connect_ex``/``getaddrinfo`` for the whole
process while a server starts, loads the model, answers chat (streamed and not),
lists models and serves the app's pages; every destination is recorded and any
non-loopback one fails the test. A pull from a network source is refused with
a message naming offline mode, before any connection is tried.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from levant.config import Settings
from tests.conftest import DEFAULT_MODEL, LiveServer, isolated_home

pytestmark = pytest.mark.slow


def _loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a name that is not localhost: resolving it would go out


class SocketGuard:
    def __init__(self) -> None:
        self.outside: list[str] = []
        self.loopback = 0

    def check(self, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(address, str | bytes) and not isinstance(address, tuple):
            return  # a unix socket path: local by construction
        if _loopback(host):
            self.loopback += 1
        else:
            self.outside.append(str(address))
            raise ConnectionRefusedError(f"socket guard: {address} is outside loopback")


@pytest.fixture()
def guard(monkeypatch: pytest.MonkeyPatch) -> SocketGuard:
    g = SocketGuard()
    connect, connect_ex, getaddrinfo = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.getaddrinfo,
    )

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            g.check(address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            g.check(address)
        return connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        g.check((host, 0))
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return g


@pytest.fixture()
def offline_server(guard: SocketGuard, model_home: Path, tmp_path: Path) -> Iterator[LiveServer]:
    home, catalog = isolated_home(tmp_path / "home", model_home)
    server = LiveServer(
        Settings(home=home, catalog_path=catalog, offline=True), preload=[DEFAULT_MODEL]
    )
    server.start()
    yield server
    server.stop()


def test_serving_and_chatting_stay_on_loopback(
    offline_server: LiveServer, guard: SocketGuard
) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 6,
    }
    with offline_server.client() as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            assert r.read().rstrip().endswith(b"data: [DONE]")
        assert client.get("/v1/models").status_code == 200
        assert client.get("/").status_code == 200
    assert guard.outside == []
    assert guard.loopback > 0  # the guard saw the test's own connections: it is in place


def test_a_network_pull_is_refused_offline(
    guard: SocketGuard, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from levant.catalog.catalog import load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.sources import SourceUnavailable
    from levant.catalog.store import ModelStore

    settings = Settings(home=tmp_path / "empty", offline=True)
    card = load_catalog(settings).get(DEFAULT_MODEL)
    with pytest.raises(SourceUnavailable, match="offline"):
        pull(card, ModelStore(settings))
    assert guard.outside == []
