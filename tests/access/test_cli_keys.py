"""``levant keys create|list|revoke`` and ``levant audit verify`` against a real database."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer
from sqlalchemy import text
from typer.testing import CliRunner

from levant.access.keys import KeyRejected, authenticate
from levant.access.startup import open_platform
from levant.cli.keys import audit_app, keys_app, parse_expiry

app = typer.Typer()
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")


@pytest.fixture
def settings(db_url: str, home: Path) -> SimpleNamespace:
    return SimpleNamespace(home=home, database_url=db_url, secret=None)


def _run(settings: SimpleNamespace, *args: str, code: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args), obj=settings)
    assert result.exit_code == code, result.output
    return result.stdout, result.stderr


def _authenticate(settings: SimpleNamespace, key: str) -> str:
    platform = open_platform(settings)
    try:
        with platform.db.writing() as session:
            return authenticate(session, key, platform.secret).key_id
    finally:
        platform.close()


def test_create_prints_the_key_alone_on_the_last_line(settings: SimpleNamespace) -> None:
    out, err = _run(
        settings, "keys", "create", "--name", "ci", "--models", "a,b", "--expires", "30d"
    )
    assert "Levant created an administrator" in err  # first start, said once
    key = out.splitlines()[-1]
    assert re.fullmatch(r"lv-[A-Za-z0-9_-]{43}", key)
    key_id = _authenticate(settings, key)
    assert key_id in out

    out, err = _run(settings, "keys", "list")
    assert "Levant created an administrator" not in err
    assert key_id in out and key not in out and key[3:] not in out
    assert "a,b" in out and "active" in out

    out, _ = _run(settings, "keys", "revoke", key_id)
    assert "Revoked" in out
    assert re.search(rf"{key_id}.*revoked", _run(settings, "keys", "list")[0])
    with pytest.raises(KeyRejected, match="revoked"):
        _authenticate(settings, key)


def test_unknown_workspace_and_key_are_errors(settings: SimpleNamespace) -> None:
    _out, err = _run(settings, "keys", "create", "--name", "x", "--workspace", "nope", code=1)
    assert "nope" in err
    _out, err = _run(settings, "keys", "revoke", "key_nope", code=1)
    assert "key_nope" in err


def test_named_workspace(settings: SimpleNamespace) -> None:
    out, _ = _run(settings, "keys", "create", "--name", "x", "--workspace", "default")
    assert "in workspace default" in out


def test_audit_verify_passes_then_names_the_edited_row(
    settings: SimpleNamespace, db_url: str
) -> None:
    _run(settings, "keys", "create", "--name", "one")
    _run(settings, "keys", "create", "--name", "two")
    out, _ = _run(settings, "audit", "verify")
    assert "OK" in out

    platform = open_platform(settings)
    with platform.db.engine.begin() as conn:
        conn.execute(text('UPDATE audit_log SET details = \'{"name": "evil"}\' WHERE seq = 2'))
    platform.close()
    out, err = _run(settings, "audit", "verify", code=1)
    assert "seq 2" in out and "seq 2" in err


def test_parse_expiry() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2w", now) == now + timedelta(weeks=2)
    assert parse_expiry("2027-03-01", now) == datetime(2027, 3, 1, tzinfo=UTC)
    assert parse_expiry("2027-03-01T10:00:00+01:00", now) == datetime(2027, 3, 1, 9, tzinfo=UTC)
    for bad in ("soon", "2020-01-01", "-1d"):
        with pytest.raises(typer.BadParameter):
            parse_expiry(bad, now)
