"""Engines from a URL: SQLite under LEVANT_HOME by default, PostgreSQL when the URL says so.

Every connection gets the same settings here (SQLite: WAL, foreign keys, a busy
timeout, BEGIN issued by us; PostgreSQL: psycopg 3, UTC session time zone), so
no other module needs to know which database it is talking to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url

IMMEDIATE = "levant_immediate"
"""Execution option: on SQLite, open the transaction with BEGIN IMMEDIATE (take the
write lock up front, so a read-then-write transaction cannot fail half-way)."""

BUSY_TIMEOUT_MS = 10_000


def default_url(home: Path) -> str:
    return f"sqlite:///{home / 'levant.db'}"


def resolve_url(home: Path, database_url: str | None) -> URL:
    """The URL Levant should use: ``database_url`` if set, else SQLite in ``home``.

    ``postgres://`` and ``postgresql://`` are read as PostgreSQL through psycopg 3.
    """
    url = make_url(database_url or default_url(home))
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    url = make_url(url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, **kwargs)
    if backend == "postgresql":
        return _postgres_engine(url, **kwargs)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
        **kwargs,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module, which skips it before SELECTs
        # and SAVEPOINTs; _on_begin below issues it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _postgres_engine(url: URL, **kwargs: Any) -> Engine:
    if url.drivername != "postgresql+psycopg":
        url = url.set(drivername="postgresql+psycopg")
    # Day boundaries in rollups are UTC days; keep any options the URL already has.
    existing = url.query.get("options", ())
    parts = [existing] if isinstance(existing, str) else list(existing)
    options = " ".join([*parts, "-c timezone=UTC"])
    url = url.update_query_dict({"options": options})
    return create_engine(url, pool_pre_ping=True, **kwargs)
