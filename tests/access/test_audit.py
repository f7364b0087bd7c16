"""Audit log: a hash chain that verifies, and names the row when someone edits the table."""

from __future__ import annotations

import itertools
import threading

from sqlalchemy import select, text

from levant.access import audit
from levant.db.session import Database
from levant.db.tables import AuditEntry


def _append_several(db: Database, n: int = 5) -> None:
    for i in range(n):
        with db.writing() as session:
            audit.append(
                session,
                action="limit.changed",
                actor="admin@example.eu",
                target=f"workspace:ws_{i}",
                details={"rpm": i * 10, "note": "Grüße", "nested": {"b": [1, 2.5], "a": None}},
            )


def _verify(db: Database) -> list[audit.Problem]:
    with db.reading() as session:
        return audit.verify(session)


def test_an_untouched_chain_verifies(db: Database) -> None:
    assert _verify(db) == []
    _append_several(db)
    assert _verify(db) == []
    with db.reading() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert all(a.hash == b.prev_hash for a, b in itertools.pairwise(rows))


def test_editing_details_is_caught_and_named(db: Database) -> None:
    _append_several(db)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET details = '{\"rpm\": 9999}' WHERE seq = 3"))
    problems = _verify(db)
    assert [p.seq for p in problems] == [3]
    assert "edited" in problems[0].reason


def test_rehashing_an_edited_row_breaks_the_next_link(db: Database) -> None:
    _append_several(db)
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_log SET actor = 'mallory', hash = :h WHERE seq = 2"), {"h": "f" * 64}
        )
    assert [p.seq for p in _verify(db)] == [2, 3]


def test_deleted_rows_are_caught(db: Database) -> None:
    _append_several(db)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 2"))
    assert _verify(db)[0].seq == 2
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq = 5"))
    assert 5 in [p.seq for p in _verify(db)]


def test_concurrent_appends_keep_one_chain(db: Database) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for i in range(10):
                with db.writing() as session:
                    audit.append(
                        session, action="grant.changed", actor=f"w{worker}", target=f"t{i}"
                    )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _verify(db) == []
    with db.reading() as session:
        assert session.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)).all() == list(
            range(1, 41)
        )


def test_an_aborted_action_leaves_no_audit_row(db: Database) -> None:
    try:
        with db.writing() as session:
            audit.append(session, action="policy.changed", actor="a", target="t")
            raise RuntimeError("the action failed")
    except RuntimeError:
        pass
    with db.reading() as session:
        assert session.scalars(select(AuditEntry)).all() == []
    assert _verify(db) == []
