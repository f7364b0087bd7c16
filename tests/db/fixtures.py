"""Database fixtures: a test that takes ``db_url`` or ``db`` runs on SQLite and on PostgreSQL.

SQLite: a fresh file per test. PostgreSQL (127.0.0.1:5432, user postgres, or
``LEVANT_TEST_PG_URL``): one fresh database per test session, dropped at the
end, and a fresh schema per test inside it. If PostgreSQL is unreachable those
tests are skipped with the reason, except under ``CI=true``, where they fail.

Imported by ``tests/db/conftest.py`` and ``tests/access/conftest.py``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from sqlalchemy.engine import make_url

from levant.db.migrate import upgrade
from levant.db.session import Database

PG_ADMIN_URL = os.environ.get("LEVANT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
_PG_KEY = pytest.StashKey[tuple[str | None, str]]()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _admin_conninfo() -> str:
    return make_url(PG_ADMIN_URL).set(drivername="postgresql").render_as_string(False)


def _session_database(config: pytest.Config) -> tuple[str | None, str]:
    """(URL of this session's PostgreSQL database, or None, and why not)."""
    if _PG_KEY in config.stash:
        return config.stash[_PG_KEY]
    name = f"levant_test_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())
        reason = f"PostgreSQL unreachable at {PG_ADMIN_URL} ({type(exc).__name__}: {detail})"
        config.stash[_PG_KEY] = (None, reason)
        return config.stash[_PG_KEY]

    def drop() -> None:
        with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    config.add_cleanup(drop)
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    config.stash[_PG_KEY] = (url.render_as_string(hide_password=False), "")
    return config.stash[_PG_KEY]


def postgres_url(config: pytest.Config) -> str:
    """A fresh, empty schema in this session's database, as a URL; skips (or fails in CI)."""
    base, reason = _session_database(config)
    if base is None:
        if _in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(f"{reason}; these tests run on SQLite only here (CI=true makes this fail)")
    schema = f"t_{secrets.token_hex(6)}"
    conninfo = make_url(base).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{base}?options={quote(f'-csearch_path={schema}')}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, not yet migrated: once SQLite, once PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'levant.db'}"
    return postgres_url(request.config)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database."""
    database = Database.from_url(db_url)
    upgrade(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def secret() -> bytes:
    return secrets.token_bytes(32)
