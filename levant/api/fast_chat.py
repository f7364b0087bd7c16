"""The lean path for ``POST /v1/chat/completions`` to a model that only upstreams serve.

Boundary: ``LevantAPI`` hands this module every chat completion request first.
When the request is the gateway's everyday case — a JSON body naming a model no
local deployment serves, from an API key (not the batch runner) — it runs the
FastAPI route's own steps as plain ASGI: the same request model validates the
body, ``current_principal`` authenticates, ``card_for`` looks the model up,
``UpstreamCall`` admits, calls, relays and meters, and the router picks the
deployments inside the residency policy. What it leaves out is FastAPI's
middleware, dependency solving and response classes (most of the CPU a
forwarded request cost).

Anything else goes to the FastAPI app with the body replayed, and so does every
refusal before admission (a body that does not parse or validate, a missing or
bad key, an unknown model): the app answers exactly as it always did. From
admission on the request is answered here, with the route's errors in the
caller's dialect: a limit's 429, no deployment inside the policy, an upstream
that refused. Response headers are the route's: the admission's, the content
type, ``levant-region`` and ``levant-deployment``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levant.api.auth import INTERNAL_PRINCIPAL, current_principal
from levant.api.dialect import Dialect
from levant.api.errors import APIError, error_body
from levant.api.models_lookup import card_for
from levant.api.schemas.chat import ChatCompletionRequest
from levant.api.state import AppState
from levant.api.streaming import DONE
from levant.api.upstream_chat import SSE, Reply, UpstreamCall, policy_error, upstream_error
from levant.routing import DeploymentFailure, NoDeploymentInPolicy, Routed

log = logging.getLogger("levant.api")

CHAT_PATH = "/v1/chat/completions"
_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _dumps(payload: Any) -> bytes:
    """As Starlette's JSONResponse renders it."""
    return json.dumps(
        payload, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def _raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class _Replay:
    """A ``receive`` that hands out the body already read, then defers to the real one."""

    def __init__(self, body: bytes, more: bool, receive: Receive) -> None:
        self._first: Message | None = {"type": "http.request", "body": body, "more_body": more}
        self._receive = receive

    async def __call__(self) -> Message:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await self._receive()


class FastChat:
    """The lean chat route; ``fallback`` is the FastAPI app it hands everything else to."""

    def __init__(self, state: AppState, fallback: ASGIApp) -> None:
        self.state = state
        self.fallback = fallback
        self.max_bytes = state.settings.max_request_bytes
        deployments = state.gateway.router.deployments
        local = {d.model for d in deployments if d.backend == "local"}
        self.models = frozenset(d.model for d in deployments if d.backend != "local") - local
        """The models this path serves: those with no deployment on the local engine."""
        self.served = 0
        """Requests answered here (the rest went to the FastAPI app)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.models or INTERNAL_PRINCIPAL in scope:
            await self.fallback(scope, receive, send)
            return
        length, json_body = _framing(scope)
        if not json_body or (length is not None and length > self.max_bytes):
            await self.fallback(scope, receive, send)  # e.g. refused there, with its 413
            return
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunk = message.get("body", b"")
            parts.append(chunk)
            size += len(chunk)
            more = bool(message.get("more_body"))
            if not more or size > self.max_bytes:
                break
        raw = parts[0] if len(parts) == 1 else b"".join(parts)
        replay = _Replay(raw, more, receive)
        if more or not await self._serve(scope, raw, replay, send):
            await self.fallback(scope, replay, send)

    async def _serve(self, scope: Scope, raw: bytes, receive: _Replay, send: Send) -> bool:
        """Answer the request; False (with nothing sent) to leave it to the FastAPI app."""
        try:
            body = json.loads(raw)
        except ValueError:
            return False
        if not isinstance(body, dict):
            return False
        model = body.get("model")
        if not isinstance(model, str) or model not in self.models:
            return False
        try:
            parsed = ChatCompletionRequest.model_validate(body)
        except ValidationError:
            return False
        state = self.state
        request = Request(scope, receive)
        try:
            principal = await current_principal(request, state)
            card = card_for(state, model, principal, require_pulled=False)
        except APIError:
            return False
        dialect: Dialect = "openai" if parsed.uses_openai_fields else _dialect(request)
        call = UpstreamCall(state, principal, card, body, dialect)
        started = False
        try:
            try:
                routed: Routed[Reply | SSE] = await state.gateway.router.route(
                    card.id, principal.residency, call.serve
                )
            except NoDeploymentInPolicy as exc:
                call.abandon()
                raise policy_error(exc) from exc
            except DeploymentFailure as exc:
                call.abandon()
                raise upstream_error(exc) from exc
            started = True
            served = routed.value
            where = _raw_headers(routed.headers)
            if isinstance(served, Reply):
                payload = _dumps(served.payload)
                headers = _raw_headers(served.headers)
                headers += [(b"content-length", b"%d" % len(payload)), _JSON, *where]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": payload})
            else:
                headers = [*_SSE_HEADERS, *_raw_headers(served.headers), *where]
                await _stream(served, headers, receive, send)
        except APIError as exc:
            if started:
                raise
            await _error(exc, dialect, send)
        except Exception as exc:
            log.error("internal error on POST %s: %s", CHAT_PATH, type(exc).__name__)
            if not started:
                await _error(
                    APIError(500, "Internal server error", type="internal_error"), dialect, send
                )
            raise
        self.served += 1
        return True


async def _stream(
    served: SSE, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send
) -> None:
    """Send the relay's blocks; a client that leaves cancels it (metered as cancelled)."""
    task = asyncio.current_task()
    assert task is not None
    finishing = False
    left = False

    async def watch() -> None:
        nonlocal left
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not finishing:
                    left = True
                    task.cancel()
                return

    events = served.relay()
    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async for block in events:
            if block.endswith(DONE):  # the last: send it with the body's end (one write)
                finishing = True
                watcher.cancel()
                await send({"type": "http.response.body", "body": block})
            else:
                await send({"type": "http.response.body", "body": block, "more_body": True})
        if not finishing:
            finishing = True
            watcher.cancel()
            await send({"type": "http.response.body", "body": b""})
    except asyncio.CancelledError:
        if not left:
            raise
        task.uncancel()
    finally:
        watcher.cancel()
        await events.aclose()


async def _error(err: APIError, dialect: Dialect, send: Send) -> None:
    payload = _dumps(error_body(err, dialect))
    headers = _raw_headers(err.headers or {})
    headers += [(b"content-length", b"%d" % len(payload)), _JSON]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The Content-Length, and whether FastAPI would read the body as JSON (no
    Content-Type, or plain ``application/json``; rarer spellings go to FastAPI)."""
    length: int | None = None
    json_body = True
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"content-type":
            json_body = value == b"application/json" or value.startswith(b"application/json;")
    return length, json_body


def _dialect(request: Request) -> Dialect:
    agent = request.headers.get("user-agent", "")
    return "openai" if agent.startswith("OpenAI/") else "mistral"
