"""API key lifecycle: create → authenticate → revoke → rejected; expiry; wrong secret; scopes."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from levant.access.keys import (
    KeyNotFound,
    KeyRejected,
    authenticate,
    create_key,
    generate_key,
    get_key,
    hash_key,
    list_keys,
    revoke_key,
)
from levant.access.principal import Principal
from levant.access.tenancy import BootstrapResult
from levant.db.session import Database
from levant.db.tables import ApiKey, AuditEntry
from levant.db.types import utcnow


def _create(db: Database, secret: bytes, workspace_id: str, **kwargs: Any) -> tuple[str, str]:
    with db.writing() as session:
        created = create_key(
            session, secret, workspace_id=workspace_id, name="test", actor="tester", **kwargs
        )
    return created.info.id, created.key


def _authenticate(db: Database, key: str, secret: bytes, now: datetime | None = None) -> Principal:
    with db.writing() as session:
        return authenticate(session, key, secret, now=now)


def test_keys_are_lv_plus_32_random_bytes() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert re.fullmatch(r"lv-[A-Za-z0-9_-]{43}", key)


def test_lifecycle(db: Database, secret: bytes, bootstrapped: BootstrapResult) -> None:
    key_id, key = _create(db, secret, bootstrapped.workspace_id, allowed_models=["m1", "m2"])
    principal = _authenticate(db, key, secret)
    assert principal.workspace_id == bootstrapped.workspace_id
    assert principal.key_id == key_id
    assert principal.scopes.allows_model("m1")
    assert not principal.scopes.allows_model("m3")
    assert principal.scopes.allows_endpoint("/v1/chat/completions")

    with db.writing() as session:
        info = revoke_key(session, key_id, actor="tester")
    assert info.status() == "revoked"
    with pytest.raises(KeyRejected) as rejected:
        _authenticate(db, key, secret)
    assert rejected.value.reason == "revoked"
    assert key not in str(rejected.value)


def test_expired_key_is_rejected(
    db: Database, secret: bytes, bootstrapped: BootstrapResult
) -> None:
    expires = utcnow() + timedelta(hours=1)
    _key_id, key = _create(db, secret, bootstrapped.workspace_id, expires_at=expires)
    _authenticate(db, key, secret)
    with pytest.raises(KeyRejected) as rejected:
        _authenticate(db, key, secret, now=expires + timedelta(seconds=1))
    assert rejected.value.reason == "expired"


def test_wrong_secret_rejects(db: Database, secret: bytes, bootstrapped: BootstrapResult) -> None:
    _key_id, key = _create(db, secret, bootstrapped.workspace_id)
    with pytest.raises(KeyRejected) as rejected:
        _authenticate(db, key, secrets.token_bytes(32))
    assert rejected.value.reason == "unknown"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), "unknown"),
        (lambda k: k[3:], "malformed"),
        (lambda k: k + "x" * 200, "malformed"),
        (lambda k: "", "malformed"),
    ],
)
def test_altered_keys_are_rejected(
    db: Database,
    secret: bytes,
    bootstrapped: BootstrapResult,
    mutate: Callable[[str], str],
    reason: str,
) -> None:
    _key_id, key = _create(db, secret, bootstrapped.workspace_id)
    with pytest.raises(KeyRejected) as rejected:
        _authenticate(db, mutate(key), secret)
    assert rejected.value.reason == reason


def test_last_used_is_written_at_most_once_a_minute(
    db: Database, secret: bytes, bootstrapped: BootstrapResult
) -> None:
    key_id, key = _create(db, secret, bootstrapped.workspace_id)
    t0 = utcnow()
    _authenticate(db, key, secret, now=t0)
    _authenticate(db, key, secret, now=t0 + timedelta(seconds=30))
    with db.reading() as session:
        assert get_key(session, key_id).last_used_at == t0
    _authenticate(db, key, secret, now=t0 + timedelta(minutes=2))
    with db.reading() as session:
        assert get_key(session, key_id).last_used_at == t0 + timedelta(minutes=2)


def test_only_the_hash_and_a_display_prefix_are_stored(
    db: Database, secret: bytes, bootstrapped: BootstrapResult
) -> None:
    key_id, key = _create(db, secret, bootstrapped.workspace_id)
    with db.reading() as session:
        row = session.get(ApiKey, key_id)
        assert row is not None
        assert row.key_hash == hash_key(key, secret)
        assert row.prefix == key[3:11]
        info = get_key(session, key_id)
    assert info.display == f"lv-{key[3:11]}…"


def test_key_hash_is_unique(db: Database, secret: bytes, bootstrapped: BootstrapResult) -> None:
    key_id, _key = _create(db, secret, bootstrapped.workspace_id)
    with pytest.raises(IntegrityError), db.writing() as session:
        original = session.get(ApiKey, key_id)
        assert original is not None
        session.add(
            ApiKey(
                workspace_id=bootstrapped.workspace_id,
                name="dup",
                prefix="x",
                key_hash=original.key_hash,
            )
        )
        session.flush()


def test_create_and_revoke_are_audited_once(
    db: Database, secret: bytes, bootstrapped: BootstrapResult
) -> None:
    key_id, _key = _create(db, secret, bootstrapped.workspace_id)
    for _ in range(2):
        with db.writing() as session:
            revoke_key(session, key_id, actor="tester")
    with db.reading() as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.target == f"key:{key_id}").order_by(AuditEntry.seq)
        ).all()
    assert [(r.action, r.actor) for r in rows] == [
        ("key.created", "tester"),
        ("key.revoked", "tester"),
    ]


def test_list_and_missing_keys(db: Database, secret: bytes, bootstrapped: BootstrapResult) -> None:
    key_id, _key = _create(db, secret, bootstrapped.workspace_id)
    with db.reading() as session:
        listed = list_keys(session, bootstrapped.workspace_id)
        assert key_id in [info.id for info in listed]
        assert list_keys(session, "ws_nope") == []
    with pytest.raises(KeyNotFound), db.writing() as session:
        revoke_key(session, "key_nope", actor="tester")
