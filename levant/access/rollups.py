"""Daily usage rollups per workspace and model, for the console and for billing.

Computed from ``usage_events`` over UTC days with the (workspace_id, created_at)
index; one row per request there means a retried request is never counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Date, case, func, select
from sqlalchemy.orm import Session

from levant.db.tables import UsageEvent


@dataclass(frozen=True, slots=True)
class DailyUsage:
    day: date
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    price_micros: int


def daily_usage(session: Session, workspace_id: str, start: date, end: date) -> list[DailyUsage]:
    """Usage of ``workspace_id`` per UTC day and model, for ``start`` ≤ day ≤ ``end``."""
    lo = datetime.combine(start, time.min, UTC)
    hi = datetime.combine(end + timedelta(days=1), time.min, UTC)
    day = func.date(UsageEvent.created_at, type_=Date)
    query = (
        select(
            day,
            UsageEvent.model,
            func.count(),
            func.sum(case((UsageEvent.status == "error", 1), else_=0)),
            func.sum(UsageEvent.prompt_tokens),
            func.sum(UsageEvent.completion_tokens),
            func.sum(UsageEvent.cached_tokens),
            func.sum(UsageEvent.price_micros),
        )
        .where(
            UsageEvent.workspace_id == workspace_id,
            UsageEvent.created_at >= lo,
            UsageEvent.created_at < hi,
        )
        .group_by(day, UsageEvent.model)
        .order_by(day, UsageEvent.model)
    )
    return [
        DailyUsage(d, model, int(n), int(err), int(p), int(c), int(cached), int(price))
        for d, model, n, err, p, c, cached, price in session.execute(query)
    ]
