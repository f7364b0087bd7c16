"""Tables of the chat app: browser sessions, conversations and their messages.

Declared on the same ``Base`` as ``levant.db.tables`` (one metadata, one set of
migrations; revision 0003 creates them). A conversation's history is one row per
message, appended as the chat goes, never a JSON blob rewritten on each turn.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from levant.db.tables import Base, BigID, new_id
from levant.db.types import utcnow


class WebSession(Base):
    """A signed-in browser: known by the HMAC of its cookie token, never the token itself.

    Exactly one of ``user_id`` (password sign-in) and ``key_id`` (API-key sign-in) is set.
    """

    __tablename__ = "web_sessions"
    __table_args__ = (
        CheckConstraint("(user_id IS NULL) <> (key_id IS NULL)", name="one_identity"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("ses"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), default=None, index=True
    )
    key_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class Conversation(Base):
    """One chat, owned by the principal that made it (a user id or a key id)."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_owner_updated", "workspace_id", "owner", "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("conv"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    owner: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str | None] = mapped_column(Text, default=None)
    """The conversation's system prompt."""
    temperature: Mapped[float | None] = mapped_column(Float, default=None)
    max_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConversationMessage(Base):
    """One message; ``seq`` orders a conversation's messages from 0."""

    __tablename__ = "conversation_messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "seq"),
        CheckConstraint("role IN ('user', 'assistant')", name="role"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200), default=None)
    finish_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
