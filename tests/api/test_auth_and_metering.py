"""Keys on every /v1 route, scopes, and one usage row per request that matches the response."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from levant.access.keys import revoke_key
from levant.db.tables import ApiKey, UsageEvent
from levant.db.types import utcnow
from tests.conftest import DEFAULT_MODEL, LiveServer

pytestmark = pytest.mark.slow

CHAT = {
    "model": DEFAULT_MODEL,
    "messages": [{"role": "user", "content": "Hi"}],
    "max_tokens": 6,
    "temperature": 0,
}


def chat(server: LiveServer, key: str | None, body: dict[str, Any] = CHAT) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60)


def assert_401(r: httpx.Response, code: str) -> None:
    assert r.status_code == 401, r.text
    body = r.json()
    assert body["object"] == "error" and body["type"] == "authentication_error"
    assert body["code"] == code
    assert r.headers["www-authenticate"] == "Bearer"


def test_missing_and_unknown_keys_are_401(platform_server: LiveServer) -> None:
    assert_401(chat(platform_server, None), "missing_api_key")
    assert_401(chat(platform_server, "lv-" + "A" * 43), "unknown_api_key")
    assert_401(chat(platform_server, "sk-not-ours"), "malformed_api_key")
    r = httpx.get(f"{platform_server.url}/v1/models")
    assert_401(r, "missing_api_key")


def test_health_needs_no_key(platform_server: LiveServer) -> None:
    assert httpx.get(f"{platform_server.url}/health").status_code == 200


def test_revoked_and_expired_keys_are_401(platform_server: LiveServer) -> None:
    key = platform_server.create_key("to-revoke")
    assert chat(platform_server, key).status_code == 200
    platform = platform_server.state.platform
    with platform.db.writing() as s:
        key_id = s.scalars(select(ApiKey.id).where(ApiKey.name == "to-revoke")).all()[-1]
        revoke_key(s, key_id, actor="tests")
    assert_401(chat(platform_server, key), "revoked_api_key")
    expired = platform_server.create_key("expired", expires_at=utcnow() - timedelta(seconds=1))
    assert_401(chat(platform_server, expired), "expired_api_key")


def test_model_scope(platform_server: LiveServer) -> None:
    key = platform_server.create_key("scoped", allowed_models=["some-other-model"])
    r = chat(platform_server, key)
    assert r.status_code == 403 and r.json()["code"] == "model_not_allowed"
    listed = httpx.get(
        f"{platform_server.url}/v1/models", headers={"authorization": f"Bearer {key}"}
    ).json()
    assert listed["data"] == []
    r = httpx.get(
        f"{platform_server.url}/v1/models/{DEFAULT_MODEL}",
        headers={"authorization": f"Bearer {key}"},
    )
    assert r.status_code == 404


def test_endpoint_scope(platform_server: LiveServer) -> None:
    key = platform_server.create_key("models-only", allowed_endpoints=["/v1/models"])
    assert (
        httpx.get(
            f"{platform_server.url}/v1/models", headers={"authorization": f"Bearer {key}"}
        ).status_code
        == 200
    )
    r = chat(platform_server, key)
    assert r.status_code == 403 and r.json()["code"] == "endpoint_not_allowed"


def _usage_row(server: LiveServer, request_id: str) -> UsageEvent:
    assert server.state.usage.flush(timeout=10)
    with server.state.platform.db.reading() as s:
        row = s.scalars(select(UsageEvent).where(UsageEvent.request_id == request_id)).one()
        s.expunge(row)
        return row


def test_usage_row_matches_response(platform_server: LiveServer) -> None:
    r = chat(platform_server, platform_server.api_key)
    body = r.json()
    row = _usage_row(platform_server, body["id"])
    assert row.prompt_tokens == body["usage"]["prompt_tokens"]
    assert row.completion_tokens == body["usage"]["completion_tokens"]
    assert row.model == DEFAULT_MODEL and row.status == "ok"
    assert row.region == platform_server.state.settings.region


def test_usage_row_matches_streamed_usage(platform_server: LiveServer) -> None:
    r = chat(platform_server, platform_server.api_key, {**CHAT, "stream": True})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    usage = events[-1]["usage"]
    row = _usage_row(platform_server, events[0]["id"])
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


def test_cancelled_stream_is_billed_for_what_it_produced(platform_server: LiveServer) -> None:
    body = {**CHAT, "stream": True, "max_tokens": 200, "min_tokens": 200}
    with httpx.stream(
        "POST",
        f"{platform_server.url}/v1/chat/completions",
        json=body,
        headers=platform_server.headers,
        timeout=60,
    ) as r:
        lines = r.iter_lines()
        first = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        received = 0
        for line in lines:
            if line.startswith("data: "):
                received += 1
                if received == 5:
                    break
    # the client is gone; the server stops within a step and meters what it made
    import time

    deadline = time.monotonic() + 30
    row = None
    while time.monotonic() < deadline:
        platform_server.state.usage.flush(timeout=5)
        with platform_server.state.platform.db.reading() as s:
            row = s.scalars(
                select(UsageEvent).where(UsageEvent.request_id == first["id"])
            ).one_or_none()
        if row is not None:
            break
        time.sleep(0.2)
    assert row is not None
    assert row.status == "cancelled"
    assert 5 <= row.completion_tokens < 200
