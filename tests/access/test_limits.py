"""Limits under concurrency, Retry-After, settle and all-or-nothing, for both limiters.

Every test runs against ``InMemoryLimiter`` (on a fake clock: time only moves
when the test says) and ``RedisLimiter`` (on the server's clock: the test sleeps,
so windows are kept small, and bounds allow for what drains meanwhile).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from levant.access.limits import (
    Decision,
    InMemoryLimiter,
    Limiter,
    LimitPolicy,
    LimitScope,
    RedisLimiter,
    Reservation,
    month_window,
)
from tests.access.test_limits_redis import redis_url_or_skip

START = datetime(2026, 3, 15, 12, tzinfo=UTC).timestamp()
SCOPE = LimitScope("ws_test", "key_test", "mistral-small")


@dataclass
class Harness:
    limiter: Limiter
    fake_now: list[float] | None
    """The in-memory limiter's clock; None for Redis, which keeps real time."""

    @property
    def exact(self) -> bool:
        return self.fake_now is not None

    async def advance(self, seconds: float) -> None:
        if self.fake_now is not None:
            self.fake_now[0] += seconds
        else:
            await asyncio.sleep(seconds)

    async def reserve(
        self, tokens: int, policy: LimitPolicy, scope: LimitScope = SCOPE
    ) -> tuple[Decision, Reservation | None]:
        return await self.limiter.reserve(scope, policy, tokens)


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        now = [START]
        yield Harness(InMemoryLimiter(clock=lambda: now[0]), now)
        return
    client = Redis.from_url(redis_url_or_skip())
    namespace = f"levant-test:{secrets.token_hex(6)}:rl"  # this test's keys only
    # Open the connections the concurrent tests use, so no request waits on a connect.
    await asyncio.gather(*(client.ping() for _ in range(60)))
    yield Harness(RedisLimiter(client, namespace=namespace), None)
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


Reserved = tuple[Decision, Reservation | None]


async def _at_once(n: int, call: Callable[[int], Awaitable[Reserved]]) -> list[Reserved]:
    """Run ``call(i)`` for i < n, all released by one barrier."""
    barrier = asyncio.Barrier(n)

    async def one(i: int) -> Reserved:
        await barrier.wait()
        return await call(i)

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_fifty_at_once_against_ten_per_second_admits_exactly_ten(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_second=10)  # burst: one second's worth, 10
    results = await _at_once(50, lambda i: harness.reserve(1, policy))
    allowed = [d for d, _ in results if d.allowed]
    denied = [d for d, _ in results if not d.allowed]
    assert len(allowed) == 10
    assert {d.limit_name for d in denied} == {"requests_per_second"}
    assert all(d.retry_after_s is not None and 0 < d.retry_after_s <= 0.1 for d in denied)
    assert all(d.headers["retry-after"] == "1" for d in denied)


async def test_tokens_per_minute_holds_under_concurrent_random_reservations(
    harness: Harness,
) -> None:
    tpm = 10_000
    policy = LimitPolicy(tokens_per_minute=tpm)
    rng = random.Random(1234)
    sizes = [rng.randint(50, 900) for _ in range(60)]
    started = time.monotonic()
    results = await _at_once(len(sizes), lambda i: harness.reserve(sizes[i], policy))
    drained = 0.0 if harness.exact else (time.monotonic() - started) * tpm / 60
    admitted = sum(size for size, (d, _) in zip(sizes, results, strict=True) if d.allowed)
    assert admitted <= tpm + drained
    # Nothing was turned away that would have fitted: each denial was at most one request short.
    for size, (d, _) in zip(sizes, results, strict=True):
        if not d.allowed:
            assert d.limit_name == "tokens_per_minute" and not d.never_fits
            assert admitted + size > tpm


async def test_settle_refunds_unused_tokens_once(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_minute=1000)
    first, reservation = await harness.reserve(800, policy)
    assert first.allowed and reservation is not None
    denied, _ = await harness.reserve(500, policy)
    assert not denied.allowed and denied.limit_name == "tokens_per_minute"

    await harness.limiter.settle(reservation, 100)  # used 100 of the 800 it held
    fits, _ = await harness.reserve(500, policy)
    assert fits.allowed
    assert fits.headers["x-ratelimit-remaining-tokens"] == "400"
    await harness.limiter.settle(reservation, 100)  # a second settle refunds nothing
    again, _ = await harness.reserve(500, policy)
    assert not again.allowed


async def test_settle_charges_what_was_used_beyond_the_reservation(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_minute=1000)
    _, reservation = await harness.reserve(300, policy)
    assert reservation is not None
    await harness.limiter.settle(reservation, 900)
    denied, _ = await harness.reserve(200, policy)
    assert not denied.allowed
    assert denied.retry_after_s == pytest.approx(100 / (1000 / 60), abs=0.05)


async def test_retry_after_is_honoured_for_requests(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_second=20, request_burst=1)
    assert (await harness.reserve(1, policy))[0].allowed
    denied, _ = await harness.reserve(1, policy)
    assert not denied.allowed and denied.retry_after_s is not None
    assert denied.retry_after_s == pytest.approx(0.05, abs=0.01)
    assert denied.headers["retry-after"] == "1"  # whole seconds, rounded up
    if harness.exact:
        await harness.advance(denied.retry_after_s - 0.001)
        early, _ = await harness.reserve(1, policy)
        assert not early.allowed
        assert early.retry_after_s == pytest.approx(0.001, abs=1e-6)
        await harness.advance(0.001)
    else:
        await harness.advance(denied.retry_after_s)
    after, _ = await harness.reserve(1, policy)
    assert after.allowed


async def test_retry_after_is_honoured_for_tokens(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_minute=600)  # 10 tokens a second
    assert (await harness.reserve(600, policy))[0].allowed
    denied, _ = await harness.reserve(5, policy)
    assert denied.limit_name == "tokens_per_minute" and denied.retry_after_s is not None
    assert denied.retry_after_s == pytest.approx(0.5, abs=0.02)
    if harness.exact:
        await harness.advance(denied.retry_after_s * 0.99)
        assert not (await harness.reserve(5, policy))[0].allowed
        await harness.advance(denied.retry_after_s * 0.01)
    else:
        await harness.advance(denied.retry_after_s)
    assert (await harness.reserve(5, policy))[0].allowed


async def test_a_token_denial_takes_no_request_slot_and_vice_versa(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_second=0.01, request_burst=2, tokens_per_minute=100)
    assert (await harness.reserve(80, policy))[0].allowed
    by_tokens, _ = await harness.reserve(50, policy)
    assert by_tokens.limit_name == "tokens_per_minute"
    assert by_tokens.headers["x-ratelimit-remaining-requests"] == "1"
    assert (await harness.reserve(10, policy))[0].allowed  # the slot was still there
    by_requests, _ = await harness.reserve(5, policy)
    assert by_requests.limit_name == "requests_per_second"
    assert by_requests.headers["x-ratelimit-remaining-tokens"] == "10"  # 100 - 80 - 10, not 5 less


async def test_a_monthly_denial_takes_nothing_from_the_minute(harness: Harness) -> None:
    policy = LimitPolicy(tokens_per_minute=1000, tokens_per_month=100)
    assert (await harness.reserve(90, policy))[0].allowed
    denied, _ = await harness.reserve(20, policy)
    assert denied.limit_name == "tokens_per_month"
    assert denied.headers["x-ratelimit-remaining-tokens"] == "910"
    assert denied.headers["x-ratelimit-remaining-tokens-month"] == "10"
    if harness.exact:
        assert denied.retry_after_s == month_window(START)[1] - START
    assert (await harness.reserve(10, policy))[0].allowed


async def test_a_request_larger_than_the_bucket_is_refused_for_good(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_second=1, tokens_per_minute=100)
    decision, reservation = await harness.reserve(101, policy)
    assert not decision.allowed and reservation is None
    assert decision.never_fits and decision.limit_name == "tokens_per_minute"
    assert decision.retry_after_s is None and "retry-after" not in decision.headers
    assert decision.message is not None and "never" in decision.message
    assert (await harness.reserve(100, policy))[0].allowed  # and it took no request slot


async def test_headers_describe_each_configured_limit(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_second=10, tokens_per_minute=1000, tokens_per_month=5000)
    decision, _ = await harness.reserve(100, policy)
    assert decision.allowed and decision.retry_after_s is None and decision.limit_name is None
    h = decision.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("10", "9")
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("1000", "900")
    assert h["x-ratelimit-reset-requests"] == "0.1"
    assert h["x-ratelimit-reset-tokens"] == "6"  # 100 tokens drain in 6 s at 1000 a minute
    assert h["x-ratelimit-remaining-tokens-month"] == "4900"
    assert "retry-after" not in h


async def test_scopes_do_not_share_buckets(harness: Harness) -> None:
    policy = LimitPolicy(requests_per_second=0.01, request_burst=1)
    scopes = [
        LimitScope("ws_1", "key_1", "a"),
        LimitScope("ws_1", "key_2", "a"),
        LimitScope("ws_1", "key_1", "b"),
        LimitScope("ws_2", "key_1", "a"),
        LimitScope("ws_1", None, "a"),
        LimitScope("ws_1"),
    ]
    for scope in scopes:
        assert (await harness.reserve(1, policy, scope))[0].allowed
        assert not (await harness.reserve(1, policy, scope))[0].allowed


async def test_no_limits_admit_everything(harness: Harness) -> None:
    decision, reservation = await harness.reserve(10**9, LimitPolicy())
    assert decision.allowed and decision.headers == {}
    assert reservation is not None and reservation.keys == ()
    await harness.limiter.settle(reservation, 5)


def test_policies_must_be_positive() -> None:
    with pytest.raises(ValueError, match="requests_per_second"):
        LimitPolicy(requests_per_second=0)
    with pytest.raises(ValueError, match="request_burst"):
        LimitPolicy(requests_per_second=1, request_burst=0)
    assert LimitPolicy(requests_per_second=0.5).burst == 1
    assert LimitPolicy(requests_per_second=2.5).burst == 3


def test_month_window_is_the_utc_calendar_month() -> None:
    assert month_window(datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC).timestamp()) == (
        "2024-02",
        datetime(2024, 3, 1, tzinfo=UTC).timestamp(),
    )
    assert month_window(datetime(2025, 12, 31, 23, 59, tzinfo=UTC).timestamp()) == (
        "2025-12",
        datetime(2026, 1, 1, tzinfo=UTC).timestamp(),
    )
