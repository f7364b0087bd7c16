"""Bad input gets the right status and a Mistral-shaped error body, never a 500."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, LiveServer

pytestmark = pytest.mark.slow

OK_MESSAGES = [{"role": "user", "content": "hi"}]


def post(server: LiveServer, body: Any, **kw: Any) -> httpx.Response:
    headers = {**server.headers, **kw.pop("headers", {})}
    if isinstance(body, dict | list):
        kw["json"] = body
    else:
        kw["content"] = body
        headers["content-type"] = "application/json"
    return httpx.post(f"{server.url}/v1/chat/completions", timeout=60, headers=headers, **kw)


def assert_error(
    r: httpx.Response, status: int, *, param: str | None = None, contains: str = ""
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["object"] == "error"
    assert set(body) == {"object", "message", "type", "param", "code"}
    assert isinstance(body["message"], str) and body["message"]
    assert "Traceback" not in r.text
    if param is not None:
        assert body["param"] == param
    assert contains in body["message"]
    return body


def test_unknown_model_is_404(live_server: LiveServer) -> None:
    r = post(live_server, {"model": "no-such-model", "messages": OK_MESSAGES})
    body = assert_error(r, 404, param="model", contains="no-such-model")
    assert body["type"] == "not_found_error"
    assert_error(live_server.client().get("/v1/models/no-such-model"), 404)


def test_missing_field_is_422(live_server: LiveServer) -> None:
    assert_error(
        post(live_server, {"model": DEFAULT_MODEL}), 422, param="messages", contains="Missing"
    )


def test_out_of_range_is_422(live_server: LiveServer) -> None:
    r = post(live_server, {"model": DEFAULT_MODEL, "messages": OK_MESSAGES, "temperature": 5})
    assert_error(r, 422, param="temperature")
    r = post(live_server, {"model": DEFAULT_MODEL, "messages": OK_MESSAGES, "max_tokens": -1})
    assert_error(r, 422, param="max_tokens")
    r = post(live_server, {"model": DEFAULT_MODEL, "messages": []})
    assert_error(r, 422, param="messages")
    r = post(live_server, {"model": DEFAULT_MODEL, "messages": [{"role": "robot", "content": "x"}]})
    assert_error(r, 422)


def test_unknown_field_is_422(live_server: LiveServer) -> None:
    r = post(live_server, {"model": DEFAULT_MODEL, "messages": OK_MESSAGES, "temprature": 1})
    assert_error(r, 422, param="temprature")


def test_malformed_json_is_400(live_server: LiveServer) -> None:
    assert_error(post(live_server, b'{"model": "x", "messages": ['), 400, contains="JSON")


def test_prompt_longer_than_context_is_400_naming_both_numbers(live_server: LiveServer) -> None:
    long_text = "word " * 9000
    r = post(
        live_server, {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": long_text}]}
    )
    body = assert_error(r, 400, contains="8192")
    tokens = [int(w) for w in body["message"].replace("(", " ").split() if w.isdigit()]
    assert 8192 in tokens and any(t > 8192 for t in tokens)
    assert body["code"] == "context_length_exceeded"


def test_prompt_plus_max_tokens_over_context_is_400(live_server: LiveServer) -> None:
    r = post(live_server, {"model": DEFAULT_MODEL, "messages": OK_MESSAGES, "max_tokens": 9000})
    assert_error(r, 400, contains="8192")


def test_oversized_body_is_413(live_server: LiveServer) -> None:
    big = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "x" * 300_000}]}
    assert_error(post(live_server, big), 413)

    def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        data = json.dumps(big).encode()
        for i in range(0, len(data), 16_384):
            yield data[i : i + 16_384]

    assert_error(post(live_server, chunks()), 413)


def test_last_message_must_be_user_or_prefix(live_server: LiveServer) -> None:
    r = post(
        live_server,
        {
            "model": DEFAULT_MODEL,
            "messages": [*OK_MESSAGES, {"role": "assistant", "content": "hello"}],
        },
    )
    assert_error(r, 400, contains="last role")
    r = post(
        live_server,
        {
            "model": DEFAULT_MODEL,
            "messages": [{"role": "assistant", "content": "x", "prefix": True}, *OK_MESSAGES],
        },
    )
    assert_error(r, 400, param="messages[0].prefix")


def test_unsupported_capabilities_are_400(live_server: LiveServer) -> None:
    # Tools on a model without function_calling: tests/api/test_chat_input_tools.py.
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x/y.png"}]}]
    assert_error(
        post(live_server, {"model": DEFAULT_MODEL, "messages": image}), 400, contains="vision"
    )


def test_unknown_route_and_method(live_server: LiveServer) -> None:
    assert_error(live_server.client().get("/v1/nothing-here"), 404)
    assert_error(live_server.client().get("/v1/chat/completions"), 405)


def test_openai_clients_get_openai_error_shape(live_server: LiveServer) -> None:
    r = post(
        live_server,
        {"model": "nope", "messages": OK_MESSAGES},
        headers={"user-agent": "OpenAI/Python 3.57.0"},
    )
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


def test_server_still_healthy_after_bad_input(live_server: LiveServer) -> None:
    assert httpx.get(f"{live_server.url}/health").status_code == 200
