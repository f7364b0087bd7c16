"""Schema migrations, run programmatically: ``upgrade(url)`` at start-up, no alembic.ini.

Concurrent start-ups are safe: the upgrade runs in one transaction under a lock
(an advisory lock on PostgreSQL, BEGIN IMMEDIATE on SQLite), so the second
process waits and then finds the schema already at head. On SQLite a file lock
beside the database is held around the whole upgrade as well: connecting runs
``PRAGMA journal_mode=WAL``, which can fail at once with "database is locked"
(no busy wait) while another start-up is converting a new file.

Developers: ``python -m levant.db revision "message" [URL]`` autogenerates a
revision against a database that is at head; ``upgrade [URL]`` applies them.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from levant.db.engine import IMMEDIATE, make_engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x6C6576616E74  # "levant"


def alembic_config(url: str | URL | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(target: str | URL | Engine, revision: str = "head") -> None:
    """Bring the database at ``target`` up to ``revision`` (default: the latest)."""
    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        with _sqlite_file_lock(engine), engine.connect() as conn:
            conn.execution_options(**{IMMEDIATE: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
    finally:
        if engine is not target:
            engine.dispose()


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Hold ``<database>.migrate.lock`` (SQLite files only; a no-op elsewhere)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one open file each: threads exclude each other too
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
