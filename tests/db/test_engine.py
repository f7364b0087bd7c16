"""Engines: URL resolution, SQLite connection settings, UTC timestamps on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import StatementError

from levant.db.engine import make_engine, resolve_url
from levant.db.session import Database
from levant.db.tables import Organisation


def test_default_url_is_sqlite_in_home(tmp_path: Path) -> None:
    url = resolve_url(tmp_path, None)
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(tmp_path / "levant.db")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_postgres_urls_use_psycopg3(tmp_path: Path, scheme: str) -> None:
    url = resolve_url(tmp_path, f"{scheme}://u:p@db.example:5432/levant")
    assert url.drivername == "postgresql+psycopg"
    assert url.database == "levant"


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        make_engine("mysql://x@localhost/db")


def test_sqlite_runs_in_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'levant.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
    finally:
        engine.dispose()


def test_sqlite_rolls_back_whole_transactions(tmp_path: Path) -> None:
    """We issue BEGIN ourselves; a rollback must undo every statement since it."""
    db = Database.from_url(f"sqlite:///{tmp_path / 'levant.db'}")
    try:
        with db.engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        with pytest.raises(RuntimeError), db.writing() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError
        with db.reading() as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar() == 0
    finally:
        db.dispose()


def test_timestamps_come_back_as_the_same_utc_instant(db: Database) -> None:
    cet = timezone(timedelta(hours=1))
    moment = datetime(2026, 3, 1, 0, 30, 15, 123456, tzinfo=cet)
    with db.writing() as session:
        session.add(Organisation(id="org_t", name="t", created_at=moment))
    with db.reading() as session:
        stored = session.scalars(select(Organisation.created_at)).one()
    assert stored == moment
    assert stored.tzinfo == UTC


def test_naive_timestamps_are_refused(db: Database) -> None:
    with pytest.raises(StatementError, match="naive"), db.writing() as session:
        session.add(Organisation(id="org_n", name="n", created_at=datetime(2026, 1, 1)))
        session.flush()
