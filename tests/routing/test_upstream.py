"""The upstream client against httpx.MockTransport: no network, faults on demand."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from levant.routing import (
    UpstreamClient,
    UpstreamError,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from tests.routing.helpers import BODY, completion, delta, dep, full_stream

Handler = Callable[[httpx.Request], httpx.Response]


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Chunks(httpx.AsyncByteStream):
    """A response body that yields ``parts`` and then, optionally, fails like a cut socket."""

    def __init__(self, parts: list[bytes], then: Exception | None = None) -> None:
        self.parts = parts
        self.then = then

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for p in self.parts:
            yield p
        if self.then is not None:
            raise self.then


def client(handler: Handler, sleeps: Sleeps | None = None, **upstream: Any) -> UpstreamClient:
    upstream.setdefault("max_retries", 2)
    return UpstreamClient(
        dep("up-1", "us-east", **upstream),
        api_key="sk-very-secret",
        transport=httpx.MockTransport(handler),
        sleep=sleeps or Sleeps(),
    )


def sse_response(parts: list[bytes], then: Exception | None = None) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Chunks(parts, then)
    )


async def test_complete_passes_through_with_usage_and_served_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json=completion(),
            headers={"levant-region": "us-east", "levant-deployment": "local"},
        )

    reply = await client(handler, model="upstream-name").complete(BODY)
    assert reply.body["choices"][0]["message"]["content"] == "Bonjour"
    assert reply.usage is not None and reply.usage.prompt_tokens == 5
    assert (reply.served.region, reply.served.deployment, reply.served.attempts) == (
        "us-east",
        "local",
        1,
    )
    sent = json.loads(seen[0].content)
    assert sent["model"] == "upstream-name" and sent["stream"] is False
    assert seen[0].headers["authorization"] == "Bearer sk-very-secret"
    assert str(seen[0].url) == "http://upstream.test/v1/chat/completions"


async def test_500_is_retried_with_bounded_backoff_then_raised() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(500, json={"object": "error", "message": "boom"})

    sleeps = Sleeps()
    with pytest.raises(UpstreamError) as info:
        await client(
            handler, sleeps, max_retries=4, backoff_base_s=0.1, backoff_max_s=0.3
        ).complete(BODY)
    assert info.value.status == 500 and info.value.upstream_message == "boom"
    assert info.value.retryable and not info.value.client_fault
    assert calls == 5  # one try + max_retries
    assert len(sleeps.delays) == 4
    steps = [0.1, 0.2, 0.3, 0.3]  # doubling, capped at backoff_max_s
    for delay, step in zip(sleeps.delays, steps, strict=True):
        assert step / 2 <= delay <= step


async def test_success_after_a_transient_failure() -> None:
    answers = [httpx.Response(503), httpx.Response(200, json=completion())]
    reply = await client(lambda r: answers.pop(0)).complete(BODY)
    assert reply.served.attempts == 2


async def test_client_fault_is_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(400, json={"error": {"message": "bad temperature"}})

    with pytest.raises(UpstreamError) as info:
        await client(handler).complete(BODY)
    assert calls == 1 and info.value.client_fault and not info.value.retryable
    assert info.value.upstream_message == "bad temperature"


async def test_retry_after_longer_than_allowed_fails_fast() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(429, headers={"retry-after": "30"})

    with pytest.raises(UpstreamError) as info:
        await client(handler, backoff_max_s=1.0).complete(BODY)
    assert calls == 1 and info.value.retry_after_s == 30


async def test_timeouts_and_refused_connections_map_to_typed_errors() -> None:
    def read_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(UpstreamTimeout, match="read timed out after 60s"):
        await client(read_timeout).complete(BODY)
    with pytest.raises(UpstreamUnreachable):
        await client(refused, max_retries=0).complete(BODY)


async def test_stream_passes_chunks_and_usage_through() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is True
        return sse_response(full_stream(["Bon", "jour"]))

    stream = await client(handler).open_stream(BODY)
    chunks = [c async for c in stream]
    assert "".join(c.content for c in chunks) == "Bonjour"
    assert chunks[-1].finish_reason == "stop"
    assert stream.usage is not None and stream.usage.completion_tokens == 2
    assert chunks[0].raw.startswith(b"data: {") and chunks[0].raw.endswith(b"\n\n")


async def test_openai_dialect_asks_for_usage_and_marks_the_usage_chunk() -> None:
    usage_chunk = (
        b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream_options"] == {"include_usage": True}
        return sse_response([delta("a"), delta("", "stop"), usage_chunk, b"data: [DONE]\n\n"])

    stream = await client(handler, dialect="openai").open_stream(BODY)
    chunks = [c async for c in stream]
    assert [c.usage_only for c in chunks] == [False, False, True]
    assert stream.usage is not None and stream.usage.prompt_tokens == 3


async def test_stream_cut_before_first_event_is_retried() -> None:
    answers = [
        sse_response([], httpx.RemoteProtocolError("peer closed")),
        sse_response(full_stream(["ok"])),
    ]
    stream = await client(lambda r: answers.pop(0)).open_stream(BODY)
    assert stream.served.attempts == 2
    assert "".join([c.content async for c in stream]) == "ok"


async def test_stream_cut_after_first_event_is_never_replayed() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return sse_response([delta("Bon"), delta("jour")], httpx.ReadError("reset"))

    stream = await client(handler).open_stream(BODY)
    got = []
    with pytest.raises(UpstreamStreamBroken) as info:
        async for c in stream:
            got.append(c.content)
    assert got == ["Bon", "jour"] and calls == 1
    assert info.value.started and not info.value.retryable


async def test_stream_that_ends_without_finishing_is_broken() -> None:
    stream = await client(lambda r: sse_response([delta("Bon")])).open_stream(BODY)
    with pytest.raises(UpstreamStreamBroken, match="ended before the completion finished"):
        async for _ in stream:
            pass


async def test_in_band_error_mid_stream_is_broken() -> None:
    parts = [delta("Bon"), b'data: {"object":"error","message":"Generation failed"}\n\n']
    stream = await client(lambda r: sse_response(parts)).open_stream(BODY)
    with pytest.raises(UpstreamStreamBroken, match="error mid-stream"):
        async for _ in stream:
            pass


async def test_stream_status_error_before_first_byte_is_retried() -> None:
    answers = [httpx.Response(502, text="bad gateway"), sse_response(full_stream(["x"]))]
    stream = await client(lambda r: answers.pop(0)).open_stream(BODY)
    assert stream.served.attempts == 2
    await stream.aclose()


async def test_key_never_appears_in_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": "invalid key"})

    c = client(handler)
    with pytest.raises(UpstreamError) as info:
        await c.complete(BODY)
    assert not info.value.client_fault  # our credentials: the operator's problem
    for text in (str(info.value), repr(info.value), repr(c), caplog.text):
        assert "sk-very-secret" not in text


async def test_stream_events_split_anyhow_across_reads_with_crlf() -> None:
    whole = b"".join(full_stream(["Bon", "jour"])).replace(b"\n", b"\r\n")
    cuts = [whole[i : i + 7] for i in range(0, len(whole), 7)]  # CR and LF land apart too
    stream = await client(lambda r: sse_response([b": keep-alive\r\n\r\n", *cuts])).open_stream(
        BODY
    )
    blocks = [b async for b in stream.blocks()]
    assert b"".join(blocks) == b"".join(
        f.replace(b"\r\n", b"\n") for f in full_stream(["Bon", "jour"])[:-1]
    )
    assert stream.usage is not None and stream.usage.completion_tokens == 2
