"""Limits at the HTTP edge: 429 with Retry-After and x-ratelimit-* headers, stored per
workspace; prices metered per request; a monthly spend limit is a hard stop."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from levant.access.limits import LimitPolicy
from levant.access.limits.workspace import set_limit
from levant.access.pricing import cost_micros, price_of
from levant.config import Settings
from levant.db.tables import UsageEvent
from tests.conftest import DEFAULT_MODEL, LiveServer, isolated_home

pytestmark = pytest.mark.slow

PRICING = {"input_per_million": 2, "output_per_million": 6, "currency": "EUR"}
CHAT = {
    "model": DEFAULT_MODEL,
    "messages": [{"role": "user", "content": "Hi"}],
    "max_tokens": 3,
    "temperature": 0,
}


@pytest.fixture(scope="module")
def home(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return isolated_home(tmp_path_factory.mktemp("limits-home"), model_home, pricing=PRICING)


@pytest.fixture(scope="module")
def server(home: tuple[Path, Path]) -> Iterator[LiveServer]:
    settings = Settings(home=home[0], catalog_path=home[1], limits_cache_ttl_s=0.0)
    live = LiveServer(settings, preload=[DEFAULT_MODEL])
    live.start()
    yield live
    live.stop()


def _set(server: LiveServer, policy: LimitPolicy, budget: int | None = None) -> None:
    platform = server.state.platform
    with platform.db.writing() as s:
        set_limit(
            s,
            platform.bootstrap.workspace_id,
            actor="tests",
            policy=policy,
            monthly_budget_micros=budget,
        )


def test_usage_is_priced_from_the_card(server: LiveServer) -> None:
    body = server.client().post("/v1/chat/completions", json=CHAT).json()
    assert server.state.usage.flush(timeout=10)
    with server.state.platform.db.reading() as s:
        row = s.scalars(select(UsageEvent).where(UsageEvent.request_id == body["id"])).one()
    u = body["usage"]
    expected = cost_micros(price_of(PRICING), u["prompt_tokens"], u["completion_tokens"], 0)
    assert row.price_micros == expected > 0


def test_requests_per_second_gives_429_with_retry_after(server: LiveServer) -> None:
    _set(server, LimitPolicy(requests_per_second=0.5, request_burst=1))
    c = server.client()
    first = c.post("/v1/chat/completions", json=CHAT)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    second = c.post("/v1/chat/completions", json=CHAT)
    assert second.status_code == 429, second.text
    body = second.json()
    assert body["object"] == "error" and body["type"] == "rate_limit_error"
    assert body["code"] == "requests_per_second"
    retry = int(second.headers["retry-after"])
    assert 1 <= retry <= 2
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    time.sleep(retry)
    assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    _set(server, LimitPolicy())


def test_tokens_per_minute_and_never_fits(server: LiveServer) -> None:
    _set(server, LimitPolicy(tokens_per_minute=100))
    c = server.client()
    r = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 500})
    assert r.status_code == 400 and r.json()["code"] == "exceeds_limit"
    assert "retry-after" not in r.headers
    ok = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 20})
    assert ok.status_code == 200
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) < 100
    _set(server, LimitPolicy())


def test_monthly_spend_limit_is_a_hard_stop(server: LiveServer) -> None:
    c = server.client()
    assert c.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert server.state.usage.flush(timeout=10)
    with server.state.platform.db.reading() as s:
        spent = sum(s.scalars(select(UsageEvent.price_micros)))
    _set(server, LimitPolicy(), budget=spent)  # exactly what this month has already cost
    r = c.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "monthly_spend"
    assert "spend" in r.json()["message"].lower()
    _set(server, LimitPolicy(), budget=None)


def test_limits_cli(home: tuple[Path, Path], server: LiveServer) -> None:
    env = {"LEVANT_HOME": str(home[0]), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "levant", "limits"]
    out = subprocess.run(
        [*run, "set", "--rps", "5", "--tpm", "1000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    listed = subprocess.run([*run, "list"], env=env, capture_output=True, text=True, timeout=60)
    assert "rps=5.0" in listed.stdout and "tpm=1000" in listed.stdout
    bad = subprocess.run(
        [*run, "set", "--key", "key_x", "--budget", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "whole workspace" in bad.stderr
    _set(server, LimitPolicy())


def test_n_reserves_n_times_max_tokens_and_meters_the_prompt_once(server: LiveServer) -> None:
    _set(server, LimitPolicy(tokens_per_minute=100))
    c = server.client()
    # One choice of 40 tokens can fit a 100-token minute (it may wait: earlier tests in
    # this module spent tokens of the same workspace's bucket, so 429 is allowed here);
    # four choices of 40 never can.
    one = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 40})
    assert one.status_code in (200, 429), one.text
    r = c.post("/v1/chat/completions", json={**CHAT, "max_tokens": 40, "n": 4})
    assert r.status_code == 400 and r.json()["code"] == "exceeds_limit", r.text
    _set(server, LimitPolicy())
    body = c.post("/v1/chat/completions", json={**CHAT, "n": 3}).json()
    assert server.state.usage.flush(timeout=10)
    with server.state.platform.db.reading() as s:
        row = s.scalars(select(UsageEvent).where(UsageEvent.request_id == body["id"])).one()
    u = body["usage"]
    assert (row.prompt_tokens, row.completion_tokens) == (
        u["prompt_tokens"],
        u["completion_tokens"],
    )
    assert u["completion_tokens"] == sum(1 for _ in body["choices"]) * 3  # 3 each, greedy
    cached = u["prompt_tokens_details"]["cached_tokens"]
    expected = cost_micros(price_of(PRICING), u["prompt_tokens"], u["completion_tokens"], cached)
    assert row.price_micros == expected
