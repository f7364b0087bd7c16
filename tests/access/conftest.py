"""Fixtures for tests/access: the same database fixtures as tests/db, plus a bootstrapped one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from levant.access.tenancy import BootstrapResult, bootstrap
from levant.db.session import Database
from tests.db.fixtures import db, db_url, secret

__all__ = ["bootstrapped", "db", "db_url", "home", "secret"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def bootstrapped(db: Database, home: Path, secret: bytes) -> Iterator[BootstrapResult]:
    """The database after first start: default organisation, workspace, admin and key."""
    with db.writing() as session:
        result = bootstrap(session, home, secret)
    yield result
