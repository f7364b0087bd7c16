"""Residency through the real chat route: an EU gateway and a "US" Levant in its own process.

The US side is a separate ``levant serve --region us-east`` process on loopback;
the EU gateway (in this process, so the test can read its usage rows and mark
its engine down) has a routing file with its local engine in ``eu-west-paris``
and the US process as an upstream. Asserted on the ``levant-region`` header, on
the usage rows, and on the US process's own usage count.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mistralai.client import Mistral
from openai import OpenAI
from sqlalchemy import select

from levant.access.policy import set_residency
from levant.config import Settings
from levant.db.tables import UsageEvent
from tests.conftest import DEFAULT_MODEL, LiveServer, free_port, isolated_home

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Say hello."}]


def _levant(home: Path, catalog: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEVANT_HOME": str(home), "LEVANT_CATALOG_PATH": str(catalog)}
    return subprocess.run(
        [sys.executable, "-m", "levant.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


class USProcess:
    def __init__(self, home: Path, catalog: Path) -> None:
        self.home, self.catalog = home, catalog
        self.key = _levant(home, catalog, "keys", "create", "--name", "eu-gateway").stdout
        self.key = self.key.strip().splitlines()[-1]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LEVANT_HOME": str(home), "LEVANT_CATALOG_PATH": str(catalog)}
        command = [sys.executable, "-m", "levant.cli", "serve", "--region=us-east"]
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("the US Levant exited")
            time.sleep(0.2)
        raise RuntimeError("the US Levant did not become healthy")

    def completions_served(self) -> int:
        """Usage rows in the US process's own database: what it really served."""
        from levant.access.startup import open_platform

        platform = open_platform(Settings(home=self.home, catalog_path=self.catalog))
        try:
            with platform.db.reading() as session:
                return len(session.scalars(select(UsageEvent)).all())
        finally:
            platform.close()

    def wait_for_rows(self, n: int, timeout: float = 15.0) -> int:
        """The US process writes usage in batches: wait until ``n`` rows are there."""
        deadline = time.monotonic() + timeout
        while (count := self.completions_served()) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        return count

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def us(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[USProcess]:
    home, catalog = isolated_home(tmp_path_factory.mktemp("us"), model_home)
    process = USProcess(home, catalog)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def eu(
    us: USProcess, model_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    base = tmp_path_factory.mktemp("eu")
    home, catalog = isolated_home(base, model_home)
    routing = base / "levant.toml"
    routing.write_text(
        f"""
[gateway]
region = "eu-west-paris"

[[deployments]]
name = "smollm2-paris"
model = "{DEFAULT_MODEL}"
backend = "local"

[[deployments]]
name = "smollm2-us"
model = "{DEFAULT_MODEL}"
backend = "upstream"
region = "us-east"
[deployments.upstream]
url = "{us.url}"
api_key_env = "LEVANT_TEST_US_KEY"
max_retries = 0
"""
    )
    os.environ["LEVANT_TEST_US_KEY"] = us.key
    server = LiveServer(
        Settings(home=home, catalog_path=catalog, routing_config=routing), preload=[DEFAULT_MODEL]
    )
    server.start()
    yield server
    server.stop()
    os.environ.pop("LEVANT_TEST_US_KEY", None)


def _policy(server: LiveServer, allow: list[str] | None) -> None:
    platform = server.state.platform
    with platform.db.writing() as session:
        set_residency(session, platform.bootstrap.workspace_id, allow, "standard", actor="tests")


def _rows(server: LiveServer) -> list[tuple[str, str]]:
    server.state.usage.flush()
    with server.state.platform.db.reading() as session:
        rows = session.execute(select(UsageEvent.deployment, UsageEvent.region)).all()
    return [(d, r) for d, r in rows]


def _chat(server: LiveServer, *, stream: bool = False) -> httpx.Response:
    body = {"model": DEFAULT_MODEL, "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    with server.client() as client:
        if not stream:
            return client.post("/v1/chat/completions", json=body)
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            r.read()
            return r


def test_eu_only_workspace_is_served_in_the_eu(eu: LiveServer, us: USProcess) -> None:
    _policy(eu, ["EU"])
    before = len(_rows(eu))
    for stream in (False, True, False, True):
        r = _chat(eu, stream=stream)
        assert r.status_code == 200, r.text
        assert r.headers["levant-region"] == "eu-west-paris"
        assert r.headers["levant-deployment"] == "smollm2-paris"
    rows = _rows(eu)[before:]
    assert rows == [("smollm2-paris", "eu-west-paris")] * 4
    assert us.wait_for_rows(1, timeout=3) == 0  # give a stray row time to land: none does


def test_eu_only_with_the_eu_engine_down_gets_the_policy_error(
    eu: LiveServer, us: USProcess
) -> None:
    _policy(eu, ["EU"])
    health = eu.state.gateway.router.health
    health.mark_down("smollm2-paris")
    try:
        before = len(_rows(eu))
        for stream in (False, True):
            r = _chat(eu, stream=stream)
            assert r.status_code == 503
            err = r.json()
            assert err["object"] == "error" and err["code"] == "no_deployment_in_policy"
            assert "allows only EU regions" in err["message"]
            assert "smollm2-us (us-east)" in err["message"]  # named as outside the policy
        # Same through the official SDKs: a clear error, not a US answer.
        with pytest.raises(Exception, match=r"no_deployment_in_policy|allows only EU"):
            Mistral(api_key=eu.api_key, server_url=eu.url).chat.complete(
                model=DEFAULT_MODEL, messages=MESSAGES, max_tokens=4
            )
        assert len(_rows(eu)) == before  # nothing was served, nothing billed
        assert us.wait_for_rows(1, timeout=3) == 0
    finally:
        health.mark_up("smollm2-paris")


def test_eu_and_us_workspace_fails_over_to_the_us(eu: LiveServer, us: USProcess) -> None:
    _policy(eu, ["EU", "US"])
    health = eu.state.gateway.router.health
    health.mark_down("smollm2-paris")
    try:
        before_rows, before_us = len(_rows(eu)), us.completions_served()
        r = _chat(eu)
        assert r.status_code == 200, r.text
        assert r.headers["levant-region"] == "us-east"
        assert r.headers["levant-deployment"] == "smollm2-us"
        assert r.json()["choices"][0]["message"]["content"]
        assert r.json()["usage"]["completion_tokens"] > 0
        r = _chat(eu, stream=True)
        assert r.status_code == 200 and r.headers["levant-region"] == "us-east"
        assert r.text.rstrip().endswith("data: [DONE]")
        # The OpenAI SDK reads the same answer and sees the serving region.
        raw = OpenAI(api_key=eu.api_key, base_url=f"{eu.url}/v1").chat.completions
        reply = raw.with_raw_response.create(model=DEFAULT_MODEL, messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
        assert reply.headers["levant-region"] == "us-east"
        assert reply.parse().choices[0].message.content
        rows = _rows(eu)[before_rows:]
        assert rows == [("smollm2-us", "us-east")] * 3
        assert us.wait_for_rows(before_us + 3) == before_us + 3
    finally:
        health.mark_up("smollm2-paris")


def test_policy_outside_every_deployment_is_a_403(eu: LiveServer) -> None:
    _policy(eu, ["CH"])
    try:
        r = _chat(eu)
        assert r.status_code == 403
        assert r.json()["code"] == "no_deployment_in_policy"
        assert "allows only CH regions" in r.json()["message"]
    finally:
        _policy(eu, None)
