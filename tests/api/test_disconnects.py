"""Clients that leave mid-stream, against the live server and the real model.

32 greedy streams start at once; half of them hang up after their first few
chunks. Every KV block comes back (none held once the survivors finish), the
running count drops to zero, and each survivor's text is exactly what the same
request gives alone — so cancelling neighbours never disturbs a stream.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from levant.serving.service import ModelService
from tests.conftest import DEFAULT_MODEL, LiveServer

pytestmark = pytest.mark.slow

STREAMS = 32
MAX_TOKENS = 20


def _body(i: int, *, stream: bool) -> dict[str, object]:
    return {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": f"Count from {i} to {i + 9}, in words."}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": stream,
    }


async def _stream(client: httpx.AsyncClient, i: int, leave_after: int | None) -> str | None:
    """The streamed text, or None for a client that hung up after ``leave_after`` chunks."""
    text: list[str] = []
    async with client.stream("POST", "/v1/chat/completions", json=_body(i, stream=True)) as r:
        assert r.status_code == 200
        chunks = 0
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                text.append(choice["delta"].get("content") or "")
            chunks += 1
            if leave_after is not None and chunks >= leave_after:
                return None  # leaving the block closes the connection mid-stream
    return "".join(text)


def _engine(server: LiveServer) -> ModelService:
    return next(s for s in server.state.registry.generators() if s.card.id == DEFAULT_MODEL)


def test_half_the_clients_leave_and_everything_comes_back(live_server: LiveServer) -> None:
    async def run() -> list[str | None]:
        async with httpx.AsyncClient(
            base_url=live_server.url, headers=live_server.headers, timeout=300
        ) as client:
            return await asyncio.gather(
                *(_stream(client, i, 3 if i % 2 else None) for i in range(STREAMS))
            )

    results = asyncio.run(run())
    service = _engine(live_server)
    engine = service.engine.engine
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        engine.num_running or engine.kv.pool.num_free_blocks < engine.kv.pool.num_blocks
    ):
        time.sleep(0.05)
    assert engine.num_running == 0 and service.engine.num_waiting == 0
    assert engine.kv.pool.num_free_blocks == engine.kv.pool.num_blocks  # every block returned

    survivors = {i: text for i, text in enumerate(results) if i % 2 == 0}
    assert all(results[i] is None for i in range(1, STREAMS, 2))
    with live_server.client() as client:
        for i, text in survivors.items():
            alone = client.post("/v1/chat/completions", json=_body(i, stream=False)).json()
            assert text == alone["choices"][0]["message"]["content"], f"stream {i}"
    # The server is still healthy and answering.
    assert httpx.get(f"{live_server.url}/health", timeout=5).status_code == 200
