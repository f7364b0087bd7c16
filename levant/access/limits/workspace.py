"""Which limits apply to a request: stored per workspace (optionally per key and model).

Rows in ``workspace_limits`` are read through a short TTL cache so the request
path does not query the database every time; an admin change applies within
``ttl_s``, or at once in the process that made it (``WorkspaceLimits.invalidate``,
which the console API calls after its commit). The most specific row wins:
(key, model) > (key, *) > (*, model) > (*, *), then the configured defaults.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from levant.access import audit
from levant.access.limits.policy import ANY, LimitPolicy, LimitScope
from levant.db.session import Database
from levant.db.tables import WorkspaceLimit


@dataclass(frozen=True, slots=True)
class LimitRow:
    key_id: str
    model: str
    policy: LimitPolicy
    monthly_budget_micros: int | None


def load_rows(session: Session, workspace_id: str) -> list[LimitRow]:
    rows = session.scalars(
        select(WorkspaceLimit).where(WorkspaceLimit.workspace_id == workspace_id)
    )
    return [
        LimitRow(
            r.key_id,
            r.model,
            LimitPolicy(r.requests_per_second, r.tokens_per_minute, r.tokens_per_month),
            r.monthly_budget_micros,
        )
        for r in rows
    ]


def set_limit(
    session: Session,
    workspace_id: str,
    *,
    actor: str,
    key_id: str = ANY,
    model: str = ANY,
    policy: LimitPolicy,
    monthly_budget_micros: int | None = None,
) -> None:
    """Create or replace one limit row, audited."""
    row = session.get(WorkspaceLimit, (workspace_id, key_id, model))
    if row is None:
        row = WorkspaceLimit(workspace_id=workspace_id, key_id=key_id, model=model)
        session.add(row)
    row.requests_per_second = policy.requests_per_second
    row.tokens_per_minute = policy.tokens_per_minute
    row.tokens_per_month = policy.tokens_per_month
    row.monthly_budget_micros = monthly_budget_micros
    audit.append(
        session,
        action="limit.changed",
        actor=actor,
        target=f"workspace:{workspace_id}",
        details={
            "key_id": key_id,
            "model": model,
            "requests_per_second": policy.requests_per_second,
            "tokens_per_minute": policy.tokens_per_minute,
            "tokens_per_month": policy.tokens_per_month,
            "monthly_budget_micros": monthly_budget_micros,
        },
    )


def delete_limit(
    session: Session, workspace_id: str, *, actor: str, key_id: str = ANY, model: str = ANY
) -> bool:
    """Delete one limit row, audited; False (nothing audited) if there was none."""
    row = session.get(WorkspaceLimit, (workspace_id, key_id, model))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    audit.append(
        session,
        action="limit.deleted",
        actor=actor,
        target=f"workspace:{workspace_id}",
        details={"key_id": key_id, "model": model},
    )
    return True


@dataclass(frozen=True, slots=True)
class Applied:
    """The limits one request runs under."""

    scope: LimitScope
    policy: LimitPolicy
    monthly_budget_micros: int | None


class WorkspaceLimits:
    def __init__(
        self,
        db: Database,
        *,
        defaults: LimitPolicy | None = None,
        default_budget_micros: int | None = None,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._defaults = defaults or LimitPolicy()
        self._default_budget = default_budget_micros
        self._ttl = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, list[LimitRow]]] = {}
        self._epoch = 0
        """Bumped by ``invalidate``: a read that began before it is not cached."""
        self._lock = threading.Lock()

    def rows(self, workspace_id: str) -> list[LimitRow]:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(workspace_id)
            epoch = self._epoch
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        with self._db.reading() as session:
            rows = load_rows(session, workspace_id)
        with self._lock:
            if self._epoch == epoch:
                self._cache[workspace_id] = (now, rows)
        return rows

    def cached_rows(self, workspace_id: str) -> list[LimitRow] | None:
        """The rows if the cache holds them fresh, without touching the database."""
        hit = self._cache.get(workspace_id)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return hit[1]
        return None

    def invalidate(self, workspace_id: str | None = None) -> None:
        """Forget cached rows (one workspace's, or all): the next request reads the database.

        Call it after the change has committed. Other processes still wait out ``ttl_s``.
        """
        with self._lock:
            self._epoch += 1
            if workspace_id is None:
                self._cache.clear()
            else:
                self._cache.pop(workspace_id, None)

    def applied(self, workspace_id: str, key_id: str, model: str) -> Applied:
        """Blocking (may read the database): call it from a worker thread."""
        return self._pick(self.rows(workspace_id), workspace_id, key_id, model)

    def applied_cached(self, workspace_id: str, key_id: str, model: str) -> Applied | None:
        """``applied`` when the workspace's rows are cached (never blocks), else None."""
        rows = self.cached_rows(workspace_id)
        return None if rows is None else self._pick(rows, workspace_id, key_id, model)

    def _pick(self, found: list[LimitRow], workspace_id: str, key_id: str, model: str) -> Applied:
        rows = {(r.key_id, r.model): r for r in found}
        budget_row = rows.get((ANY, ANY))
        budget = budget_row.monthly_budget_micros if budget_row else self._default_budget
        for k, m in ((key_id, model), (key_id, ANY), (ANY, model), (ANY, ANY)):
            row = rows.get((k, m))
            if row is not None:
                scope = LimitScope(workspace_id, None if k == ANY else k, m)
                return Applied(scope, row.policy, budget)
        return Applied(LimitScope(workspace_id, None, ANY), self._defaults, budget)
