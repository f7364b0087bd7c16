"""RedisLimiter specifics: two processes share one limit, the Lua calendar, key layout and expiry.

Also home of the Redis fixtures ``test_limits.py`` reuses. Each test gets its
own key namespace and deletes only those keys. Redis unreachable: skipped,
except under ``CI=true``, where it fails. Run as ``python -m
tests.access.test_limits_redis URL NAMESPACE SCENARIO N`` it is the child process.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from levant.access.limits import LimitPolicy, LimitScope, RedisLimiter, month_window

REDIS_URL = os.environ.get("LEVANT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REPO = Path(__file__).resolve().parents[2]

# Two scenarios whose buckets do not drain during a test: what passes is exact.
SCENARIOS = {
    "requests": (LimitPolicy(requests_per_second=0.001, request_burst=30), 1, 30),
    "tokens": (LimitPolicy(tokens_per_month=1000), 25, 40),
}
"""name -> (policy, tokens per request, how many requests the limit admits)."""
WAVE = 5


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def redis_url_or_skip() -> str:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        reason = f"Redis unreachable at {REDIS_URL} ({type(exc).__name__}: {exc})"
        if _in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(f"{reason}; set LEVANT_TEST_REDIS_URL (CI=true makes this fail)")
    return REDIS_URL


@pytest.fixture
async def redis_namespace() -> AsyncIterator[tuple[Redis, str]]:
    """A client and a key namespace of this test's own; its keys are deleted afterwards."""
    url = redis_url_or_skip()
    client = Redis.from_url(url)
    namespace = f"levant-test:{secrets.token_hex(6)}:rl"
    yield client, namespace
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_two_processes_share_one_limit(redis_namespace: tuple[Redis, str]) -> None:
    _, namespace = redis_namespace
    for scenario, (_, _, admits) in SCENARIOS.items():
        per_child = admits  # together they ask for twice what the limit admits
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.access.test_limits_redis",
                    REDIS_URL,
                    namespace,
                    scenario,
                    str(per_child),
                ],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        try:
            for child in children:  # both connected and warmed up before either starts
                assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            start = time.time() + 0.2  # one instant for both, so their requests interleave
            for child in children:
                assert child.stdin is not None
                child.stdin.write(f"{start}\n")
                child.stdin.flush()
            counts = [int(child.communicate(timeout=30)[0].split()[-1]) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
        assert all(c.returncode == 0 for c in children)
        assert sum(counts) == admits, (scenario, counts)
        assert all(c > 0 for c in counts), f"one process never got through: {counts}"


async def _child(url: str, namespace: str, scenario: str, n: int) -> None:
    policy, tokens, _ = SCENARIOS[scenario]
    client = Redis.from_url(url)
    limiter = RedisLimiter(client, namespace=namespace)
    scope = LimitScope("ws_shared", None, scenario)
    await asyncio.gather(*(client.ping() for _ in range(WAVE)))  # connect before the start
    print("ready", flush=True)
    start = float(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.sleep(max(0.0, start - time.time()))
    allowed = 0
    for wave in range(0, n, WAVE):  # concurrent waves, spread out so the processes overlap
        decisions = await asyncio.gather(
            *(limiter.reserve(scope, policy, tokens) for _ in range(min(WAVE, n - wave)))
        )
        allowed += sum(d.allowed for d, _ in decisions)
        await asyncio.sleep(0.01)
    await client.aclose()
    print("allowed", allowed, flush=True)


MONTH_EDGES = [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
    datetime(2024, 3, 1, tzinfo=UTC),
    datetime(2026, 12, 31, 12, tzinfo=UTC),
    datetime(2100, 2, 28, 23, 59, 59, tzinfo=UTC),
    datetime(2100, 3, 1, tzinfo=UTC),
]


@pytest.mark.parametrize("when", MONTH_EDGES, ids=lambda d: d.isoformat())
async def test_the_lua_calendar_agrees_with_python(
    redis_namespace: tuple[Redis, str], when: datetime
) -> None:
    client, namespace = redis_namespace
    limiter = RedisLimiter(client, namespace=namespace)
    policy = LimitPolicy(tokens_per_month=10)
    now = when.timestamp()
    month, next_month = month_window(now)
    assert month == f"{when.year:04d}-{when.month:02d}"

    _, reservation = await limiter.reserve(LimitScope("ws_cal"), policy, 10, now=now)
    assert reservation is not None
    assert reservation.keys == (f"{namespace}:ws_cal:*:*:tokens_per_month:{month}",)
    denied, _ = await limiter.reserve(LimitScope("ws_cal"), policy, 1, now=now)
    assert denied.limit_name == "tokens_per_month"
    assert denied.retry_after_s == pytest.approx(next_month - now, abs=1e-6)


async def test_keys_are_namespaced_and_expire(redis_namespace: tuple[Redis, str]) -> None:
    client, namespace = redis_namespace
    limiter = RedisLimiter(client, namespace=namespace)
    policy = LimitPolicy(requests_per_second=10, tokens_per_minute=600, tokens_per_month=10**6)
    scope = LimitScope("ws_a", "key_b", "mistral-small")
    decision, reservation = await limiter.reserve(scope, policy, 60)
    assert decision.allowed and reservation is not None

    month, next_month = month_window(datetime.now(UTC).timestamp())
    base = f"{namespace}:ws_a:key_b:mistral-small"
    rate_keys = [f"{base}:requests_per_second", f"{base}:tokens_per_minute"]
    month_key = f"{base}:tokens_per_month:{month}"
    reservation_key = f"{namespace}:reservation:{reservation.id}"
    found = {k.decode() async for k in client.scan_iter(match=f"{namespace}:*")}
    assert found == {*rate_keys, month_key, reservation_key}
    # A rate bucket lives until it has drained (+1 s): 0.1 s and 6 s here.
    assert 0 < await client.pttl(rate_keys[0]) <= 1100
    assert 5000 < await client.pttl(rate_keys[1]) <= 7000
    assert abs(await client.expiretime(month_key) - (next_month + 86400)) <= 2
    assert 0 < await client.ttl(reservation_key) <= 3600

    await limiter.settle(reservation, 30)
    assert not await client.exists(reservation_key)
    assert await client.get(month_key) == b"30"


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
