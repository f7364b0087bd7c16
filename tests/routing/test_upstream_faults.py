"""Upstream faults over a real socket: a hang, a 500, a stream cut mid-way, a stall.

The client always gets a clean, typed error within its timeout, never a hung
request; the router's breaker opens after repeated failures and closes after
the upstream recovers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from levant.routing import (
    Breakers,
    NoDeploymentInPolicy,
    ResidencyPolicy,
    Router,
    UpstreamClient,
    UpstreamError,
    UpstreamPool,
    UpstreamStreamBroken,
    UpstreamTimeout,
)
from tests.routing.fake_upstream import FakeUpstream
from tests.routing.helpers import BODY, dep

TIMEOUT = 0.3
US = ResidencyPolicy.from_workspace(["US"])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def reset(fake: FakeUpstream) -> None:
    fake.mode = "ok"
    fake.calls = 0


def client(fake: FakeUpstream, retries: int = 1) -> UpstreamClient:
    return UpstreamClient(
        dep(
            "us-1",
            "us-east",
            url=fake.url,
            read_timeout_s=TIMEOUT,
            max_retries=retries,
            backoff_base_s=0.01,
            backoff_max_s=0.02,
        ),
        api_key="sk-fake-key",
    )


async def test_ok_both_ways(fake: FakeUpstream) -> None:
    c = client(fake)
    reply = await c.complete(BODY)
    assert reply.served.region == "us-east" and reply.usage is not None
    async with await c.open_stream(BODY) as stream:
        text = "".join([chunk.content async for chunk in stream])
    assert text == "Bonjour" and stream.usage is not None
    await c.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_hang_times_out_cleanly_after_bounded_retries(
    fake: FakeUpstream, stream: bool
) -> None:
    fake.mode = "hang"
    c = client(fake, retries=1)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await (c.open_stream(BODY) if stream else c.complete(BODY))
    elapsed = time.monotonic() - started
    assert fake.calls == 2
    assert elapsed < 2 * TIMEOUT + 1.0  # two reads that time out, plus a short backoff
    await c.aclose()


async def test_500_is_a_clean_error(fake: FakeUpstream) -> None:
    fake.mode = "500"
    c = client(fake, retries=2)
    with pytest.raises(UpstreamError) as info:
        await c.complete(BODY)
    assert info.value.status == 500 and fake.calls == 3
    await c.aclose()


async def test_stream_dropped_mid_way_is_broken_not_replayed(fake: FakeUpstream) -> None:
    fake.mode = "drop"
    c = client(fake, retries=3)
    stream = await c.open_stream(BODY)
    got = []
    with pytest.raises(UpstreamStreamBroken) as info:
        async for chunk in stream:
            got.append(chunk.content)
    assert got == ["Bon"] and info.value.started and fake.calls == 1
    await c.aclose()


async def test_stream_stalled_mid_way_ends_within_the_read_timeout(fake: FakeUpstream) -> None:
    fake.mode = "stall"
    c = client(fake)
    stream = await c.open_stream(BODY)
    started = time.monotonic()
    with pytest.raises(UpstreamStreamBroken, match="timed out mid-way"):
        async for _ in stream:
            pass
    assert time.monotonic() - started < TIMEOUT + 1.0
    await c.aclose()


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_opens_after_repeated_failures_and_closes_after_recovery(
    fake: FakeUpstream,
) -> None:
    d = dep("us-1", "us-east", url=fake.url, read_timeout_s=TIMEOUT, max_retries=0)
    d = d.model_copy(update={"breaker": d.breaker.model_copy(update={"failure_threshold": 3})})
    clock = Clock()
    router = Router([d], Breakers(clock))
    pool = UpstreamPool({d.name: UpstreamClient(d)})
    fake.mode = "500"
    for _ in range(3):
        with pytest.raises(NoDeploymentInPolicy, match="upstream answered 500"):
            await router.route("m", US, pool.complete(BODY, US))
    assert fake.calls == 3 and router.snapshot()[0]["circuit"] == "open"
    with pytest.raises(NoDeploymentInPolicy, match="circuit open"):
        await router.route("m", US, pool.complete(BODY, US))
    assert fake.calls == 3  # open: the upstream is not called at all

    fake.mode = "ok"
    clock.now += d.breaker.cooldown_s
    routed = await router.route("m", US, pool.stream(BODY, US))  # the half-open probe
    async with routed.value as stream:
        assert "".join([c.content async for c in stream]) == "Bonjour"
    assert router.snapshot()[0]["circuit"] == "closed"
    assert routed.headers == {"levant-region": "us-east", "levant-deployment": "us-1"}
    await pool.aclose()


async def test_upstream_reporting_a_region_outside_the_policy_is_refused(
    fake: FakeUpstream,
) -> None:
    # Configured as an EU deployment, but the upstream says it served from us-east.
    d = dep("mislabelled", "eu-west-paris", url=fake.url, max_retries=0)
    eu = ResidencyPolicy.from_workspace(["EU"])
    pool = UpstreamPool({d.name: UpstreamClient(d)})
    with pytest.raises(NoDeploymentInPolicy, match="reported serving region 'us-east'"):
        await Router([d]).route("m", eu, pool.stream(BODY, eu))
    await pool.aclose()
