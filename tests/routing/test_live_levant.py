"""Two real Levants as two regions: an EU one with its local engine, a "US" one over HTTP.

The EU side runs the real ModelService in process (the path the chat route will
plug in through ``primed``); the US side is a live Levant server reached with
the upstream client. Every request to the US server goes through a counting
transport, so "never served by the US" is checked at the socket, not just in
the router's answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from levant.config import Settings
from levant.models.tokenizers.protocol import ChatMessage
from levant.routing import (
    Deployment,
    DeploymentFailure,
    NoDeploymentInPolicy,
    PrimedStream,
    ResidencyPolicy,
    Router,
    StaticHealth,
    UpstreamClient,
    UpstreamPool,
    UpstreamStream,
    primed,
)
from levant.serving.registry import ModelRegistry
from levant.serving.service import Finished, ModelService, TextDelta
from tests.conftest import DEFAULT_MODEL, LiveServer, isolated_home

pytestmark = pytest.mark.slow

EU_ONLY = ResidencyPolicy.from_workspace(["EU"])
EU_US = ResidencyPolicy.from_workspace(["EU", "US"])
BODY = {
    "model": DEFAULT_MODEL,
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 8,
    "temperature": 0,
}


class Counting(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture(scope="module")
def us_levant(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home, catalog = isolated_home(tmp_path_factory.mktemp("us-home"), model_home)
    server = LiveServer(
        Settings(home=home, catalog_path=catalog, region="us-east"), preload=[DEFAULT_MODEL]
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def eu_service(model_home: Path) -> Iterator[ModelService]:
    from levant.catalog.catalog import load_catalog
    from levant.catalog.store import ModelStore

    settings = Settings(home=model_home, region="eu-west-paris")
    registry = ModelRegistry(settings, load_catalog(settings), ModelStore(settings))
    yield registry.load(registry.resolve(DEFAULT_MODEL))
    registry.shutdown()


EU_LOCAL = Deployment.local(DEFAULT_MODEL, "eu-west-paris", name="smollm2-paris")


def us_deployment(server: LiveServer) -> Deployment:
    return Deployment(
        name="smollm2-us",
        model=DEFAULT_MODEL,
        region="us-east",
        backend="upstream",
        upstream={"url": server.url, "read_timeout_s": 60, "max_retries": 1},  # type: ignore[arg-type]
    )


async def test_client_passes_real_levant_through(us_levant: LiveServer) -> None:
    client = UpstreamClient(us_deployment(us_levant), api_key=us_levant.api_key)
    reply = await client.complete(BODY)
    assert reply.body["choices"][0]["message"]["content"]
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    assert reply.usage.prompt_tokens > 0

    stream = await client.open_stream(BODY)
    chunks = [c async for c in stream]
    assert "".join(c.content for c in chunks)
    assert chunks[-1].finish_reason in ("stop", "length")
    assert stream.usage is not None and stream.usage.completion_tokens > 0
    await client.aclose()


async def test_wrong_key_is_the_operators_problem(us_levant: LiveServer) -> None:
    from levant.routing import UpstreamError

    client = UpstreamClient(us_deployment(us_levant), api_key="lv-not-a-key")
    with pytest.raises(UpstreamError) as info:
        await client.complete(BODY)
    assert info.value.status == 401 and not info.value.client_fault and not info.value.retryable
    await client.aclose()


class Gateway:
    """The EU gateway's routing, as the chat route will run it."""

    def __init__(self, service: ModelService, us: LiveServer, *, eu_broken: bool = False) -> None:
        self.service = service
        self.us_transport = Counting()
        us_dep = us_deployment(us)
        self.pool = UpstreamPool(
            {us_dep.name: UpstreamClient(us_dep, api_key=us.api_key, transport=self.us_transport)}
        )
        self.health = StaticHealth()
        self.router = Router([us_dep, EU_LOCAL], health=self.health)
        self.eu_broken = eu_broken
        self.tried: list[str] = []

    async def stream(self, policy: ResidencyPolicy) -> tuple[Deployment, str, int]:
        upstream_attempt = self.pool.stream(BODY, policy)

        async def attempt(d: Deployment) -> PrimedStream[TextDelta | Finished] | UpstreamStream:
            self.tried.append(d.name)
            if d.backend == "upstream":
                return await upstream_attempt(d)
            if self.eu_broken:
                raise DeploymentFailure(d.name, "engine failed to start", retryable=True)
            ids = self.service.prepare([ChatMessage("user", "Say hello.")], 8)
            sampling = self.service.sampling(temperature=0, top_p=1.0, max_tokens=8, seed=0)
            return await primed(d, self.service.generate(ids, sampling))

        routed = await self.router.route(DEFAULT_MODEL, policy, attempt)
        text, completion_tokens = [], 0
        if isinstance(routed.value, UpstreamStream):
            async for chunk in routed.value:
                text.append(chunk.content)
            usage = routed.value.usage
            completion_tokens = usage.completion_tokens if usage else 0
        else:
            async for ev in routed.value:
                if isinstance(ev, TextDelta):
                    text.append(ev.text)
                else:
                    completion_tokens = ev.completion_tokens
        return routed.deployment, "".join(text), completion_tokens


async def test_eu_only_served_in_eu(eu_service: ModelService, us_levant: LiveServer) -> None:
    gw = Gateway(eu_service, us_levant)
    for _ in range(3):
        served, text, tokens = await gw.stream(EU_ONLY)
        assert served.region == "eu-west-paris" and text and tokens > 0
    assert gw.us_transport.requests == 0 and set(gw.tried) == {"smollm2-paris"}
    await gw.pool.aclose()


async def test_eu_only_with_eu_down_gets_the_clear_error(
    eu_service: ModelService, us_levant: LiveServer
) -> None:
    gw = Gateway(eu_service, us_levant)
    gw.health.mark_down("smollm2-paris")
    with pytest.raises(NoDeploymentInPolicy) as info:
        await gw.stream(EU_ONLY)
    assert "workspace policy allows only EU regions (eu-west-paris)" in info.value.message
    assert "smollm2-paris (eu-west-paris): down" in info.value.message
    assert gw.us_transport.requests == 0 and gw.tried == []
    await gw.pool.aclose()


async def test_eu_only_with_eu_failing_never_retries_into_the_us(
    eu_service: ModelService, us_levant: LiveServer
) -> None:
    gw = Gateway(eu_service, us_levant, eu_broken=True)
    for _ in range(6):  # past the breaker threshold too
        with pytest.raises(NoDeploymentInPolicy):
            await gw.stream(EU_ONLY)
    assert gw.us_transport.requests == 0 and set(gw.tried) == {"smollm2-paris"}
    await gw.pool.aclose()


async def test_eu_and_us_fails_over_to_the_us(
    eu_service: ModelService, us_levant: LiveServer
) -> None:
    gw = Gateway(eu_service, us_levant, eu_broken=True)
    served, text, tokens = await gw.stream(EU_US)
    assert served.name == "smollm2-us" and served.region == "us-east"
    assert text and tokens > 0
    assert gw.tried == ["smollm2-paris", "smollm2-us"] and gw.us_transport.requests == 1
    await gw.pool.aclose()
