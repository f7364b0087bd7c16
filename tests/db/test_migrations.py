"""Migrations build the whole schema from empty, on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from levant.db.engine import make_engine
from levant.db.migrate import current_revision, head_revision, upgrade
from levant.db.tables import GENESIS_HASH, AuditHead, Base

TABLES = {
    "organisations",
    "workspaces",
    "users",
    "members",
    "api_keys",
    "model_grants",
    "usage_events",
    "audit_log",
    "audit_head",
    "workspace_limits",
    "web_sessions",
    "conversations",
    "conversation_messages",
    "files",
    "batch_jobs",
    "batch_results",
}


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) == TABLES | {"alembic_version"}
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            head = conn.execute(select(AuditHead.seq, AuditHead.hash)).one()
        assert tuple(head) == (0, GENESIS_HASH)
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(AuditHead.id)).scalars().all() == [1]
    finally:
        engine.dispose()


def test_concurrent_start_ups_migrate_once(db_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(db_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_models_match_the_migrations(db_url: str) -> None:
    """A change to tables.py without a revision shows up here as a diff."""
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_console_queries_have_their_indexes(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        inspector = inspect(engine)
        indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("usage_events")}
        assert indexes["ix_usage_events_workspace_created"] == ["workspace_id", "created_at"]
        assert indexes["ix_usage_events_workspace_model_created"] == [
            "workspace_id",
            "model",
            "created_at",
        ]
        uniques = inspector.get_unique_constraints("usage_events")
        assert ["request_id"] in [u["column_names"] for u in uniques]
        key_uniques = inspector.get_unique_constraints("api_keys")
        assert ["key_hash"] in [u["column_names"] for u in key_uniques]
    finally:
        engine.dispose()
