"""levant.access.admin on SQLite and PostgreSQL: who may, membership, the last-admin rule."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from levant.access import admin
from levant.access.keys import create_key
from levant.access.tenancy import BootstrapResult
from levant.db.session import Database
from levant.db.tables import AuditEntry, Member, User


def _admin_id(db: Database, boot: BootstrapResult) -> str:
    with db.reading() as s:
        return s.scalars(select(User.id).where(User.email == boot.admin_email)).one()


def test_roles_and_what_they_may_do(
    db: Database, bootstrapped: BootstrapResult, secret: bytes
) -> None:
    ws = bootstrapped.workspace_id
    with db.writing() as s:
        boot_key = s.scalars(
            select(AuditEntry.target).where(AuditEntry.action == "key.created")
        ).one()[len("key:") :]
        other_key = create_key(s, secret, workspace_id=ws, name="app", actor="tests").info.id
        added = admin.add_member(s, ws, "m@example.eu", "member", actor="tests", password=None)
    assert added.initial_password and added.created_user
    with db.reading() as s:
        user = admin.Caller("user", _admin_id(db, bootstrapped), ws)
        member = admin.Caller("user", added.member.user_id, ws)
        assert admin.resolve(s, user, ws).role == "admin"
        assert admin.resolve(s, member, ws).role == "member"
        assert admin.resolve(s, admin.Caller("key", boot_key, ws), ws).role == "admin_key"
        plain = admin.resolve(s, admin.Caller("key", other_key, ws), ws)
        assert plain.role == "key" and plain.may("read") and not plain.may("read_members")
        with pytest.raises(admin.Forbidden, match="membership"):
            admin.resolve(s, admin.Caller("key", boot_key, ws), ws).require("manage_members")
        with pytest.raises(admin.NotFound):
            admin.resolve(s, user, "ws_nothere")
        assert admin.require_organisation_admin(s, user) == bootstrapped.organisation_id
        with pytest.raises(admin.Forbidden):
            admin.require_organisation_admin(s, member)
        with pytest.raises(admin.Forbidden):
            admin.require_organisation_admin(s, admin.Caller("key", boot_key, ws))


def test_two_admins_demoting_each_other_at_once_leave_one_admin(
    db: Database, bootstrapped: BootstrapResult
) -> None:
    ws = bootstrapped.workspace_id
    first = _admin_id(db, bootstrapped)
    with db.writing() as s:
        second = admin.add_member(s, ws, "second@example.eu", "admin", actor="tests").member.user_id
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def demote(user_id: str) -> None:
        barrier.wait()
        try:
            with db.writing() as s:
                admin.set_member_role(s, ws, user_id, "member", actor="tests")
            outcomes.append("demoted")
        except admin.Conflict as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=demote, args=(u,)) for u in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["demoted", "last_admin"]
    with db.reading() as s:
        admins = s.scalar(
            select(func.count())
            .select_from(Member)
            .where(Member.workspace_id == ws, Member.role == "admin")
        )
    assert admins == 1


def test_a_failed_member_add_writes_nothing(db: Database, bootstrapped: BootstrapResult) -> None:
    ws = bootstrapped.workspace_id
    with pytest.raises(admin.Conflict), db.writing() as s:
        admin.add_member(s, ws, bootstrapped.admin_email, "member", actor="t", password="x" * 12)
    with pytest.raises(admin.Invalid), db.writing() as s:
        admin.add_member(s, ws, "no at sign", "member", actor="t")
    with db.reading() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 1
        assert s.scalar(select(func.count()).select_from(Member)) == 1
