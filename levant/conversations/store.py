"""Conversations and their messages in the database, always scoped to (workspace, owner).

The owner is the principal's ``key_id`` (a signed-in member's user id, or an API
key's id), so one person never sees another's chats. Every function takes the
owner and treats someone else's conversation exactly like a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, exists, func, or_, select
from sqlalchemy.orm import Session

from levant.db.conversation_tables import Conversation, ConversationMessage
from levant.db.types import utcnow

Role = Literal["user", "assistant"]
_UNSET: object = object()


class ConversationNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class MessageInfo:
    seq: int
    role: str
    content: str
    model: str | None
    finish_reason: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    id: str
    name: str
    model: str
    instructions: str | None
    temperature: float | None
    max_tokens: int | None
    created_at: datetime
    updated_at: datetime
    messages: list[MessageInfo] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ConversationUpdate:
    """Fields to change; ``None`` leaves one as it is, ``clear`` names the ones to null."""

    name: str | None = None
    model: str | None = None
    instructions: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    clear: frozenset[str] = frozenset()


def create_conversation(
    session: Session,
    *,
    workspace_id: str,
    owner: str,
    name: str,
    model: str,
    instructions: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> ConversationInfo:
    now = utcnow()
    row = Conversation(
        workspace_id=workspace_id,
        owner=owner,
        name=name,
        model=model,
        instructions=instructions,
        temperature=temperature,
        max_tokens=max_tokens,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return _info(row)


def list_conversations(
    session: Session, *, workspace_id: str, owner: str, query: str | None = None, limit: int = 100
) -> list[ConversationInfo]:
    """Newest activity first; ``query`` matches the name or any message (case-insensitive)."""
    stmt = select(Conversation).where(
        Conversation.workspace_id == workspace_id, Conversation.owner == owner
    )
    if query:
        pattern = "%" + _escape_like(query.lower()) + "%"
        in_messages = exists().where(
            ConversationMessage.conversation_id == Conversation.id,
            func.lower(ConversationMessage.content).like(pattern, escape="\\"),
        )
        stmt = stmt.where(
            or_(func.lower(Conversation.name).like(pattern, escape="\\"), in_messages)
        )
    stmt = stmt.order_by(Conversation.updated_at.desc(), Conversation.id).limit(limit)
    return [_info(row) for row in session.scalars(stmt)]


def get_conversation(
    session: Session, conversation_id: str, *, workspace_id: str, owner: str
) -> ConversationInfo:
    row = _owned(session, conversation_id, workspace_id, owner)
    return _info(row, list_messages(session, row.id))


def list_messages(session: Session, conversation_id: str) -> list[MessageInfo]:
    rows = session.scalars(
        select(ConversationMessage)
        .where(ConversationMessage.conversation_id == conversation_id)
        .order_by(ConversationMessage.seq)
    )
    return [
        MessageInfo(r.seq, r.role, r.content, r.model, r.finish_reason, r.created_at) for r in rows
    ]


def update_conversation(
    session: Session,
    conversation_id: str,
    change: ConversationUpdate,
    *,
    workspace_id: str,
    owner: str,
) -> ConversationInfo:
    row = _owned(session, conversation_id, workspace_id, owner)
    for name in ("name", "model", "instructions", "temperature", "max_tokens"):
        value = getattr(change, name)
        if name in change.clear:
            setattr(row, name, None)
        elif value is not None:
            setattr(row, name, value)
    row.updated_at = utcnow()
    session.flush()
    return _info(row)


def delete_conversation(
    session: Session, conversation_id: str, *, workspace_id: str, owner: str
) -> None:
    row = _owned(session, conversation_id, workspace_id, owner)
    session.execute(
        delete(ConversationMessage).where(ConversationMessage.conversation_id == row.id)
    )
    session.delete(row)


def append_message(
    session: Session,
    conversation_id: str,
    *,
    workspace_id: str,
    owner: str,
    role: Role,
    content: str,
    model: str | None = None,
    finish_reason: str | None = None,
) -> MessageInfo:
    """Add one row at the end; the conversation's write lock makes ``seq`` race-free."""
    row = _owned(session, conversation_id, workspace_id, owner, lock=True)
    last = session.scalar(
        select(func.max(ConversationMessage.seq)).where(
            ConversationMessage.conversation_id == row.id
        )
    )
    now = utcnow()
    message = ConversationMessage(
        conversation_id=row.id,
        seq=0 if last is None else last + 1,
        role=role,
        content=content,
        model=model,
        finish_reason=finish_reason,
        created_at=now,
    )
    session.add(message)
    row.updated_at = now
    session.flush()
    return MessageInfo(message.seq, role, content, model, finish_reason, now)


def truncate_messages(
    session: Session, conversation_id: str, from_seq: int, *, workspace_id: str, owner: str
) -> int:
    """Delete message ``from_seq`` and every later one (edit-and-resend, regenerate)."""
    row = _owned(session, conversation_id, workspace_id, owner, lock=True)
    result = session.execute(
        delete(ConversationMessage).where(
            ConversationMessage.conversation_id == row.id, ConversationMessage.seq >= from_seq
        )
    )
    row.updated_at = utcnow()
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)


def _owned(
    session: Session, conversation_id: str, workspace_id: str, owner: str, *, lock: bool = False
) -> Conversation:
    row = session.get(Conversation, conversation_id, with_for_update=lock)
    if row is None or row.workspace_id != workspace_id or row.owner != owner:
        raise ConversationNotFound(conversation_id)
    return row


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _info(row: Conversation, messages: list[MessageInfo] | None = None) -> ConversationInfo:
    return ConversationInfo(
        id=row.id,
        name=row.name,
        model=row.model,
        instructions=row.instructions,
        temperature=row.temperature,
        max_tokens=row.max_tokens,
        created_at=row.created_at,
        updated_at=row.updated_at,
        messages=messages or [],
    )


def purge_older_than(session: Session, cutoff: datetime) -> int:
    """Delete conversations last updated before ``cutoff``, with their messages (standard
    retention's period). Returns how many conversations went."""
    old = select(Conversation.id).where(Conversation.updated_at < cutoff)
    ids = list(session.scalars(old))
    if not ids:
        return 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        session.execute(
            delete(ConversationMessage).where(ConversationMessage.conversation_id.in_(chunk))
        )
        session.execute(delete(Conversation).where(Conversation.id.in_(chunk)))
    return len(ids)
