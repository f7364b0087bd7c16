"""Alembic environment: migrate the connection ``levant.db.migrate`` hands over.

Run through ``levant.db.migrate`` (programmatically at start-up, or
``python -m levant.db.migrate``), never through an alembic.ini.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

import levant.db.conversation_tables  # noqa: F401  (registers the chat app's tables)
from levant.db import file_tables  # noqa: F401  (registers the files and batch tables)
from levant.db.engine import make_engine
from levant.db.tables import Base

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    assert url, "levant.db.migrate sets sqlalchemy.url or hands over a connection"
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_online()
