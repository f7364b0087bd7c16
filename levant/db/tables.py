"""The relational schema: tenancy, API keys, model grants, usage events and the audit log.

Typed SQLAlchemy 2 declarative models and nothing else: no queries, no policy.
Any change here needs a new Alembic revision in ``levant/db/migrations/versions``.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from levant.db.types import UTCDateTime, utcnow

# Constraint names are fixed so migrations can refer to them on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQL NULL for Python None: a null scope means "everything", not the JSON value null.
JSONValue = JSON(none_as_null=True)
# SQLite only autoincrements an INTEGER PRIMARY KEY, not a BIGINT one.
BigID = BigInteger().with_variant(Integer(), "sqlite")

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first audit row."""


def new_id(kind: str) -> str:
    """A public identifier such as ``key_3f9c0a1b2d4e5f60``: random, typed by its prefix."""
    return f"{kind}_{secrets.token_hex(8)}"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("org"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Workspace(Base):
    __tablename__ = "workspaces"
    __table_args__ = (
        UniqueConstraint("organisation_id", "name"),
        CheckConstraint("retention IN ('standard', 'zero')", name="retention"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("ws"))
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    retention: Mapped[str] = mapped_column(String(16), default="standard")
    """'standard' | 'zero' (no prompt or completion text written anywhere)."""
    allowed_regions: Mapped[list[str] | None] = mapped_column(JSONValue, default=None)
    """Regions that may serve this workspace; null means any."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("usr"))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    """An argon2 hash; null for users who only sign in another way."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (CheckConstraint("role IN ('admin', 'member')", name="role"),)

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16), default="member")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key, known only by its HMAC; the plaintext is shown once and never stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("key"))
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    """The first characters after ``lv-``, so people can tell keys apart."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    """hex HMAC-SHA256 of the whole key under the server secret."""
    allowed_models: Mapped[list[str] | None] = mapped_column(JSONValue, default=None)
    allowed_endpoints: Mapped[list[str] | None] = mapped_column(JSONValue, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class ModelGrant(Base):
    """A workspace may use this commercial-track model."""

    __tablename__ = "model_grants"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    model_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkspaceLimit(Base):
    """Rate, token and spend limits for a workspace, or one of its keys, for one model or all.

    ``key_id`` and ``model`` use ``"*"`` for "every key" / "every model" (a
    sentinel rather than NULL, so they can be part of the primary key).
    """

    __tablename__ = "workspace_limits"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(String(32), primary_key=True, default="*")
    model: Mapped[str] = mapped_column(String(200), primary_key=True, default="*")
    requests_per_second: Mapped[float | None] = mapped_column(Float, default=None)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger, default=None)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger, default=None)
    monthly_budget_micros: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """Only read on the workspace-wide row (key ``*``, model ``*``)."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class UsageEvent(Base):
    """One metering row per request.

    ``request_id`` is unique so a replayed write never counts twice. No foreign
    keys on purpose: this is an append-only fact table on the hot path, its ids
    come from an authenticated Principal, and billing rows must outlive keys.
    """

    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_workspace_created", "workspace_id", "created_at"),
        Index("ix_usage_events_workspace_model_created", "workspace_id", "model", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(100), unique=True)
    workspace_id: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    model: Mapped[str] = mapped_column(String(200))
    deployment: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(64))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer)
    price_micros: Mapped[int] = mapped_column(BigInteger)
    """Price of this request at the time, in millionths of the billing currency."""
    latency_ms: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """One administrative action; ``hash`` chains it to the row before (see access/audit)."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column()
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The single row (id 1) naming the chain's last seq and hash.

    Appenders lock it first, which serialises appends on both databases, and
    verify compares it with the last row, which makes a truncated tail visible.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
