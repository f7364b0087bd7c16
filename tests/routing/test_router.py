from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from levant.routing import (
    Breakers,
    Deployment,
    DeploymentFailure,
    NoDeploymentInPolicy,
    ResidencyPolicy,
    Router,
    StaticHealth,
    UpstreamError,
    UpstreamStreamBroken,
)
from tests.routing.helpers import dep

EU = ResidencyPolicy.from_workspace(["EU"])
EU_US = ResidencyPolicy.from_workspace(["EU", "US"])

PARIS = dep("paris", "eu-west-paris", backend="local")
FRANKFURT = dep("frankfurt", "eu-central-frankfurt")
US = dep("us", "us-east")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class failing:
    """An attempt that fails on the named deployments and records every call."""

    def __init__(self, *names: str, retryable: bool = True) -> None:
        self.names = names
        self.retryable = retryable
        self.calls: list[str] = []

    async def __call__(self, d: Deployment) -> str:
        self.calls.append(d.name)
        if d.name in self.names:
            raise DeploymentFailure(d.name, "boom", retryable=self.retryable)
        return d.name


def test_candidates_stay_inside_the_policy_local_first() -> None:
    router = Router([US, FRANKFURT, PARIS])
    assert router.candidates("m", EU) == [PARIS, FRANKFURT]
    assert router.candidates("m", EU_US)[0] == PARIS
    assert router.candidates("other", EU) == []


def test_unavailable_deployments_go_last() -> None:
    health = StaticHealth({"paris"})
    router = Router([PARIS, FRANKFURT], health=health)
    assert router.candidates("m", EU) == [FRANKFURT, PARIS]


def test_weight_spreads_traffic() -> None:
    heavy, light = dep("heavy", "eu-west-paris", weight=9), dep("light", "eu-west-dublin")
    router = Router([heavy, light], rng=random.Random(7))
    firsts = [router.candidates("m", EU)[0].name for _ in range(2000)]
    assert 0.85 < firsts.count("heavy") / len(firsts) < 0.95


def test_zero_retention_workspace_skips_upstreams_that_may_retain() -> None:
    keeps = dep("vendor", "eu-west-paris")
    promises = Deployment(**{**keeps.model_dump(), "name": "levant-eu", "zero_retention": True})
    router = Router([keeps, promises])
    zero = ResidencyPolicy.from_workspace(["EU"], "zero")
    assert router.candidates("m", zero) == [promises]


async def test_eu_down_gives_a_clear_error_not_the_us() -> None:
    attempt = failing()
    router = Router([PARIS, US], health=StaticHealth({"paris"}))
    with pytest.raises(NoDeploymentInPolicy) as info:
        await router.route("m", EU, attempt)
    assert attempt.calls == []
    err = info.value
    assert err.status == 503 and err.code == "no_deployment_in_policy"
    assert str(err) == (
        "No deployment of model 'm' that this workspace may use is available "
        "(workspace policy allows only EU regions (eu-west-paris)): "
        "paris (eu-west-paris): down. Not used because outside the policy: us (us-east)."
    )


async def test_no_deployment_inside_the_policy_at_all_is_403() -> None:
    with pytest.raises(NoDeploymentInPolicy) as info:
        await Router([US]).route("m", EU, failing())
    assert info.value.status == 403
    assert (
        "Model 'm' has no deployment this workspace may use: workspace policy allows only EU"
        in (info.value.message)
    )


async def test_eu_and_us_policy_fails_over_to_us() -> None:
    attempt = failing("paris")
    routed = await Router([PARIS, US]).route("m", EU_US, attempt)
    assert routed.value == "us" and routed.region == "us-east"
    assert routed.headers == {"levant-region": "us-east", "levant-deployment": "us"}
    assert [(a.deployment, a.outcome) for a in routed.attempts] == [("paris", "boom"), ("us", "ok")]


async def test_non_retryable_failure_is_raised_as_is() -> None:
    with pytest.raises(DeploymentFailure):
        await Router([PARIS, US]).route("m", EU_US, failing("paris", retryable=False))


async def test_client_fault_is_raised_and_not_held_against_the_deployment() -> None:
    async def attempt(d: Deployment) -> str:
        raise UpstreamError(d.name, 400, "bad request")

    router = Router([FRANKFURT])
    for _ in range(10):
        with pytest.raises(UpstreamError):
            await router.route("m", EU, attempt)
    assert router.breakers.get(FRANKFURT).consecutive_failures == 0


async def test_breaker_opens_then_recovers_through_the_router() -> None:
    clock = Clock()
    router = Router([PARIS, US], Breakers(clock))  # the local one is always tried first
    broken = failing("paris")
    for _ in range(5):  # default threshold
        assert (await router.route("m", EU_US, broken)).value == "us"
    assert router.snapshot()[0]["circuit"] == "open"
    broken.calls.clear()
    assert (await router.route("m", EU_US, broken)).value == "us"
    assert broken.calls == ["us"]  # open: not even tried
    clock.now += 30
    assert (await router.route("m", EU_US, failing())).value == "paris"  # the probe
    assert router.snapshot()[0]["circuit"] == "closed"


async def test_stream_broken_after_commit_counts_against_the_deployment() -> None:
    router = Router([FRANKFURT])
    routed = await router.route("m", EU, failing())
    router.record_failure(routed.deployment)
    assert router.breakers.get(FRANKFURT).consecutive_failures == 1
    assert not UpstreamStreamBroken("x", "cut", started=True).retryable


REGIONS = [
    "eu-west-paris",
    "eu-central-frankfurt",
    "eea-north-oslo",
    "ch-zurich",
    "us-east",
    "us-west",
    "uk-south-london",
    "local",
]
POLICIES = [["EU"], ["EEA"], ["EU", "US"], ["us-east"], ["CH", "eu-west-paris"], [], None]


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[Deployment], list[str] | None, set[str], set[str]]:
    n = draw(st.integers(1, 8))
    deployments = [
        dep(
            f"d{i}",
            draw(st.sampled_from(REGIONS)),
            backend=draw(st.sampled_from(["local", "upstream"])),
            weight=draw(st.integers(1, 5)),
        )
        for i in range(n)
    ]
    names = [d.name for d in deployments]
    down = set(draw(st.lists(st.sampled_from(names), unique=True)))
    failing = set(draw(st.lists(st.sampled_from(names), unique=True)))
    return deployments, draw(st.sampled_from(POLICIES)), down, failing


@settings(max_examples=300, deadline=None)
@given(scenario(), st.integers(0, 2**32 - 1), st.integers(1, 12))
async def test_no_attempt_ever_leaves_the_policy(
    case: tuple[list[Deployment], list[str] | None, set[str], set[str]], seed: int, requests: int
) -> None:
    deployments, allowed, down, failing_names = case
    policy = ResidencyPolicy.from_workspace(allowed)
    clock = Clock()
    router = Router(deployments, Breakers(clock), StaticHealth(down), rng=random.Random(seed))
    by_name = {d.name: d for d in deployments}
    attempted: list[Deployment] = []

    async def attempt(d: Deployment) -> str:
        attempted.append(d)
        if d.name in failing_names:
            raise DeploymentFailure(d.name, "fault", retryable=True)
        return d.name

    for i in range(requests):
        clock.now = i * 11.0  # breakers open, cool down and probe along the way
        try:
            routed = await router.route("m", policy, attempt)
        except NoDeploymentInPolicy as err:
            servable = [
                d
                for d in deployments
                if policy.allows(d.region) and d.name not in down and d.name not in failing_names
            ]
            # Refused only if nothing in policy could serve (or the ones that could are open).
            assert (
                all(not router.breakers.get(d).available() or d.name in down for d in servable)
                or not servable
            )
            assert policy.describe(()) in err.message
        else:
            assert policy.allows(routed.region)
            assert by_name[routed.value] == routed.deployment
    assert all(policy.allows(d.region) for d in attempted)
