"""``GET /v1/usage``: the caller's workspace usage per UTC day and model, as JSON or CSV.

A key only ever sees its own workspace: there is no parameter to name another.
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from levant.access.rollups import DailyUsage, daily_usage
from levant.api.auth import PrincipalDep
from levant.api.deps import StateDep
from levant.api.errors import APIError

router = APIRouter()

MAX_DAYS = 366
FIELDS = [
    "day",
    "model",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "price_micros",
]


def _csv(rows: list[DailyUsage]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**asdict(row), "day": row.day.isoformat()})
    return out.getvalue()


@router.get("/v1/usage", response_model=None)
async def usage(
    state: StateDep,
    principal: PrincipalDep,
    start_date: Annotated[date | None, Query()] = None,
    end_date: Annotated[date | None, Query()] = None,
    model: Annotated[str | None, Query(max_length=200)] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> dict[str, Any] | Response:
    end = end_date or datetime.now(UTC).date()
    start = start_date or end - timedelta(days=29)
    if start > end:
        raise APIError(
            400, "start_date is after end_date", param="start_date", code="invalid_value"
        )
    if (end - start).days >= MAX_DAYS:
        raise APIError(
            400, f"At most {MAX_DAYS} days per query", param="start_date", code="invalid_value"
        )
    # A pending batch of usage rows is written within a fraction of a second;
    # flushing first makes a request's own usage visible to the next query.
    await asyncio.to_thread(state.usage.flush, 5.0)

    def query() -> list[DailyUsage]:
        with state.platform.db.reading() as session:
            return daily_usage(session, principal.workspace_id, start, end)

    rows = [r for r in await asyncio.to_thread(query) if model is None or r.model == model]
    if format == "csv":
        return Response(
            _csv(rows),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="usage-{start}-{end}.csv"'},
        )
    return {
        "object": "list",
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "data": [{**asdict(r), "day": r.day.isoformat()} for r in rows],
    }
