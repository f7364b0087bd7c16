"""First start: default organisation, workspace, admin and key; idempotent, raced safely, 0600."""

from __future__ import annotations

import re
import stat
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from levant.access.keys import authenticate
from levant.access.passwords import verify_password
from levant.access.startup import open_platform
from levant.access.tenancy import (
    BootstrapResult,
    WorkspaceNotFound,
    bootstrap,
    find_workspace,
    sign_in_message,
)
from levant.db.session import Database
from levant.db.tables import ApiKey, Member, Organisation, User, Workspace


def _credentials(path: Path) -> dict[str, str]:
    pairs = re.findall(r"^(\w+): (.+)$", path.read_text(), re.MULTILINE)
    return dict(pairs)


def _counts(db: Database) -> tuple[int, ...]:
    with db.reading() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(table)) or 0
            for table in (Organisation, Workspace, User, Member, ApiKey)
        )


def test_first_start_creates_an_admin_who_can_sign_in(
    db: Database, home: Path, secret: bytes, bootstrapped: BootstrapResult
) -> None:
    assert bootstrapped.created
    path = home / "admin-credentials"
    assert bootstrapped.credentials_path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = _credentials(path)
    assert creds["email"] == bootstrapped.admin_email
    with db.writing() as session:
        principal = authenticate(session, creds["api_key"], secret)
        admin = session.scalars(select(User)).one()
        member = session.scalars(select(Member)).one()
    assert principal.workspace_id == bootstrapped.workspace_id
    assert admin.password_hash is not None
    assert creds["password"] not in admin.password_hash
    assert verify_password(admin.password_hash, creds["password"])
    assert not verify_password(admin.password_hash, "wrong")
    assert member.role == "admin"
    message = sign_in_message(bootstrapped)
    assert str(path) in message
    assert creds["api_key"] not in message and creds["password"] not in message


def test_second_start_changes_nothing(
    db: Database, home: Path, secret: bytes, bootstrapped: BootstrapResult
) -> None:
    before = (home / "admin-credentials").read_text()
    with db.writing() as session:
        again = bootstrap(session, home, secret)
    assert not again.created
    assert (again.organisation_id, again.workspace_id) == (
        bootstrapped.organisation_id,
        bootstrapped.workspace_id,
    )
    assert (home / "admin-credentials").read_text() == before
    assert _counts(db) == (1, 1, 1, 1, 1)


def test_racing_first_starts_create_one_organisation(
    db: Database, home: Path, secret: bytes
) -> None:
    results: list[BootstrapResult] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def start() -> None:
        try:
            barrier.wait()
            with db.writing() as session:
                results.append(bootstrap(session, home, secret))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(r.created for r in results) == [False, False, True]
    assert _counts(db) == (1, 1, 1, 1, 1)
    with db.writing() as session:
        authenticate(session, _credentials(home / "admin-credentials")["api_key"], secret)


def test_find_workspace(db: Database, bootstrapped: BootstrapResult) -> None:
    with db.reading() as session:
        assert find_workspace(session, None).id == bootstrapped.workspace_id
        assert find_workspace(session, "default").id == bootstrapped.workspace_id
        assert find_workspace(session, bootstrapped.workspace_id).name == "default"
        with pytest.raises(WorkspaceNotFound):
            find_workspace(session, "nope")


def test_find_workspace_before_first_start(db: Database) -> None:
    with db.reading() as session, pytest.raises(WorkspaceNotFound, match="started"):
        find_workspace(session, None)


def test_open_platform_migrates_and_bootstraps_once(db_url: str, home: Path) -> None:
    settings = SimpleNamespace(home=home, database_url=db_url, secret=None)
    first = open_platform(settings)
    first.close()
    second = open_platform(settings)
    second.close()
    assert first.bootstrap.created and not second.bootstrap.created
    assert first.secret == second.secret
    assert stat.S_IMODE((home / "secret").stat().st_mode) == 0o600
