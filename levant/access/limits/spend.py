"""``SpendGuard``: a hard stop when a workspace's spending this UTC month would pass its budget.

Spent = this month's ``usage_events.price_micros`` (re-read at most every
``ttl_s`` per workspace) + requests settled since that read + the worst-case
price of requests still running. Counts are per gateway process; a request
settled just before a re-read may count twice for ``writer_lag_s`` — it errs
towards stopping, never towards overspending.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import func, select

from levant.access.limits.policy import Decision, month_window
from levant.db.session import Database
from levant.db.tables import UsageEvent

MonthSpend = Callable[[str, datetime], int]
"""(workspace id, start of the month) -> micros spent since then, as recorded."""


def month_spend_from(db: Database) -> MonthSpend:
    """Sum ``usage_events.price_micros`` (workspace, created_at index) since the month began."""

    def spent(workspace_id: str, since: datetime) -> int:
        query = select(func.coalesce(func.sum(UsageEvent.price_micros), 0)).where(
            UsageEvent.workspace_id == workspace_id, UsageEvent.created_at >= since
        )
        with db.reading() as session:
            return int(session.scalar(query) or 0)

    return spent


@dataclass(frozen=True, slots=True)
class SpendHold:
    """A running request's worst-case price, held against its workspace's budget."""

    id: str
    workspace_id: str
    worst_case_micros: int


@dataclass(slots=True)
class _Workspace:
    month: str = ""
    recorded: int = 0
    read_at: float = float("-inf")
    held: dict[str, int] = field(default_factory=dict)
    settled: list[tuple[float, int]] = field(default_factory=list)
    """(when, micros) of requests settled since the last read, maybe not in it yet."""
    settled_total: int = 0
    """The sum of ``settled``'s micros, kept as it changes (no O(n) sum per request)."""
    held_total: int = 0
    """The sum of ``held``'s values, likewise."""
    refresh: asyncio.Lock = field(default_factory=asyncio.Lock)


class SpendGuard:
    """Per-workspace monthly budgets in micro-units of the billing currency (micro-euros)."""

    def __init__(
        self,
        month_spend: MonthSpend,
        *,
        ttl_s: float = 5.0,
        writer_lag_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._month_spend = month_spend
        self._ttl_s = ttl_s
        self._writer_lag_s = writer_lag_s
        self._clock = clock
        self._lock = threading.Lock()
        self._workspaces: dict[str, _Workspace] = {}

    async def reserve(
        self,
        workspace_id: str,
        budget_micros: int | None,
        worst_case_micros: int,
        now: float | None = None,
    ) -> tuple[Decision, SpendHold | None]:
        """Hold ``worst_case_micros`` if spent + held + it stays within ``budget_micros``."""
        if worst_case_micros < 0:
            raise ValueError("worst_case_micros must not be negative")
        hold = SpendHold(secrets.token_hex(12), workspace_id, worst_case_micros)
        if budget_micros is None:
            return Decision(allowed=True), hold  # untracked: settle() will ignore it
        t = self._clock() if now is None else now
        month, next_month = month_window(t)
        ws = self._workspace(workspace_id)
        if ws.month != month or t - ws.read_at >= self._ttl_s:
            async with ws.refresh:  # one read per workspace at a time; the rest reuse it
                if ws.month != month or t - ws.read_at >= self._ttl_s:
                    start = datetime.fromtimestamp(t, UTC).replace(
                        day=1, hour=0, minute=0, second=0, microsecond=0
                    )
                    recorded = await asyncio.to_thread(self._month_spend, workspace_id, start)
                    self._record_read(ws, month, recorded, t)
        with self._lock:  # check and hold with no await between: atomic for this process
            spent = ws.recorded + ws.settled_total + ws.held_total
            if spent + worst_case_micros <= budget_micros:
                ws.held[hold.id] = worst_case_micros
                ws.held_total += worst_case_micros
                return Decision(allowed=True), hold
        never = worst_case_micros > budget_micros
        wait = next_month - t
        message = (
            f"monthly spend limit reached for workspace {workspace_id}: "
            f"{_money(spent)} spent or running, this request may cost up to "
            f"{_money(worst_case_micros)}, budget {_money(budget_micros)}"
        )
        if never:
            message += "; this request alone exceeds the budget"
        return Decision(
            allowed=False,
            retry_after_s=None if never else wait,
            limit_name="monthly_spend",
            headers={} if never else {"retry-after": str(max(1, math.ceil(wait)))},
            never_fits=never,
            message=message,
        ), None

    def settle(self, hold: SpendHold, actual_micros: int, now: float | None = None) -> None:
        """Replace the hold with what the request cost; call it when its usage row is submitted."""
        t = self._clock() if now is None else now
        with self._lock:
            ws = self._workspaces.get(hold.workspace_id)
            if ws is None:
                return
            held = ws.held.pop(hold.id, None)
            if held is None:
                return
            ws.held_total -= held
            ws.settled.append((t, actual_micros))
            ws.settled_total += actual_micros

    def _workspace(self, workspace_id: str) -> _Workspace:
        with self._lock:
            ws = self._workspaces.get(workspace_id)
            if ws is None:
                ws = self._workspaces[workspace_id] = _Workspace()
            return ws

    def _record_read(self, ws: _Workspace, month: str, recorded: int, t: float) -> None:
        with self._lock:
            if ws.month != month:
                ws.settled.clear()  # last month's spending no longer counts
            else:
                # Rows settled well before the read are in it now; later ones may not be.
                ws.settled = [(at, m) for at, m in ws.settled if at >= t - self._writer_lag_s]
            ws.settled_total = sum(m for _, m in ws.settled)
            ws.month, ws.recorded, ws.read_at = month, recorded, t


def _money(micros: int) -> str:
    """Currency units with as many decimals as the amount needs (at least two)."""
    text = f"{micros / 1_000_000:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"
