"""The two tracks: open weights download with licence and checksums; commercial models are
invisible without a grant and never exportable, by any route or command."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from levant.access.policy import grant
from levant.config import Settings
from tests.conftest import DEFAULT_MODEL, LiveServer

pytestmark = pytest.mark.slow

COMMERCIAL = "acme-large-test"


@pytest.fixture(scope="module")
def home(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home of its own (database, credentials, grants), its store filled from the shared one."""
    return tmp_path_factory.mktemp("tracks-home")


@pytest.fixture(scope="module")
def catalog_file(model_home: Path, home: Path) -> Path:
    """A user catalogue adding a commercial card served by the SmolLM2 weights."""
    from levant.catalog.catalog import load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.store import ModelStore

    shared = Settings(home=model_home)
    base = load_catalog(shared).get(DEFAULT_MODEL)
    local = [{"kind": "local", "path": str(ModelStore(shared).path(base))}]
    commercial = base.model_dump(mode="json")
    commercial.update(
        id=COMMERCIAL,
        aliases=[],
        track="commercial",
        licence="Proprietary",
        licence_url=None,
        sources=local,
    )
    path = home / "catalog.yaml"
    path.write_text(
        yaml.safe_dump({"models": [commercial, {"id": DEFAULT_MODEL, "extra_sources": local}]})
    )
    settings = Settings(home=home, catalog_path=path)
    for name in (DEFAULT_MODEL, COMMERCIAL):
        pull(load_catalog(settings).get(name), ModelStore(settings))
    return path


@pytest.fixture(scope="module")
def server(home: Path, catalog_file: Path) -> Iterator[LiveServer]:
    live = LiveServer(Settings(home=home, catalog_path=catalog_file), preload=[])
    live.start()
    yield live
    live.stop()


def _grant(server: LiveServer) -> None:
    platform = server.state.platform
    with platform.db.writing() as s:
        grant(s, platform.bootstrap.workspace_id, COMMERCIAL, actor="tests")


def test_commercial_model_is_invisible_without_grant(server: LiveServer) -> None:
    c = server.client()
    ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
    assert DEFAULT_MODEL in ids and COMMERCIAL not in ids
    assert c.get(f"/v1/models/{COMMERCIAL}").status_code == 404
    r = c.post(
        "/v1/chat/completions",
        json={
            "model": COMMERCIAL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
        },
    )
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"
    assert c.get(f"/v1/models/{COMMERCIAL}/weights").status_code == 404
    assert c.get(f"/v1/models/{COMMERCIAL}/weights/model.gguf").status_code == 404


def test_granted_commercial_model_is_usable_but_never_exportable(server: LiveServer) -> None:
    _grant(server)
    c = server.client()
    card = c.get(f"/v1/models/{COMMERCIAL}").json()
    assert card["track"] == "commercial"
    r = c.post(
        "/v1/chat/completions",
        json={
            "model": COMMERCIAL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
        },
    )
    assert r.status_code == 200, r.text
    for path in (f"/v1/models/{COMMERCIAL}/weights", f"/v1/models/{COMMERCIAL}/weights/model.gguf"):
        r = c.get(path)
        assert r.status_code == 403, path
        assert r.json()["code"] == "not_exportable"
        assert r.json()["object"] == "error"


def test_export_command_refuses_commercial(
    model_home: Path, catalog_file: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "LEVANT_HOME": str(model_home), "LEVANT_CATALOG_PATH": str(catalog_file)}
    out = subprocess.run(
        [sys.executable, "-m", "levant", "export", COMMERCIAL, str(tmp_path / "x")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "commercial" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x").exists()


def test_open_weights_download_with_licence_and_sha256(server: LiveServer) -> None:
    c = server.client()
    manifest = c.get(f"/v1/models/{DEFAULT_MODEL}/weights").json()
    assert manifest["licence"] == "Apache-2.0" and manifest["track"] == "open"
    assert "Apache-2.0" in manifest["licence_notice"]
    (entry,) = manifest["files"]
    digest = hashlib.sha256()
    with c.stream("GET", entry["url"]) as r:
        assert r.status_code == 200
        assert r.headers["x-levant-sha256"] == entry["sha256"]
        for chunk in r.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == entry["sha256"]
    assert c.get(f"/v1/models/{DEFAULT_MODEL}/weights/nope.bin").status_code == 404


def test_weights_need_a_key(server: LiveServer) -> None:
    import httpx

    assert httpx.get(f"{server.url}/v1/models/{DEFAULT_MODEL}/weights").status_code == 401


def test_export_command_writes_files_licence_and_sums(model_home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "LEVANT_HOME": str(model_home)}
    dest = tmp_path / "export"
    out = subprocess.run(
        [sys.executable, "-m", "levant", "export", DEFAULT_MODEL, str(dest)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    sums = (dest / "SHA256SUMS").read_text().split()
    assert hashlib.sha256((dest / "model.gguf").read_bytes()).hexdigest() == sums[0]
    assert "Apache-2.0" in (dest / "LICENCE.txt").read_text()


def test_grants_command(catalog_file: Path, tmp_path: Path) -> None:
    from levant.access.policy import workspace_grants
    from levant.access.startup import open_platform

    db = f"sqlite:///{tmp_path / 'levant.db'}"
    cli_home = tmp_path / "home"  # its own database and credentials file
    env = {
        **os.environ,
        "LEVANT_HOME": str(cli_home),
        "LEVANT_CATALOG_PATH": str(catalog_file),
        "LEVANT_DATABASE_URL": db,
    }

    def levant(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "levant", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert levant("grants", "add", COMMERCIAL).returncode == 0
    assert levant("grants", "add", DEFAULT_MODEL).returncode == 1  # open: nothing to grant
    platform = open_platform(Settings(home=cli_home, database_url=db))
    try:
        with platform.db.reading() as s:
            assert workspace_grants(s, platform.bootstrap.workspace_id) == {COMMERCIAL}
        assert levant("grants", "remove", COMMERCIAL).returncode == 0
        with platform.db.reading() as s:
            assert workspace_grants(s, platform.bootstrap.workspace_id) == frozenset()
        assert levant("audit", "verify").returncode == 0
    finally:
        platform.close()
