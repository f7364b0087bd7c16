"""Scale-out on Ray Serve: a local Ray cluster on loopback, two engine replicas, one gateway.

The cluster is started by the test (``ray.init``) with every Ray process on
127.0.0.1; two SmolLM2 replicas run as one Serve deployment in eu-west-paris
behind Serve's HTTP proxy. The gateway (in this process) routes to it as a
``backend = "ray"`` deployment; a US deployment of the same model (a stub that
counts what reaches it) is in the routing file too, outside the workspace's
EU-only policy. 32 concurrent streams run through the gateway and one replica is
killed mid-way: every request completes or ends with a clean error, none reaches
the US, and Serve is back to two running replicas within a bounded time.

Each replica takes at most ``PER_REPLICA`` requests at once, so 24 run and 8 wait at
Serve's proxy when the replica dies: the streams it had accepted end with an in-band
error, the others are served by the survivor (Serve's proxy alone balances a burst
badly: left unbounded, one replica may take 28 of the 32).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from levant.access.policy import set_residency
from levant.config import Settings
from levant.db.tables import UsageEvent
from tests.conftest import DEFAULT_MODEL, LiveServer, free_port

if importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is not installed (pip install 'levant[ray]')", allow_module_level=True)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ray,
    # Ray Serve's own config models use pydantic v1-style Field extras.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]

APP = "levant-test"
REGION = "eu-west-paris"
RAY_DEPLOYMENT = "smollm2-ray-paris"
STREAMS = 32
PER_REPLICA = 12
MAX_TOKENS = 32
REQUEST_TIMEOUT_S = 120.0
RECOVERY_TIMEOUT_S = 150.0


@dataclass
class RayServe:
    url: str
    scale: Any
    spec: Any

    def states(self) -> dict[str, int]:
        from levant.scaleout.ray_serve import replica_states

        return replica_states(APP)

    def actors(self) -> list[str]:
        from levant.scaleout.ray_serve import replica_actor_names

        return replica_actor_names(APP)


@pytest.fixture(scope="module")
def ray_serve(model_home: Path) -> Iterator[RayServe]:
    import ray
    import ray._private.ray_constants as ray_constants
    from ray import serve

    from levant.scaleout.ray_serve import Scale, deploy
    from levant.scaleout.replica import ReplicaSpec

    if ray_constants.ENABLE_RAY_CLUSTER:
        pytest.fail("Ray was imported before tests/scaleout/conftest.py set its environment")
    temp = tempfile.mkdtemp(prefix="lvray-")  # short: Ray's socket paths live under it
    try:
        ray.init(
            address="local",
            num_cpus=4,
            include_dashboard=False,
            _temp_dir=temp,
            log_to_driver=False,
            logging_level="WARNING",
        )
        assert ray.util.get_node_ip_address() == "127.0.0.1"  # type: ignore[no-untyped-call]
        # Replicas read the shared test store; each keeps its own database.
        spec = ReplicaSpec(model=DEFAULT_MODEL, region=REGION, store=str(model_home), threads=1)
        scale = Scale(replicas=2, max_ongoing_requests=PER_REPLICA, num_cpus=1)
        url = deploy(spec, scale, port=free_port(), name=APP)
        assert url.startswith("http://127.0.0.1:")
        yield RayServe(url, scale, spec)
    finally:
        with contextlib.suppress(Exception):
            serve.delete(APP)  # graceful: each replica removes its home
        with contextlib.suppress(Exception):
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


class CountingUpstream:
    """The US deployment: counts every request that reaches it (there must be none)."""

    def __init__(self) -> None:
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.hits = 0

        async def chat(request: Request) -> JSONResponse:
            self.hits += 1
            body = {"object": "error", "message": "US stub", "type": "api_error"}
            return JSONResponse(body, status_code=500, headers={"levant-region": "us-east"})

        app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def us_stub() -> Iterator[CountingUpstream]:
    stub = CountingUpstream()
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def gateway(
    ray_serve: RayServe, us_stub: CountingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    from levant.scaleout.ray_serve import routing_snippet

    home = tmp_path_factory.mktemp("gateway")
    routing = home / "levant.toml"
    ray_entry = routing_snippet(RAY_DEPLOYMENT, ray_serve.spec, ray_serve.url, ray_serve.scale)
    routing.write_text(
        f"""
[gateway]
region = "{REGION}"

{ray_entry}
[[deployments]]
name = "smollm2-us"
model = "{DEFAULT_MODEL}"
backend = "upstream"
region = "us-east"
[deployments.upstream]
url = "{us_stub.url}"
max_retries = 0
"""
    )
    # The gateway serves this model only through Ray: it loads no weights itself.
    server = LiveServer(Settings(home=home, routing_config=routing), preload=[])
    server.start()
    platform = server.state.platform
    with platform.db.writing() as session:
        set_residency(session, platform.bootstrap.workspace_id, ["EU"], "standard", actor="tests")
    yield server
    server.stop()


@dataclass
class Outcome:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    done: bool = False
    timed_out: bool = False

    @property
    def finish_reason(self) -> str | None:
        for chunk in self.chunks:
            for choice in chunk.get("choices") or ():
                if choice.get("finish_reason"):
                    return str(choice["finish_reason"])
        return None

    @property
    def text(self) -> str:
        return "".join(
            (c.get("delta") or {}).get("content") or ""
            for chunk in self.chunks
            for c in chunk.get("choices") or ()
        )

    @property
    def completed(self) -> bool:
        return self.status == 200 and self.error is None and self.done and bool(self.finish_reason)

    @property
    def clean_error(self) -> bool:
        """A Mistral-shaped error: in-band then ``[DONE]``, or as the whole response."""
        err = self.error
        shaped = (
            err is not None
            and err.get("object") == "error"
            and isinstance(err.get("message"), str)
            and {"type", "code"} <= set(err)
        )
        return shaped and (self.done if self.status == 200 else self.status >= 400)


async def _stream(
    client: httpx.AsyncClient, i: int, started: list[int], first_token: asyncio.Event
) -> Outcome:
    body = {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": f"Count from {i} to {i + 40}, one per line."}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
    }
    out = Outcome()
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        out.status, out.headers = r.status_code, dict(r.headers)
        if r.status_code != 200:
            out.error = json.loads(await r.aread())
            return out
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                out.done = True
                continue
            event = json.loads(data)
            if event.get("object") == "error":
                out.error = event
            else:
                out.chunks.append(event)
                if out.text and i not in started:
                    started.append(i)
                    if len(started) >= STREAMS // 4:
                        first_token.set()
    return out


async def _run_with_kill(gateway: LiveServer, kill: Any) -> tuple[list[Outcome], float]:
    started: list[int] = []
    first_token = asyncio.Event()
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=10)
    limits = httpx.Limits(max_connections=STREAMS * 2)
    async with httpx.AsyncClient(
        base_url=gateway.url, headers=gateway.headers, timeout=timeout, limits=limits
    ) as client:

        async def bounded(i: int) -> Outcome:
            try:
                return await asyncio.wait_for(
                    _stream(client, i, started, first_token), REQUEST_TIMEOUT_S
                )
            except TimeoutError:
                return Outcome(timed_out=True)

        tasks = [asyncio.create_task(bounded(i)) for i in range(STREAMS)]
        await asyncio.wait_for(first_token.wait(), REQUEST_TIMEOUT_S)
        killed_at = time.monotonic()
        await asyncio.to_thread(kill)
        outcomes = await asyncio.gather(*tasks)
    return list(outcomes), killed_at


def _usage(gateway: LiveServer) -> list[tuple[str, str, str]]:
    gateway.state.usage.flush()
    with gateway.state.platform.db.reading() as session:
        rows = session.execute(
            select(UsageEvent.deployment, UsageEvent.region, UsageEvent.status)
        ).all()
    return [(d, r, s) for d, r, s in rows]


def test_replica_killed_mid_load(
    ray_serve: RayServe, gateway: LiveServer, us_stub: CountingUpstream
) -> None:
    import ray

    assert ray_serve.states() == {"RUNNING": 2}
    before = ray_serve.actors()
    assert len(before) == 2
    victim = before[0]

    def kill() -> None:
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)

    t0 = time.monotonic()
    outcomes, killed_at = asyncio.run(_run_with_kill(gateway, kill))
    wall = time.monotonic() - t0

    completed = [o for o in outcomes if o.completed]
    errors = [o for o in outcomes if not o.completed]
    summary = (
        f"{len(completed)} completed, {len(errors)} clean errors of {STREAMS} "
        f"in {wall:.1f}s; errors: "
        + "; ".join(str((o.status, (o.error or {}).get("message"))) for o in errors)
    )
    print(summary)
    assert not [o for o in outcomes if o.timed_out], summary
    # Every request either completed or ended with a clean, Mistral-shaped error.
    assert all(o.completed or o.clean_error for o in outcomes), summary
    # Only what the lost replica had accepted fails; the kill did land mid-way.
    assert len(completed) >= STREAMS - PER_REPLICA, summary
    assert errors, summary
    for o in errors:
        assert o.status == 200 and "mid-stream" in (o.error or {}).get("message", ""), summary
    # Every answer (success or error after a start) came from the EU Ray deployment.
    for o in outcomes:
        if o.status == 200:
            assert o.headers["levant-region"] == REGION, summary
            assert o.headers["levant-deployment"] == RAY_DEPLOYMENT, summary
    # Nothing went outside the policy: the US deployment saw no request, and every
    # usage row names the Ray deployment in Paris.
    assert us_stub.hits == 0
    rows = _usage(gateway)
    assert rows and {(d, r) for d, r, _ in rows} == {(RAY_DEPLOYMENT, REGION)}
    assert sum(1 for *_, s in rows if s == "ok") == len(completed)

    # Serve replaces the lost replica: two running again, the victim gone.
    deadline = killed_at + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        actors = ray_serve.actors()
        if ray_serve.states() == {"RUNNING": 2} and victim not in actors and len(actors) == 2:
            break
        time.sleep(1)
    else:
        pytest.fail(f"Serve did not get back to 2 replicas: {ray_serve.states()}")
    recovered = time.monotonic() - killed_at
    print(f"two replicas running again {recovered:.1f}s after the kill")

    # And the deployment serves again through the gateway (circuit closed or probing).
    with gateway.client() as client:
        deadline = time.monotonic() + 30
        while True:
            r = client.post(
                "/v1/chat/completions",
                json={
                    "model": DEFAULT_MODEL,
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 4,
                    "temperature": 0,
                },
            )
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert r.status_code == 200, r.text
    assert r.headers["levant-region"] == REGION
    assert us_stub.hits == 0
