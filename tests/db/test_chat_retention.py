"""Standard retention's period: conversations idle past it are deleted with their messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from levant.access.tenancy import bootstrap
from levant.conversations import store
from levant.db.conversation_tables import Conversation, ConversationMessage
from levant.db.session import Database


def test_purge_deletes_only_conversations_idle_past_the_cutoff(
    db: Database, tmp_path: Path, secret: bytes
) -> None:
    with db.writing() as session:
        ws = bootstrap(session, tmp_path, secret).workspace_id
    now = datetime.now(UTC)
    with db.writing() as session:
        for name, age_days in (("old", 40), ("recent", 2)):
            conv = store.create_conversation(
                session,
                name=name,
                model="m",
                instructions=None,
                temperature=None,
                max_tokens=None,
                workspace_id=ws,
                owner="u1",
            )
            store.append_message(
                session, conv.id, role="user", content="hi", workspace_id=ws, owner="u1"
            )
            row = session.get(Conversation, conv.id)
            assert row is not None
            row.updated_at = now - timedelta(days=age_days)
    with db.writing() as session:
        assert store.purge_older_than(session, now - timedelta(days=30)) == 1
    with db.reading() as session:
        names = list(session.scalars(select(Conversation.name)))
        messages = session.scalar(select(func.count()).select_from(ConversationMessage))
    assert names == ["recent"]
    assert messages == 1  # the old conversation's message went with it
