"""A tiny OpenAI-compatible upstream on loopback whose behaviour a test switches at will."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port
from tests.routing.helpers import completion, delta, full_stream


class FakeUpstream:
    """``mode``: ok | hang (no headers) | 500 | drop (cut the stream after one event) |
    stall (one event, then silence)."""

    def __init__(self, region: str = "us-east") -> None:
        self.mode = "ok"
        self.region = region
        self.calls = 0
        self._closing = False
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def _hang(self) -> None:
        while not self._closing:
            await asyncio.sleep(0.05)

    async def chat(self, request: Request) -> Response:
        self.calls += 1
        body = await request.json()
        headers = {"levant-region": self.region, "levant-deployment": "fake"}
        if self.mode == "hang":
            await self._hang()
        if self.mode == "500":
            return JSONResponse({"object": "error", "message": "internal"}, status_code=500)
        if not body.get("stream"):
            return JSONResponse(completion(), headers=headers)

        async def events() -> AsyncIterator[bytes]:
            if self.mode == "drop":
                yield delta("Bon")
                raise RuntimeError("upstream died mid-stream")
            if self.mode == "stall":
                yield delta("Bon")
                await self._hang()
            for part in full_stream(["Bon", "jour"]):
                yield part

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.post(f"{self.url}/v1/chat/completions", json={}, timeout=1)
                self.calls = 0
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("fake upstream did not start")

    def stop(self) -> None:
        self._closing = True
        self.server.should_exit = True
        self.thread.join(timeout=10)
