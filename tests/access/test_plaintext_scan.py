"""The plaintext key appears nowhere: not in any column, the database files, a dump, or the logs."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from levant.access.keys import KeyRejected, authenticate, create_key, hash_key, revoke_key
from levant.access.tenancy import BootstrapResult
from levant.db.session import Database
from levant.db.tables import Base


def _admin_key(home: Path) -> str:
    match = re.search(r"^api_key: (\S+)$", (home / "admin-credentials").read_text(), re.M)
    assert match
    return match.group(1)


def _dump_every_column(db: Database) -> str:
    parts: list[str] = []
    with db.reading() as session:
        for table in [*Base.metadata.sorted_tables]:
            for row in session.execute(select(table)):
                parts.append(repr(tuple(row)))
        parts.append(repr(session.execute(text("SELECT * FROM alembic_version")).all()))
    return "\n".join(parts)


def _raw_storage(db: Database) -> bytes:
    """The bytes the database keeps: the SQLite files, or a pg_dump of our schema."""
    url = db.engine.url
    if db.dialect == "sqlite":
        assert url.database
        return b"".join(
            p.read_bytes() for p in Path(url.database).parent.glob(Path(url.database).name + "*")
        )
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        return b""
    with db.reading() as session:
        schema = session.execute(text("SELECT current_schema()")).scalar_one()
    conninfo = make_url(url).set(drivername="postgresql", query={}).render_as_string(False)
    done = subprocess.run(
        [pg_dump, "--data-only", f"--schema={schema}", conninfo], capture_output=True, check=False
    )
    if done.returncode != 0:  # e.g. a pg_dump older than the server; the SELECT dump still ran
        return b""
    assert b"COPY" in done.stdout
    return done.stdout


def test_plaintext_keys_are_stored_nowhere(
    db: Database,
    home: Path,
    secret: bytes,
    bootstrapped: BootstrapResult,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # SQL and its parameters
    keys = [_admin_key(home)]
    messages: list[str] = []
    with db.writing() as session:
        for i in range(3):
            created = create_key(
                session,
                secret,
                workspace_id=bootstrapped.workspace_id,
                name=f"k{i}",
                actor="tester",
                allowed_models=["m"],
            )
            messages.append(repr(created))
            keys.append(created.key)
    with db.writing() as session:
        for key in keys:
            authenticate(session, key, secret)
        revoke_key(
            session,
            session.execute(text("SELECT id FROM api_keys")).scalars().first() or "",
            actor="tester",
        )
    for key in keys:
        for wrong in (b"w" * 32, secret):
            try:
                with db.writing() as session:
                    authenticate(session, key, wrong)
            except KeyRejected as exc:
                messages.append(str(exc))
                messages.append(repr(exc))

    dump = _dump_every_column(db)
    raw = _raw_storage(db)
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "INSERT INTO api_keys" in caplog.text  # the SQL log really was captured
    for key in keys:
        body = key.removeprefix("lv-")
        assert hash_key(key, secret) in dump  # the dump really covers the key rows
        for haystack in (dump, logs, "\n".join(messages)):
            assert body not in haystack
        assert body.encode() not in raw
