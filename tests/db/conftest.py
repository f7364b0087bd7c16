"""Fixtures for tests/db: see tests/db/fixtures.py."""

from __future__ import annotations

from tests.db.fixtures import db, db_url, secret

__all__ = ["db", "db_url", "secret"]
