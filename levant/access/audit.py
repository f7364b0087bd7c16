"""The audit log: administrative actions as a hash chain, so an edited row is detectable.

``hash = sha256(prev_hash + canonical JSON of the row)``. Appends lock the
single ``audit_head`` row first, so they are serialised on both databases and
run inside the caller's transaction: the action and its audit row commit together.
``verify`` recomputes the chain and names every row that does not fit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, cast, select, update
from sqlalchemy.orm import Session

from levant.db.tables import GENESIS_HASH, AuditEntry, AuditHead
from levant.db.types import utcnow

HEAD_ID = 1


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.reason}"


def canonical(seq: int, at: datetime, actor: str, action: str, target: str, details: Any) -> bytes:
    """The bytes that are hashed: stable across databases and Python versions."""
    row = {
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(),
        "actor": actor,
        "action": action,
        "target": target,
        "details": details,
    }
    return json.dumps(
        row, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def chain_hash(prev_hash: str, payload: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + payload).hexdigest()


def append(
    session: Session,
    *,
    action: str,
    actor: str,
    target: str,
    details: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEntry:
    """Add one row to the chain in the session's transaction (the caller commits).

    ``details`` must be JSON-serialisable and must never hold secrets or key material.
    """
    # Bumping the head first takes its row lock (PostgreSQL) or the write lock
    # (SQLite) before we read the previous hash; concurrent appends queue here.
    bumped = session.execute(
        update(AuditHead).where(AuditHead.id == HEAD_ID).values(seq=AuditHead.seq + 1)
    )
    if getattr(bumped, "rowcount", 1) != 1:
        raise RuntimeError("audit_head row is missing; has the database been migrated?")
    seq, prev_hash = session.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID)
    ).one()
    # Round-trip through JSON so what we hash is exactly what the database gives back.
    stored_details = json.loads(json.dumps(details or {}, allow_nan=False))
    at = (now or utcnow()).astimezone(UTC)
    digest = chain_hash(prev_hash, canonical(seq, at, actor, action, target, stored_details))
    entry = AuditEntry(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        target=target,
        details=stored_details,
        prev_hash=prev_hash,
        hash=digest,
    )
    session.add(entry)
    session.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(hash=digest))
    session.flush()
    return entry


def verify(session: Session) -> list[Problem]:
    """Every place the chain does not hold, in seq order; empty means intact."""
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        # One snapshot for the rows and the head, so a concurrent append is not a problem.
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    problems: list[Problem] = []
    expected_seq, prev_hash = 1, GENESIS_HASH
    rows = session.execute(
        select(
            AuditEntry.seq,
            AuditEntry.at,
            AuditEntry.actor,
            AuditEntry.action,
            AuditEntry.target,
            # Read details as text so a row with broken JSON is reported, not fatal.
            cast(AuditEntry.details, String),
            AuditEntry.prev_hash,
            AuditEntry.hash,
        ).order_by(AuditEntry.seq)
    )
    for seq, at, actor, action, target, details_text, row_prev, row_hash in rows:
        if seq != expected_seq:
            problems.append(Problem(expected_seq, f"rows {expected_seq}..{seq - 1} are missing"))
        if row_prev != prev_hash:
            problems.append(Problem(seq, "prev_hash does not match the hash of the row before"))
        try:
            details = json.loads(details_text)
            recomputed = chain_hash(row_prev, canonical(seq, at, actor, action, target, details))
        except (TypeError, ValueError):
            problems.append(Problem(seq, "details are not valid JSON"))
        else:
            if recomputed != row_hash:
                problems.append(Problem(seq, "row contents do not match its hash (edited)"))
        expected_seq, prev_hash = seq + 1, row_hash
    head = session.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID)
    ).one_or_none()
    if head is None:
        problems.append(Problem(expected_seq, "audit_head row is missing"))
    else:
        last = expected_seq - 1
        if head.seq != last:
            # The first seq that the head and the rows disagree about.
            problems.append(
                Problem(
                    min(head.seq, last) + 1,
                    f"the rows end at seq {last} but the head records seq {head.seq}"
                    " (rows removed from the end, or the head edited)",
                )
            )
        elif head.hash != prev_hash:
            problems.append(Problem(last, "the head's hash does not match the last row"))
    return problems
