"""SpendGuard: a workspace stops at its monthly budget, counting running requests' worst case."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

from levant.access.limits import SpendGuard, month_spend_from
from levant.access.pricing import Price, cost_micros, worst_case_micros
from levant.db.session import Database
from levant.db.tables import UsageEvent

NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)
T = NOW.timestamp()


class Recorded:
    """A stand-in for usage_events: what each workspace has spent, and how often it was read."""

    def __init__(self, micros: int = 0) -> None:
        self.micros = micros
        self.reads: list[tuple[str, datetime]] = []
        self._lock = threading.Lock()

    def __call__(self, workspace_id: str, since: datetime) -> int:
        with self._lock:
            self.reads.append((workspace_id, since))
        return self.micros


async def test_a_request_that_would_pass_the_budget_is_stopped() -> None:
    guard = SpendGuard(Recorded(900), clock=lambda: T)
    ok, hold = await guard.reserve("ws_a", 1000, 50)
    assert ok.allowed and hold is not None
    denied, none = await guard.reserve("ws_a", 1000, 60)  # 900 + 50 running + 60 > 1000
    assert not denied.allowed and none is None
    assert denied.limit_name == "monthly_spend" and not denied.never_fits
    assert denied.message is not None and "monthly spend limit reached" in denied.message
    assert denied.retry_after_s == datetime(2026, 4, 1, tzinfo=UTC).timestamp() - T

    guard.settle(hold, 10)  # it cost 10, not the 50 held
    assert (await guard.reserve("ws_a", 1000, 60))[0].allowed  # 900 + 10 + 60
    guard.settle(hold, 10)  # settling twice changes nothing
    assert not (await guard.reserve("ws_a", 1000, 40))[0].allowed  # 900 + 10 + 60 + 40


async def test_fifty_at_once_against_ten_requests_worth_of_budget() -> None:
    recorded = Recorded(0)
    guard = SpendGuard(recorded, clock=lambda: T)
    barrier = asyncio.Barrier(50)

    async def one() -> bool:
        await barrier.wait()
        return (await guard.reserve("ws_a", 1000, 100))[0].allowed

    assert sum(await asyncio.gather(*(one() for _ in range(50)))) == 10
    assert recorded.reads == [("ws_a", datetime(2026, 3, 1, tzinfo=UTC))]  # read once, shared


async def test_the_recorded_sum_is_reread_after_the_ttl_without_double_counting() -> None:
    now = [T]
    recorded = Recorded(0)
    guard = SpendGuard(recorded, ttl_s=5, writer_lag_s=2, clock=lambda: now[0])
    _, hold = await guard.reserve("ws_a", 1000, 500)
    assert hold is not None
    guard.settle(hold, 400)
    recorded.micros = 400  # the usage writer committed it
    now[0] += 1
    assert not (await guard.reserve("ws_a", 1000, 700))[0].allowed  # 400 settled + 700
    now[0] += 5  # past the ttl and the writer's lag: the read now holds the 400
    assert (await guard.reserve("ws_a", 1000, 600))[0].allowed
    assert len(recorded.reads) == 2


async def test_a_new_month_starts_from_what_it_has_recorded() -> None:
    now = [datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC).timestamp()]
    recorded = Recorded(1000)
    guard = SpendGuard(recorded, ttl_s=3600, clock=lambda: now[0])
    assert not (await guard.reserve("ws_a", 1000, 1))[0].allowed
    recorded.micros = 0
    now[0] += 1
    assert (await guard.reserve("ws_a", 1000, 1))[0].allowed
    assert recorded.reads[-1] == ("ws_a", datetime(2026, 4, 1, tzinfo=UTC))


async def test_budgets_are_per_workspace_and_optional() -> None:
    guard = SpendGuard(Recorded(1000), clock=lambda: T)
    assert not (await guard.reserve("ws_a", 1000, 1))[0].allowed
    assert (await guard.reserve("ws_b", 2000, 1))[0].allowed
    assert (await guard.reserve("ws_c", None, 10**12))[0].allowed


async def test_a_request_dearer_than_the_whole_budget_never_fits() -> None:
    guard = SpendGuard(Recorded(0), clock=lambda: T)
    decision, _ = await guard.reserve("ws_a", 1000, 1001)
    assert decision.never_fits and decision.retry_after_s is None
    assert "retry-after" not in decision.headers


def test_month_spend_sums_this_months_usage_of_one_workspace(db: Database) -> None:
    price = Price.from_mapping({"input_per_million": 2, "output_per_million": 6})

    def event(i: int, workspace: str, at: datetime) -> UsageEvent:
        return UsageEvent(
            request_id=f"req-{i}", workspace_id=workspace, key_id=None, model="m",
            deployment="local", region="local", prompt_tokens=1000, completion_tokens=500,
            cached_tokens=0, price_micros=cost_micros(price, 1000, 500, 0), latency_ms=1,
            status="ok", created_at=at,
        )  # fmt: skip

    start = datetime(2026, 3, 1, tzinfo=UTC)
    with db.writing() as session:
        session.add_all(
            [
                event(1, "ws_a", start),
                event(2, "ws_a", NOW),
                event(3, "ws_a", start - timedelta(microseconds=1)),  # February
                event(4, "ws_b", NOW),
            ]
        )
    spent = month_spend_from(db)
    assert spent("ws_a", start) == 2 * worst_case_micros(price, 1000, 500) == 10_000
    assert spent("ws_nobody", start) == 0
