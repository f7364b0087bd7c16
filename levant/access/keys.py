"""API keys: ``lv-`` + 32 random bytes, stored only as HMAC-SHA256 under the server secret.

The plaintext exists once, in the ``CreatedKey`` handed back by ``create_key``;
the database keeps its HMAC (unique index, looked up directly) and an
8-character display prefix. Nothing here logs, audits or raises with the key in it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from levant.access import audit
from levant.access.principal import Principal, Scopes
from levant.db.tables import ApiKey
from levant.db.types import utcnow

KEY_PREFIX = "lv-"
PREFIX_CHARS = 8
MAX_KEY_CHARS = 128
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""last_used_at is written at most this often per key, not on every request."""

RejectReason = Literal["malformed", "unknown", "revoked", "expired"]
KeyStatus = Literal["active", "revoked", "expired"]


class KeyRejected(Exception):
    """Authentication failed; ``reason`` is safe to log and to show the caller."""

    def __init__(self, reason: RejectReason, key_id: str | None = None) -> None:
        super().__init__(f"API key rejected: {reason}")
        self.reason: RejectReason = reason
        self.key_id = key_id


class KeyNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Everything about a key except the key."""

    id: str
    workspace_id: str
    name: str
    prefix: str
    allowed_models: list[str] | None
    allowed_endpoints: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def display(self) -> str:
        return f"{KEY_PREFIX}{self.prefix}…"

    def status(self, now: datetime | None = None) -> KeyStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class CreatedKey:
    info: KeyInfo
    key: str = field(repr=False)
    """The plaintext: show it once, then forget it."""


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str, secret: bytes) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def create_key(
    session: Session,
    secret: bytes,
    *,
    workspace_id: str,
    name: str,
    actor: str,
    allowed_models: Sequence[str] | None = None,
    allowed_endpoints: Sequence[str] | None = None,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> CreatedKey:
    """Mint a key in ``workspace_id`` and audit it, in the session's transaction."""
    key = generate_key()
    row = ApiKey(
        workspace_id=workspace_id,
        name=name,
        prefix=key[len(KEY_PREFIX) : len(KEY_PREFIX) + PREFIX_CHARS],
        key_hash=hash_key(key, secret),
        allowed_models=None if allowed_models is None else sorted(set(allowed_models)),
        allowed_endpoints=None if allowed_endpoints is None else sorted(set(allowed_endpoints)),
        created_at=now or utcnow(),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        action="key.created",
        actor=actor,
        target=f"key:{row.id}",
        details={
            "workspace_id": workspace_id,
            "name": name,
            "prefix": row.prefix,
            "allowed_models": row.allowed_models,
            "allowed_endpoints": row.allowed_endpoints,
            "expires_at": None if expires_at is None else expires_at.isoformat(),
        },
        now=now,
    )
    return CreatedKey(info=_info(row), key=key)


def list_keys(session: Session, workspace_id: str | None = None) -> list[KeyInfo]:
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if workspace_id is not None:
        query = query.where(ApiKey.workspace_id == workspace_id)
    return [_info(row) for row in session.scalars(query)]


def get_key(session: Session, key_id: str) -> KeyInfo:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise KeyNotFound(key_id)
    return _info(row)


def revoke_key(
    session: Session, key_id: str, *, actor: str, now: datetime | None = None
) -> KeyInfo:
    """Revoke a key (audited). Revoking a revoked key changes nothing and audits nothing."""
    row = session.get(ApiKey, key_id, with_for_update=True)
    if row is None:
        raise KeyNotFound(key_id)
    if row.revoked_at is None:
        row.revoked_at = now or utcnow()
        session.flush()
        audit.append(
            session,
            action="key.revoked",
            actor=actor,
            target=f"key:{row.id}",
            details={"workspace_id": row.workspace_id, "name": row.name, "prefix": row.prefix},
            now=now,
        )
    return _info(row)


def well_formed(presented: str) -> bool:
    return presented.startswith(KEY_PREFIX) and len(presented) <= MAX_KEY_CHARS


def authenticate(
    session: Session, presented: str, secret: bytes, *, now: datetime | None = None
) -> Principal:
    """The Principal for a presented key, or ``KeyRejected`` saying why not.

    May write ``last_used_at`` (at most once a minute per key): the caller commits.
    """
    if not well_formed(presented):
        raise KeyRejected("malformed")
    return authenticate_digest(session, hash_key(presented, secret), now=now)[0]


def authenticate_digest(
    session: Session, digest: str, *, now: datetime | None = None
) -> tuple[Principal, datetime | None]:
    """``authenticate`` for a key already hashed; also returns the key's expiry."""
    row = session.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).one_or_none()
    # The index lookup already matched; compare_digest keeps the final check
    # constant-time should the lookup ever become a looser one.
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        raise KeyRejected("unknown")
    now = now or utcnow()
    if row.revoked_at is not None:
        raise KeyRejected("revoked", row.id)
    if row.expires_at is not None and row.expires_at <= now:
        raise KeyRejected("expired", row.id)
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == row.id,
                or_(
                    ApiKey.last_used_at.is_(None),
                    ApiKey.last_used_at <= now - LAST_USED_RESOLUTION,
                ),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
    principal = Principal(
        workspace_id=row.workspace_id,
        key_id=row.id,
        scopes=Scopes.of(row.allowed_models, row.allowed_endpoints),
    )
    return principal, row.expires_at


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        workspace_id=row.workspace_id,
        name=row.name,
        prefix=row.prefix,
        allowed_models=row.allowed_models,
        allowed_endpoints=row.allowed_endpoints,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )
