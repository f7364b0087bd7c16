"""Browser sessions for the chat app and console: sign in, resolve a cookie, sign out.

A member signs in with email and password (argon2, ``passwords.py``), or anyone
with an API key signs in with the key: either way a ``web_sessions`` row keyed by
the HMAC of a random token. The cookie carries the token; the database never
does. The CSRF token is derived from the session token, so it cannot be forged
without it (signed double-submit). Nothing here knows HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from levant.access.keys import KeyRejected, authenticate
from levant.access.passwords import hash_password, verify_password
from levant.access.principal import Principal, Scopes
from levant.db.conversation_tables import WebSession
from levant.db.tables import ApiKey, Member, User, Workspace
from levant.db.types import utcnow

SESSION_LIFETIME = timedelta(days=7)
MAX_TOKEN_CHARS = 128
Role = Literal["admin", "member", "key"]

# Verified when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = hash_password(secrets.token_urlsafe(18))


class SignInFailed(Exception):
    """Wrong credentials; deliberately says nothing about which part was wrong."""


class SessionInvalid(Exception):
    """The cookie names no live session (unknown, expired, or its key was revoked)."""


@dataclass(frozen=True, slots=True)
class WebIdentity:
    """Who a session is: the principal the API sees, plus what the console shows."""

    principal: Principal
    session_id: str
    role: Role
    display: str
    """The member's email, or the key's name and prefix."""
    workspace_name: str
    retention: str


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str
    identity: WebIdentity
    expires_at: datetime


def token_hash(token: str, secret: bytes) -> str:
    return hmac.new(secret, b"session:" + token.encode(), hashlib.sha256).hexdigest()


def csrf_token(token: str, secret: bytes) -> str:
    return hmac.new(secret, b"csrf:" + token.encode(), hashlib.sha256).hexdigest()


def check_csrf(token: str, presented: str | None, secret: bytes) -> bool:
    return presented is not None and hmac.compare_digest(presented, csrf_token(token, secret))


def sign_in_password(
    session: Session, secret: bytes, email: str, password: str, workspace: str | None = None
) -> NewSession:
    """A session for a workspace member (their oldest membership unless ``workspace`` is named)."""
    query_user = select(User).where(func.lower(User.email) == email.strip().lower())
    user = session.scalars(query_user).first()
    if user is None or user.password_hash is None:
        verify_password(_DUMMY_HASH, password)
        raise SignInFailed
    if not verify_password(user.password_hash, password):
        raise SignInFailed
    query = select(Member).join(Workspace).where(Member.user_id == user.id)
    if workspace:
        query = query.where((Workspace.id == workspace) | (Workspace.name == workspace))
    member = session.scalars(query.order_by(Member.created_at)).first()
    if member is None:
        raise SignInFailed
    return _create(session, secret, member.workspace_id, user_id=user.id)


def sign_in_key(session: Session, secret: bytes, key: str) -> NewSession:
    """A session acting as an API key: same workspace, same scopes, ends when the key does."""
    try:
        principal = authenticate(session, key.strip(), secret)
    except KeyRejected:
        raise SignInFailed from None
    return _create(session, secret, principal.workspace_id, key_id=principal.key_id)


def resolve(
    session: Session, secret: bytes, token: str, now: datetime | None = None
) -> WebIdentity:
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise SessionInvalid
    row = session.scalars(
        select(WebSession).where(WebSession.token_hash == token_hash(token, secret))
    ).one_or_none()
    if row is None or row.expires_at <= (now or utcnow()):
        raise SessionInvalid
    return _identity(session, row, now or utcnow())


def sign_out(session: Session, secret: bytes, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == token_hash(token, secret)))


def purge_expired(session: Session, now: datetime | None = None) -> int:
    result = session.execute(delete(WebSession).where(WebSession.expires_at <= (now or utcnow())))
    return int(getattr(result, "rowcount", 0) or 0)


def identity_for(session: Session, principal: Principal, role: Role, display: str) -> WebIdentity:
    """The identity of a caller without a session (a Bearer key, or auth turned off)."""
    workspace = session.get(Workspace, principal.workspace_id)
    if workspace is None:
        raise SessionInvalid
    return WebIdentity(
        principal=principal,
        session_id="",
        role=role,
        display=display,
        workspace_name=workspace.name,
        retention=workspace.retention,
    )


def _create(
    session: Session,
    secret: bytes,
    workspace_id: str,
    *,
    user_id: str | None = None,
    key_id: str | None = None,
) -> NewSession:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    purge_expired(session, now)
    row = WebSession(
        token_hash=token_hash(token, secret),
        workspace_id=workspace_id,
        user_id=user_id,
        key_id=key_id,
        created_at=now,
        expires_at=now + SESSION_LIFETIME,
    )
    session.add(row)
    session.flush()
    return NewSession(token=token, identity=_identity(session, row, now), expires_at=row.expires_at)


def _identity(session: Session, row: WebSession, now: datetime) -> WebIdentity:
    workspace = session.get(Workspace, row.workspace_id)
    if workspace is None:
        raise SessionInvalid
    if row.key_id is not None:
        key = session.get(ApiKey, row.key_id)
        if key is None or key.revoked_at is not None:
            raise SessionInvalid
        if key.expires_at is not None and key.expires_at <= now:
            raise SessionInvalid
        principal = Principal(
            workspace_id=row.workspace_id,
            key_id=key.id,
            scopes=Scopes.of(key.allowed_models, key.allowed_endpoints),
        )
        role: Role = "key"
        display = f"key {key.name} (lv-{key.prefix}…)"
    else:
        assert row.user_id is not None
        user = session.get(User, row.user_id)
        member = session.get(Member, (row.workspace_id, row.user_id))
        if user is None or member is None:  # removed from the workspace since sign-in
            raise SessionInvalid
        # A member's calls are metered and owned under their user id in place of a key id.
        principal = Principal(workspace_id=row.workspace_id, key_id=user.id, scopes=Scopes())
        role = "admin" if member.role == "admin" else "member"
        display = user.email
    return WebIdentity(
        principal=principal,
        session_id=row.id,
        role=role,
        display=display,
        workspace_name=workspace.name,
        retention=workspace.retention,
    )
