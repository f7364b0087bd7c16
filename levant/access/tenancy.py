"""Tenancy: organisation → workspaces → members, and the first-start bootstrap.

``bootstrap`` makes a fresh install usable: a default organisation and
workspace, an admin with a random password and an admin API key, written to
``<home>/admin-credentials`` (0600). It is idempotent and safe to race.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from levant.access import audit
from levant.access.keys import create_key
from levant.access.passwords import hash_password, new_password
from levant.db.tables import Member, Organisation, User, Workspace

DEFAULT_ORGANISATION = "default"
DEFAULT_WORKSPACE = "default"
ADMIN_EMAIL = "admin@localhost"
CREDENTIALS_FILE = "admin-credentials"
BOOTSTRAP_ACTOR = "levant:bootstrap"


class WorkspaceNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    created: bool
    """True only for the call that created the defaults: print the sign-in note then."""
    organisation_id: str
    workspace_id: str
    admin_email: str
    credentials_path: Path


def bootstrap(session: Session, home: Path, secret: bytes) -> BootstrapResult:
    """Create the defaults unless an organisation exists; the caller commits.

    The credentials file is written before the commit: if the commit fails, the
    next start sees no organisation and writes it again, so it never names a
    key that does not exist for long, and a key is never lost.
    """
    credentials = home / CREDENTIALS_FILE
    if (existing := _existing(session, credentials)) is not None:
        return existing
    try:
        with session.begin_nested():
            return _create(session, home, secret, credentials)
    except IntegrityError:
        # Another process bootstrapped between our check and our insert.
        existing = _existing(session, credentials)
        assert existing is not None
        return existing


def default_workspace(session: Session) -> Workspace:
    """The workspace commands use when none is named: the oldest one called 'default'."""
    query = (
        select(Workspace)
        .join(Organisation)
        .where(Workspace.name == DEFAULT_WORKSPACE)
        .order_by(Organisation.created_at, Workspace.created_at)
        .limit(1)
    )
    workspace = session.scalars(query).first()
    if workspace is None:
        raise WorkspaceNotFound("no default workspace; has Levant been started once?")
    return workspace


def find_workspace(session: Session, name_or_id: str | None) -> Workspace:
    """A workspace by id, else by name (must be unambiguous); the default one for None."""
    if name_or_id is None:
        return default_workspace(session)
    by_id = session.get(Workspace, name_or_id)
    if by_id is not None:
        return by_id
    matches = list(session.scalars(select(Workspace).where(Workspace.name == name_or_id)))
    if len(matches) != 1:
        detail = "no workspace" if not matches else f"{len(matches)} workspaces"
        raise WorkspaceNotFound(f"{detail} named {name_or_id!r}; use its id")
    return matches[0]


def _existing(session: Session, credentials: Path) -> BootstrapResult | None:
    organisation = session.scalars(select(Organisation).order_by(Organisation.created_at)).first()
    if organisation is None:
        return None
    workspace = session.scalars(
        select(Workspace)
        .where(Workspace.organisation_id == organisation.id)
        .order_by(Workspace.name != DEFAULT_WORKSPACE, Workspace.created_at)
    ).first()
    admin = session.scalars(
        select(User).join(Member).where(Member.role == "admin").order_by(User.created_at)
    ).first()
    return BootstrapResult(
        created=False,
        organisation_id=organisation.id,
        workspace_id=workspace.id if workspace else "",
        admin_email=admin.email if admin else "",
        credentials_path=credentials,
    )


def _create(session: Session, home: Path, secret: bytes, credentials: Path) -> BootstrapResult:
    organisation = Organisation(name=DEFAULT_ORGANISATION)
    session.add(organisation)
    session.flush()
    workspace = Workspace(organisation_id=organisation.id, name=DEFAULT_WORKSPACE)
    password = new_password()
    admin = User(email=ADMIN_EMAIL, password_hash=hash_password(password))
    session.add_all([workspace, admin])
    session.flush()
    session.add(Member(workspace_id=workspace.id, user_id=admin.id, role="admin"))
    audit.append(
        session,
        action="tenancy.bootstrapped",
        actor=BOOTSTRAP_ACTOR,
        target=f"organisation:{organisation.id}",
        details={"workspace_id": workspace.id, "admin_user_id": admin.id, "email": ADMIN_EMAIL},
    )
    created = create_key(
        session, secret, workspace_id=workspace.id, name="admin", actor=BOOTSTRAP_ACTOR
    )
    _write_private(
        credentials,
        "# Levant administrator credentials, written once at first start.\n"
        "# Keep this file private; delete it once you have stored them elsewhere.\n"
        f"email: {ADMIN_EMAIL}\n"
        f"password: {password}\n"
        f"workspace: {DEFAULT_WORKSPACE} ({workspace.id})\n"
        f"api_key: {created.key}\n",
    )
    return BootstrapResult(
        created=True,
        organisation_id=organisation.id,
        workspace_id=workspace.id,
        admin_email=ADMIN_EMAIL,
        credentials_path=credentials,
    )


def sign_in_message(result: BootstrapResult) -> str:
    return (
        "Levant created an administrator for this installation.\n"
        f"  Sign in as {result.admin_email}; the password and an admin API key are in\n"
        f"  {result.credentials_path} (readable only by you).\n"
        "  Use the key as: Authorization: Bearer <api_key>"
    )


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte, replacing atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
