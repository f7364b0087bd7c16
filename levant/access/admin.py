"""Administering workspaces: who may (``Caller`` → ``Access``), and the changes themselves.

Shared by the console API (``levant.api.routes.console_admin``) and any command
that wants it: plain functions over a SQLAlchemy session, no HTTP. Every change
is audited in the caller's transaction, so the change and its audit row commit
together or not at all. Residency, grants and limits reuse ``policy.py`` and
``limits/workspace.py``; this module adds workspaces and membership.

Who may do what, decided in one place (``resolve`` and ``Access.require``):

- A person signed in with a password acts through their membership of the
  *target* workspace, looked up on every call. They see the workspaces of their
  session's organisation that they are a member of; any other workspace does
  not exist for them (``NotFound``, never ``Forbidden``). Admins may change
  everything about a workspace, members may read it (members list included).
  Creating a workspace needs an admin of the workspace the session is signed in
  to; the creator becomes the new workspace's first admin.
- An API key (a Bearer key, or a session signed in with a key) sees exactly its
  own workspace. The bootstrap admin key -- the one the first start writes to
  ``admin-credentials``, recognised by its ``key.created`` audit row whose actor
  is ``levant:bootstrap`` -- may also read the members and change the
  workspace's name, residency, grants and limits. No key may change membership
  or create a workspace: that needs a person. Other keys may read the workspace,
  its grants and limits (what ``/api/console/policy`` already shows), not its
  members, and change nothing.
- With authentication off (``LEVANT_AUTH=0``) the local caller is an admin of
  every workspace of the default organisation (a workspace it creates has no
  members until some are added).

A workspace always keeps at least one admin: demoting or removing the last one
is a ``Conflict``. Passwords are hashed here (argon2) and never audited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from levant.access import audit
from levant.access.passwords import hash_password, new_password
from levant.access.policy import set_residency
from levant.access.tenancy import BOOTSTRAP_ACTOR
from levant.db.conversation_tables import WebSession
from levant.db.tables import ApiKey, AuditEntry, Member, ModelGrant, User, Workspace

CallerKind = Literal["user", "key", "local"]
MemberRole = Literal["admin", "member"]
AccessRole = Literal["admin", "member", "admin_key", "key"]
Action = Literal["read", "read_members", "manage", "manage_members"]

MAX_NAME_CHARS = 200
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")

_ALLOWED: dict[Action, frozenset[AccessRole]] = {
    "read": frozenset({"admin", "member", "admin_key", "key"}),
    "read_members": frozenset({"admin", "member", "admin_key"}),
    "manage": frozenset({"admin", "admin_key"}),
    "manage_members": frozenset({"admin"}),
}


class AdminError(Exception):
    """Base of the refusals below; ``str(exc)`` is safe to show the caller."""

    code: str = "invalid_value"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class NotFound(AdminError):
    """No such object, or one the caller may not know exists: the same answer either way."""

    def __init__(self, kind: str, ident: str, *, param: str | None = None) -> None:
        label = kind.replace("_", " ").capitalize()
        super().__init__(f"{label} '{ident}' not found", code=f"{kind}_not_found", param=param)
        self.kind = kind
        self.ident = ident


class Forbidden(AdminError):
    code = "admin_required"


class Conflict(AdminError):
    code = "conflict"


class Invalid(AdminError):
    code = "invalid_value"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is administering: a signed-in person, an API key, or the local user (auth off)."""

    kind: CallerKind
    id: str
    """The user id, the key id, or ``anonymous``."""
    workspace_id: str
    """The workspace the session is signed in to, or the key belongs to."""

    @property
    def actor(self) -> str:
        """The audit log's actor for this caller."""
        return "local" if self.kind == "local" else f"{self.kind}:{self.id}"


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    id: str
    organisation_id: str
    name: str
    retention: str
    allowed_regions: list[str] | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Access:
    """A caller's standing in one workspace they may see."""

    workspace: WorkspaceInfo
    role: AccessRole

    def may(self, action: Action) -> bool:
        return self.role in _ALLOWED[action]

    def require(self, action: Action) -> None:
        """Raise ``Forbidden`` unless the caller may do ``action`` here."""
        if self.may(action):
            return
        if self.role in ("admin_key", "key") and action in ("manage_members",):
            message = "API keys cannot change membership: sign in as a workspace admin"
        elif self.role == "key" and action == "read_members":
            message = "Only people in the workspace and the admin API key can list members"
        else:
            message = "Only a workspace admin (or the admin API key) can change this workspace"
        raise Forbidden(message)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    workspace_id: str
    user_id: str
    email: str
    role: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AddedMember:
    member: MemberInfo
    created_user: bool
    initial_password: str | None = field(default=None, repr=False)
    """Set only when a new user was created without a password: show it once."""


@dataclass(frozen=True, slots=True)
class GrantInfo:
    workspace_id: str
    model: str
    granted_at: datetime


# --- who may -----------------------------------------------------------------------------


def is_bootstrap_key(session: Session, key_id: str) -> bool:
    """Whether ``key_id`` is the admin key minted by the first start (per the audit log)."""
    query = select(AuditEntry.seq).where(
        AuditEntry.action == "key.created",
        AuditEntry.target == f"key:{key_id}",
        AuditEntry.actor == BOOTSTRAP_ACTOR,
    )
    return session.scalars(query.limit(1)).first() is not None


def _organisation_of(session: Session, workspace_id: str) -> str | None:
    ws = session.get(Workspace, workspace_id)
    return None if ws is None else ws.organisation_id


def resolve(session: Session, caller: Caller, workspace_id: str) -> Access:
    """The caller's access to ``workspace_id``, or ``NotFound`` if it is not theirs to see."""
    ws = session.get(Workspace, workspace_id)
    if ws is None:
        raise NotFound("workspace", workspace_id, param="workspace_id")
    role: AccessRole
    if caller.kind == "key":
        if ws.id != caller.workspace_id:
            raise NotFound("workspace", workspace_id, param="workspace_id")
        role = "admin_key" if is_bootstrap_key(session, caller.id) else "key"
    elif caller.kind == "local":
        if ws.organisation_id != _organisation_of(session, caller.workspace_id):
            raise NotFound("workspace", workspace_id, param="workspace_id")
        role = "admin"
    else:
        member = session.get(Member, (ws.id, caller.id))
        home = _organisation_of(session, caller.workspace_id)
        if member is None or ws.organisation_id != home:
            raise NotFound("workspace", workspace_id, param="workspace_id")
        role = "admin" if member.role == "admin" else "member"
    return Access(_workspace_info(ws), role)


def list_workspaces(session: Session, caller: Caller) -> list[Access]:
    """The workspaces the caller may see (rule in the module docstring), oldest first."""
    if caller.kind == "key":
        return [resolve(session, caller, caller.workspace_id)]
    organisation = _organisation_of(session, caller.workspace_id)
    if caller.kind == "local":
        rows = session.scalars(
            select(Workspace)
            .where(Workspace.organisation_id == organisation)
            .order_by(Workspace.created_at, Workspace.id)
        )
        return [Access(_workspace_info(ws), "admin") for ws in rows]
    pairs = session.execute(
        select(Workspace, Member.role)
        .join(Member, Member.workspace_id == Workspace.id)
        .where(Member.user_id == caller.id, Workspace.organisation_id == organisation)
        .order_by(Workspace.created_at, Workspace.id)
    )
    return [
        Access(_workspace_info(ws), "admin" if role == "admin" else "member") for ws, role in pairs
    ]


def require_organisation_admin(session: Session, caller: Caller) -> str:
    """The organisation a caller may create workspaces in, or ``Forbidden``."""
    organisation = _organisation_of(session, caller.workspace_id)
    if organisation is None:
        raise NotFound("workspace", caller.workspace_id)
    if caller.kind == "local":
        return organisation
    if caller.kind == "key":
        raise Forbidden("API keys cannot create workspaces: sign in as a workspace admin")
    member = session.get(Member, (caller.workspace_id, caller.id))
    if member is None or member.role != "admin":
        raise Forbidden("Only an admin of the workspace you are signed in to can create workspaces")
    return organisation


# --- workspaces --------------------------------------------------------------------------


def _workspace_info(ws: Workspace) -> WorkspaceInfo:
    return WorkspaceInfo(
        id=ws.id,
        organisation_id=ws.organisation_id,
        name=ws.name,
        retention=ws.retention,
        allowed_regions=None if ws.allowed_regions is None else list(ws.allowed_regions),
        created_at=ws.created_at,
    )


def _clean_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME_CHARS or not cleaned.isprintable():
        raise Invalid(
            f"A workspace name is 1 to {MAX_NAME_CHARS} printable characters", param="name"
        )
    return cleaned


def _check_name_free(session: Session, organisation_id: str, name: str, *, but: str = "") -> None:
    taken = session.scalars(
        select(Workspace.id).where(
            Workspace.organisation_id == organisation_id,
            Workspace.name == name,
            Workspace.id != but,
        )
    ).first()
    if taken is not None:
        raise Conflict(
            f"A workspace named '{name}' already exists", code="workspace_exists", param="name"
        )


def _flush_unique(session: Session, conflict: Conflict) -> None:
    """Flush; a unique-constraint race with another writer becomes ``conflict``."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise conflict from None


def get_workspace(session: Session, workspace_id: str) -> WorkspaceInfo:
    ws = session.get(Workspace, workspace_id)
    if ws is None:
        raise NotFound("workspace", workspace_id, param="workspace_id")
    return _workspace_info(ws)


def create_workspace(
    session: Session,
    organisation_id: str,
    name: str,
    *,
    actor: str,
    first_admin: str | None = None,
    allowed_regions: list[str] | None = None,
    retention: str = "standard",
) -> WorkspaceInfo:
    """A new workspace in ``organisation_id``, ``first_admin`` (a user id) its admin. Audited.

    The residency policy is stored through ``policy.set_residency`` (validated, audited);
    a policy that does not parse raises ``PolicyError`` and the caller's rollback
    leaves nothing behind.
    """
    name = _clean_name(name)
    _check_name_free(session, organisation_id, name)
    ws = Workspace(organisation_id=organisation_id, name=name)
    session.add(ws)
    conflict = Conflict(
        f"A workspace named '{name}' already exists", code="workspace_exists", param="name"
    )
    _flush_unique(session, conflict)
    audit.append(
        session,
        action="workspace.created",
        actor=actor,
        target=f"workspace:{ws.id}",
        details={"organisation_id": organisation_id, "name": name, "first_admin": first_admin},
    )
    if first_admin is not None:
        session.add(Member(workspace_id=ws.id, user_id=first_admin, role="admin"))
        session.flush()
    if allowed_regions is not None or retention != "standard":
        set_residency(session, ws.id, allowed_regions, retention, actor=actor)
        session.flush()
    return _workspace_info(ws)


def rename_workspace(
    session: Session, workspace_id: str, name: str, *, actor: str
) -> WorkspaceInfo:
    ws = session.get(Workspace, workspace_id, with_for_update=True)
    if ws is None:
        raise NotFound("workspace", workspace_id, param="workspace_id")
    name = _clean_name(name)
    if name == ws.name:
        return _workspace_info(ws)
    _check_name_free(session, ws.organisation_id, name, but=ws.id)
    old = ws.name
    ws.name = name
    conflict = Conflict(
        f"A workspace named '{name}' already exists", code="workspace_exists", param="name"
    )
    _flush_unique(session, conflict)
    audit.append(
        session,
        action="workspace.renamed",
        actor=actor,
        target=f"workspace:{ws.id}",
        details={"from": old, "to": name},
    )
    return _workspace_info(ws)


# --- members -----------------------------------------------------------------------------


def normalise_email(email: str) -> str:
    cleaned = email.strip().lower()
    if len(cleaned) > 320 or not _EMAIL.match(cleaned):
        raise Invalid(f"'{email.strip()[:80]}' is not an email address", param="email")
    return cleaned


def _member_info(member: Member, user: User) -> MemberInfo:
    return MemberInfo(
        workspace_id=member.workspace_id,
        user_id=user.id,
        email=user.email,
        role=member.role,
        created_at=member.created_at,
    )


def list_members(session: Session, workspace_id: str) -> list[MemberInfo]:
    pairs = session.execute(
        select(Member, User)
        .join(User, User.id == Member.user_id)
        .where(Member.workspace_id == workspace_id)
        .order_by(Member.created_at, User.email)
    )
    return [_member_info(m, u) for m, u in pairs]


def _lock_membership(session: Session, workspace_id: str) -> Workspace:
    """Serialise membership changes of one workspace (row lock on PostgreSQL; SQLite's
    write transaction already is one), so two admins cannot demote each other at once."""
    ws = session.get(Workspace, workspace_id, with_for_update=True)
    if ws is None:
        raise NotFound("workspace", workspace_id, param="workspace_id")
    return ws


def _admin_count(session: Session, workspace_id: str) -> int:
    count = session.scalar(
        select(func.count())
        .select_from(Member)
        .where(Member.workspace_id == workspace_id, Member.role == "admin")
    )
    return int(count or 0)


def _last_admin(email: str) -> Conflict:
    return Conflict(
        f"{email} is the workspace's last admin: make another member an admin first",
        code="last_admin",
    )


def add_member(
    session: Session,
    workspace_id: str,
    email: str,
    role: MemberRole,
    *,
    actor: str,
    password: str | None = None,
) -> AddedMember:
    """Add a user to a workspace, creating the user if the email is new. Audited.

    A new user gets ``password`` (argon2-hashed) or, without one, a generated
    password returned once. An existing user keeps theirs: sending a password
    for them is a ``Conflict``, so nobody can reset another person's password.
    """
    email = normalise_email(email)
    _lock_membership(session, workspace_id)
    user = session.scalars(select(User).where(func.lower(User.email) == email)).first()
    created, initial = False, None
    if user is None:
        if password is None:
            initial = password = new_password()
        user = User(email=email, password_hash=hash_password(password))
        session.add(user)
        _flush_unique(
            session, Conflict(f"A user {email} was added at the same time", code="user_exists")
        )
        created = True
    elif password is not None:
        raise Conflict(
            f"A user {email} already exists and keeps their own password: add them without one",
            code="user_exists",
            param="password",
        )
    elif session.get(Member, (workspace_id, user.id)) is not None:
        raise Conflict(f"{email} is already a member of this workspace", code="member_exists")
    member = Member(workspace_id=workspace_id, user_id=user.id, role=role)
    session.add(member)
    session.flush()
    audit.append(
        session,
        action="member.added",
        actor=actor,
        target=f"workspace:{workspace_id}",
        details={"user_id": user.id, "email": email, "role": role, "created_user": created},
    )
    return AddedMember(_member_info(member, user), created, initial)


def _member(session: Session, workspace_id: str, user_id: str) -> tuple[Member, User]:
    member = session.get(Member, (workspace_id, user_id))
    user = session.get(User, user_id) if member is not None else None
    if member is None or user is None:
        raise NotFound("member", user_id, param="user_id")
    return member, user


def set_member_role(
    session: Session, workspace_id: str, user_id: str, role: MemberRole, *, actor: str
) -> MemberInfo:
    """Change a member's role; never demotes the last admin. Audited when it changes."""
    _lock_membership(session, workspace_id)
    member, user = _member(session, workspace_id, user_id)
    if member.role == role:
        return _member_info(member, user)
    if member.role == "admin" and _admin_count(session, workspace_id) <= 1:
        raise _last_admin(user.email)
    old = member.role
    member.role = role
    session.flush()
    audit.append(
        session,
        action="member.role_changed",
        actor=actor,
        target=f"workspace:{workspace_id}",
        details={"user_id": user_id, "email": user.email, "from": old, "to": role},
    )
    return _member_info(member, user)


def remove_member(session: Session, workspace_id: str, user_id: str, *, actor: str) -> MemberInfo:
    """Remove a member (never the last admin) and end their sessions in it. Audited.

    The user and what they own (conversations) stay: they may belong to other workspaces.
    """
    _lock_membership(session, workspace_id)
    member, user = _member(session, workspace_id, user_id)
    if member.role == "admin" and _admin_count(session, workspace_id) <= 1:
        raise _last_admin(user.email)
    info = _member_info(member, user)
    session.delete(member)
    session.execute(
        delete(WebSession).where(
            WebSession.workspace_id == workspace_id, WebSession.user_id == user_id
        )
    )
    session.flush()
    audit.append(
        session,
        action="member.removed",
        actor=actor,
        target=f"workspace:{workspace_id}",
        details={"user_id": user_id, "email": user.email, "role": info.role},
    )
    return info


# --- grants and limit scopes ---------------------------------------------------------------


def list_grants(session: Session, workspace_id: str) -> list[GrantInfo]:
    rows = session.scalars(
        select(ModelGrant)
        .where(ModelGrant.workspace_id == workspace_id)
        .order_by(ModelGrant.model_id)
    )
    return [GrantInfo(r.workspace_id, r.model_id, r.granted_at) for r in rows]


def check_limit_key(session: Session, workspace_id: str, key_id: str) -> None:
    """A limit's ``key_id``: ``*``, a key of this workspace, or a member's user id (a
    signed-in member's requests run under their user id). Anything else is ``Invalid``,
    with the same message whether or not it exists elsewhere."""
    if key_id == "*":
        return
    key = session.get(ApiKey, key_id)
    if key is not None and key.workspace_id == workspace_id:
        return
    if session.get(Member, (workspace_id, key_id)) is not None:
        return
    raise Invalid(
        f"'{key_id}' is not a key or member of this workspace (or '*' for all)",
        param="key_id",
    )
