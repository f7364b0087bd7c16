"""A short-lived cache of authenticated principals, so the request path skips the database.

Keyed by the key's HMAC digest (never the plaintext). An entry holds the
Principal with its workspace's grants and residency policy, and lives until the
first of: ``ttl_s`` after it was read, the key's own expiry, or any committed
change in this process to API keys, workspaces or model grants (an SQLAlchemy
``after_commit`` hook bumps a generation: a revocation, grant or residency
change made through the console, the CLI or code in this process takes effect
on the next request). A change made by another process (``levant keys revoke``
beside a running server) takes effect within ``ttl_s``. Refusals are never cached.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from levant.access.principal import Principal
from levant.db.tables import ApiKey, ModelGrant, Workspace
from levant.db.types import utcnow

_WATCHED = (ApiKey, ModelGrant, Workspace)
_DIRTY = "levant.principals_changed"
_generation = 0
_gen_lock = threading.Lock()


def generation() -> int:
    """Bumped after every commit that changed a key, grant or workspace in this process."""
    return _generation


def bump() -> None:
    global _generation
    with _gen_lock:
        _generation += 1


@event.listens_for(Session, "after_flush")
def _mark(session: Session, _ctx: Any) -> None:
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, _WATCHED):
            session.info[_DIRTY] = True
            return


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.info.pop(_DIRTY, False):
        bump()


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, _previous: Any) -> None:
    session.info.pop(_DIRTY, None)


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal
    until: float
    generation: int


class PrincipalCache:
    def __init__(
        self, ttl_s: float = 1.0, *, clock: Callable[[], float] = time.monotonic, size: int = 10_000
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._size = size
        self._entries: dict[str, _Entry] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.generation != _generation or self._clock() >= entry.until:
            self._entries.pop(digest, None)
            return None
        return entry.principal

    def put(
        self, digest: str, principal: Principal, expires_at: datetime | None, read_gen: int
    ) -> None:
        """Cache what a read that began at generation ``read_gen`` found (if still current)."""
        if self.ttl_s <= 0 or read_gen != _generation:
            return
        now = self._clock()
        until = now + self.ttl_s
        if expires_at is not None:
            until = min(until, now + (expires_at - utcnow()).total_seconds())
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[digest] = _Entry(principal, until, read_gen)

    def clear(self) -> None:
        self._entries.clear()
