"""Persistence: SQLAlchemy tables, engines and sessions, and Alembic migrations.

SQLite (WAL) at ``LEVANT_HOME/levant.db`` by default, PostgreSQL when
``LEVANT_DATABASE_URL`` says so. Queries that carry policy live in
``levant.access``; this package only knows how to store things.
"""

from __future__ import annotations

from levant.db.engine import default_url, make_engine, resolve_url
from levant.db.migrate import upgrade
from levant.db.session import Database

__all__ = ["Database", "default_url", "make_engine", "resolve_url", "upgrade"]
