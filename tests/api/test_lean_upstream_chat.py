"""The lean chat path (``levant.api.fast_chat``) answers as the FastAPI route does.

Two gateways on loopback in front of the same fake upstream, one with the lean
path and one without (``lean_upstream_chat=False``): every request is sent to
both and the answers compared — status, body, the headers that matter — and so
are the usage rows, for successes, client errors, upstream failures before and
during a stream, and a client that leaves mid-stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from levant.config import Settings
from levant.db.tables import UsageEvent
from tests.conftest import DEFAULT_MODEL, LiveServer
from tests.routing.fake_upstream import FakeUpstream

REGION = "eu-west-paris"
MESSAGES = [{"role": "user", "content": "Say hello."}]
COMPARED = ("content-type", "levant-region", "levant-deployment", "cache-control")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    server = FakeUpstream(region=REGION)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def ok(fake: FakeUpstream) -> None:
    fake.mode = "ok"


def _gateway(base: Path, upstream: str, lean: bool) -> LiveServer:
    routing = base / "levant.toml"
    routing.write_text(
        f"""[gateway]
region = "{REGION}"

[[deployments]]
name = "fake-upstream"
model = "{DEFAULT_MODEL}"
backend = "upstream"
region = "{REGION}"
[deployments.upstream]
url = "{upstream}"
max_retries = 0
read_timeout_s = 5
"""
    )
    settings = Settings(home=base, routing_config=routing, lean_upstream_chat=lean)
    server = LiveServer(settings, preload=[])
    server.start()
    return server


@pytest.fixture(scope="module")
def gateways(
    fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, LiveServer]]:
    lean = _gateway(tmp_path_factory.mktemp("lean"), fake.url, lean=True)
    full = _gateway(tmp_path_factory.mktemp("full"), fake.url, lean=False)
    assert lean.app.fast_chat is not None and full.app.fast_chat is None
    yield lean, full
    lean.stop()
    full.stop()


def _post(server: LiveServer, body: Any, **headers: str) -> httpx.Response:
    with server.client() as client:
        return client.post("/v1/chat/completions", json=body, headers=headers)


def _both(
    gateways: tuple[LiveServer, LiveServer], body: Any, *, lean_serves: bool, **headers: str
) -> tuple[httpx.Response, httpx.Response]:
    lean, full = gateways
    assert lean.app.fast_chat is not None
    before = lean.app.fast_chat.served
    a, b = _post(lean, body, **headers), _post(full, body, **headers)
    assert (lean.app.fast_chat.served - before) == int(lean_serves)
    assert a.status_code == b.status_code
    for name in COMPARED:
        assert a.headers.get(name) == b.headers.get(name), name
    limits_a = sorted(k for k in a.headers if k.startswith("x-ratelimit"))
    assert limits_a == sorted(k for k in b.headers if k.startswith("x-ratelimit"))
    return a, b


def _last_row(server: LiveServer) -> UsageEvent:
    state = server.state
    assert state.usage.flush(timeout=10)
    with state.platform.db.reading() as session:
        rows = session.scalars(select(UsageEvent).order_by(UsageEvent.created_at)).all()
    return rows[-1]


def _same_rows(gateways: tuple[LiveServer, LiveServer], status: str) -> None:
    a, b = (_last_row(g) for g in gateways)
    for field in ("model", "deployment", "region", "prompt_tokens", "completion_tokens", "status"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.status == status and a.region == REGION


def _without_ids(payload: Any) -> Any:
    if isinstance(payload, dict):
        return {k: _without_ids(v) for k, v in payload.items() if k not in ("id",)}
    if isinstance(payload, list):
        return [_without_ids(v) for v in payload]
    return payload


def test_completion_answers_and_meters_alike(gateways: tuple[LiveServer, LiveServer]) -> None:
    body = {"model": DEFAULT_MODEL, "messages": MESSAGES, "max_tokens": 8}
    a, b = _both(gateways, body, lean_serves=True)
    assert a.status_code == 200 and a.headers["levant-region"] == REGION
    assert a.json() == b.json() and a.json()["model"] == DEFAULT_MODEL
    assert a.headers["content-length"] == str(len(a.content))
    _same_rows(gateways, "ok")


def test_stream_answers_and_meters_alike(gateways: tuple[LiveServer, LiveServer]) -> None:
    body = {"model": DEFAULT_MODEL, "messages": MESSAGES, "stream": True}
    a, b = _both(gateways, body, lean_serves=True)
    assert a.status_code == 200 and a.content == b.content
    assert a.content.endswith(b"data: [DONE]\n\n") and b"Bon" in a.content
    _same_rows(gateways, "ok")


@pytest.mark.parametrize(
    "body",
    [
        {"model": DEFAULT_MODEL},  # no messages: 422 from the route's validation
        {"model": DEFAULT_MODEL, "messages": MESSAGES, "temperature": "hot"},
        {"model": "no-such-model", "messages": MESSAGES},
        [1, 2, 3],
    ],
)
def test_client_errors_are_the_routes(gateways: tuple[LiveServer, LiveServer], body: Any) -> None:
    for agent in ("levant-tests", "OpenAI/Python 1.0"):
        a, b = _both(gateways, body, lean_serves=False, **{"user-agent": agent})
        assert a.status_code >= 400 and a.json() == b.json()


def test_a_body_not_sent_as_json_is_the_routes(gateways: tuple[LiveServer, LiveServer]) -> None:
    body = json.dumps({"model": DEFAULT_MODEL, "messages": MESSAGES}).encode()
    responses = []
    for server in gateways:
        with server.client() as client:
            responses.append(
                client.post(
                    "/v1/chat/completions", content=body, headers={"content-type": "text/plain"}
                )
            )
    a, b = responses
    assert a.status_code == b.status_code == 422 and a.json() == b.json()


def test_bad_key_is_the_routes(gateways: tuple[LiveServer, LiveServer]) -> None:
    body = {"model": DEFAULT_MODEL, "messages": MESSAGES}
    a, b = _both(gateways, body, lean_serves=False, authorization="Bearer lv-nope")
    assert a.status_code == 401 and a.json() == b.json()
    assert a.headers.get("www-authenticate") == b.headers.get("www-authenticate") == "Bearer"


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_500_is_the_same_policy_error(
    gateways: tuple[LiveServer, LiveServer], fake: FakeUpstream, stream: bool
) -> None:
    fake.mode = "500"
    body = {"model": DEFAULT_MODEL, "messages": MESSAGES, "stream": stream, "seed": 1}
    a, b = _both(gateways, body, lean_serves=True)
    # retryable, and no other deployment inside the policy: 503 naming the policy
    assert a.status_code == 503 and a.json() == b.json()
    assert a.json()["error"]["code"] == "no_deployment_in_policy"  # seed: OpenAI's shape


def test_stream_dropped_mid_way_ends_with_the_same_in_band_error(
    gateways: tuple[LiveServer, LiveServer], fake: FakeUpstream
) -> None:
    fake.mode = "drop"
    body = {"model": DEFAULT_MODEL, "messages": MESSAGES, "stream": True}
    a, b = _both(gateways, body, lean_serves=True)
    assert a.status_code == 200 and a.content == b.content
    events = [e for e in a.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert json.loads(events[-2][len(b"data: ") :])["object"] == "error"
    _same_rows(gateways, "error")


def test_client_leaving_mid_stream_is_metered_as_cancelled(
    gateways: tuple[LiveServer, LiveServer], fake: FakeUpstream
) -> None:
    fake.mode = "stall"  # one event, then silence for longer than the test waits
    body = {"model": DEFAULT_MODEL, "messages": MESSAGES, "stream": True}
    for server in gateways:
        with (
            server.client() as client,
            client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            assert response.status_code == 200
            next(response.iter_bytes())
        started = time.monotonic()
        while time.monotonic() - started < 3:  # well inside the upstream's 5 s read timeout
            row = _last_row(server)
            if row.status == "cancelled":
                break
            time.sleep(0.1)
        assert _last_row(server).status == "cancelled"
