"""Sessions: one ``Database`` per process (engine + session factory) and write transactions.

``db.writing()`` is the one way to open a transaction that writes: it takes the
write lock up front on SQLite (BEGIN IMMEDIATE) and is a plain transaction on
PostgreSQL. ``db.reading()`` is for read-only work.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from levant.db.engine import IMMEDIATE, make_engine


@dataclass
class Database:
    engine: Engine
    sessions: sessionmaker[Session] = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str | URL) -> Database:
        return cls(make_engine(url))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A session in a write transaction: commits on success, rolls back on error."""
        with self.sessions() as session, session.begin():
            session.connection(execution_options={IMMEDIATE: True})
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads; whatever it holds is rolled back at the end."""
        with self.sessions() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
