"""Zero retention: a canary sent through every path of a ZDR workspace is written nowhere.

A unique canary goes through chat (streamed and not), error paths (a 422 and a
malformed body that contain it), a stream cancelled mid-way and the chat app's
conversation store (refused). Then the server's whole home (database, WAL,
secrets, model store), every log record the process emitted (captured to a file
at DEBUG), files created in the temp directory during the test, and every text
column of every table (read back through SQL, so PostgreSQL is covered too)
are scanned: the canary is nowhere. The same flow in a standard workspace
stores the chat-app conversation, and the same scan finds it there — so the
scan is able to find what it looks for.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import String, Text, inspect, select, text

from levant.access.policy import set_residency
from levant.config import Settings
from levant.db.tables import Base
from tests.conftest import DEFAULT_MODEL, LiveServer, isolated_home

pytestmark = pytest.mark.slow


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def server(
    request: pytest.FixtureRequest, model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    from tests.db.fixtures import postgres_url

    home, catalog = isolated_home(tmp_path_factory.mktemp(f"zdr-{request.param}"), model_home)
    url = postgres_url(request.config) if request.param == "postgresql" else None
    live = LiveServer(
        Settings(home=home, catalog_path=catalog, database_url=url), preload=[DEFAULT_MODEL]
    )
    live.start()
    yield live
    live.stop()


@pytest.fixture()
def log_file(tmp_path: Path) -> Iterator[Path]:
    """Every log record of the process, at DEBUG, in a file the scan reads."""
    path = tmp_path / "levant.log"
    handler = logging.FileHandler(path)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    root.setLevel(old_level)
    handler.close()


def _retention(server: LiveServer, mode: str) -> None:
    platform = server.state.platform
    with platform.db.writing() as session:
        set_residency(session, platform.bootstrap.workspace_id, None, mode, actor="tests")


def _exercise(server: LiveServer, canary: str) -> dict[str, int]:
    """Send the canary through every path; return the status codes seen."""
    messages = [{"role": "user", "content": f"Repeat after me: {canary}"}]
    body = {"model": DEFAULT_MODEL, "messages": messages, "max_tokens": 12, "temperature": 0}
    seen: dict[str, int] = {}
    with server.client() as client:
        seen["chat"] = client.post("/v1/chat/completions", json=body).status_code
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            r.read()
            seen["stream"] = r.status_code
        bad = {**body, "temperature": f"hot {canary}"}
        seen["invalid"] = client.post("/v1/chat/completions", json=bad).status_code
        raw = b'{"model": "' + canary.encode() + b'", "messages": [}'
        seen["malformed"] = client.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        ).status_code
        long = {**body, "max_tokens": 200, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=long) as r:
            for _ in r.iter_lines():
                break  # leave after the first event: a cancelled stream
            seen["cancelled"] = r.status_code
        created = client.post(
            "/api/conversations", json={"name": f"chat {canary}", "model": DEFAULT_MODEL}
        )
        seen["conversation"] = created.status_code
        if created.status_code == 201:
            cid = created.json()["id"]
            seen["message"] = client.post(
                f"/api/conversations/{cid}/messages",
                json={"role": "user", "content": messages[0]["content"]},
            ).status_code
    server.state.usage.flush()
    time.sleep(0.5)  # the cancelled request's metering runs as the stream closes
    server.state.usage.flush()
    return seen


def _files_with(root: Path, needle: bytes, since: float | None = None) -> list[str]:
    found = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.stat()
                if since is not None and st.st_mtime < since:
                    continue
                if st.st_size > 256 * 1024 * 1024:
                    continue
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def _rows_with(server: LiveServer, needle: str) -> list[str]:
    """Every text column of every table, read back through SQL."""
    import levant.db.conversation_tables  # noqa: F401  (registers its tables)

    found = []
    engine = server.state.platform.db.engine
    names = set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name not in names:
                continue
            cols = [c for c in table.columns if isinstance(c.type, String | Text)]
            for col in cols:
                hit = conn.execute(
                    select(col).where(col.contains(needle, autoescape=True)).limit(1)
                ).first()
                if hit is not None:
                    found.append(f"{table.name}.{col.name}")
        # JSON columns and anything else stored as text: one crude pass per table.
        for table in names:
            rows = conn.execute(text(f'SELECT * FROM "{table}"')).all()
            if any(needle in repr(row) for row in rows):
                found.append(table)
    return found


def _scan(server: LiveServer, canary: str, log_file: Path, started: float) -> list[str]:
    needle = canary.encode()
    home = server.state.settings.home
    hits = _files_with(home, needle)
    hits += _files_with(Path(tempfile.gettempdir()), needle, since=started)
    if needle in log_file.read_bytes():
        hits.append(str(log_file))
    hits += _rows_with(server, canary)
    return hits


def _cached_blocks(server: LiveServer) -> int:
    return sum(
        s.engine.engine.kv.pool.num_cached_blocks for s in server.state.registry.generators()
    )


def test_zero_retention_writes_the_canary_nowhere(server: LiveServer, log_file: Path) -> None:
    _retention(server, "zero")
    canary = f"CANARY-{uuid.uuid4().hex}"
    started = time.time() - 1
    cached_before = _cached_blocks(server)
    seen = _exercise(server, canary)
    assert seen["chat"] == 200 and seen["stream"] == 200 and seen["cancelled"] == 200
    assert seen["invalid"] == 422 and seen["malformed"] == 400
    assert seen["conversation"] == 403  # stateful: refused in zero retention
    # The usage rows are there (metering continues) but carry no text.
    hits = _scan(server, canary, log_file, started)
    assert hits == [], f"canary found in {hits}"
    # Nothing of these prompts is findable in the engine's prefix cache either.
    assert _cached_blocks(server) == cached_before


def test_standard_retention_stores_it_so_the_scan_works(server: LiveServer, log_file: Path) -> None:
    _retention(server, "standard")
    canary = f"CANARY-{uuid.uuid4().hex}"
    started = time.time() - 1
    seen = _exercise(server, canary)
    assert seen["conversation"] == 201 and seen["message"] == 201
    hits = _scan(server, canary, log_file, started)
    assert any("conversation" in h for h in hits), hits


def test_zero_retention_workspace_uses_only_zero_retention_deployments() -> None:
    """An upstream that keeps text (the default for upstreams) is outside a ZDR policy."""
    from levant.routing import Deployment, ResidencyPolicy, Router

    keeps = Deployment(
        name="vendor",
        model="m",
        region="eu-west-paris",
        backend="upstream",
        upstream={"url": "http://vendor.test"},  # type: ignore[arg-type]
    )
    zdr_vendor = keeps.model_copy(update={"name": "vendor-zdr", "zero_retention": True})
    router = Router([keeps, zdr_vendor])
    zero = ResidencyPolicy.from_workspace(None, "zero")
    assert [d.name for d in router.candidates("m", zero)] == ["vendor-zdr"]
    standard = ResidencyPolicy.from_workspace(None, "standard")
    assert {d.name for d in router.candidates("m", standard)} == {"vendor", "vendor-zdr"}
