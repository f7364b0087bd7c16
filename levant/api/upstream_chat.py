"""A chat completion served by an upstream deployment: admission, the call, relay, metering.

Boundary: the chat route hands over the client's JSON body once the router has
picked an upstream deployment; this module admits the request against the
workspace's limits (prompt size estimated from the text, corrected with the
upstream's reported usage), passes the response or stream through unchanged,
and writes the usage row naming the deployment and its region. Prompt and
completion text are never logged or stored here.

``UpstreamCall.serve`` returns what to answer (``Reply``: a JSON body, or an
``SSE`` relay) without committing to a response class: the FastAPI route wraps
it in a Response (``attempt``), the lean ASGI path (``fast_chat``) writes it
to the socket itself.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, Response

from levant.access.principal import Principal
from levant.api.admission import Admission, admit, release
from levant.api.dialect import Dialect
from levant.api.errors import APIError, error_body
from levant.api.metering import Status, record_usage
from levant.api.state import AppState
from levant.api.streaming import DONE, sse_event, sse_response
from levant.catalog.card import ModelCard
from levant.routing import Deployment, DeploymentFailure, NoDeploymentInPolicy, UpstreamError
from levant.routing.upstream import UpstreamStream, Usage
from levant.serving.service import GenerationStats

CHARS_PER_TOKEN = 4
"""Prompt size estimate before the upstream reports real usage (reservations only)."""


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    text = json.dumps(body.get("messages") or [], ensure_ascii=False)
    return max(1, len(text) // CHARS_PER_TOKEN)


@dataclass(slots=True)
class Reply:
    """A non-streamed answer: the upstream's JSON with the client's model name."""

    payload: dict[str, Any]
    headers: dict[str, str]


@dataclass(slots=True)
class SSE:
    """A streamed answer: ``relay()`` yields the bytes to send (ends with ``[DONE]``)."""

    call: UpstreamCall
    deployment: Deployment
    stream: UpstreamStream
    headers: dict[str, str]

    async def relay(self) -> AsyncGenerator[bytes, None]:
        """Pass the upstream's events on (a block per network read); meter at the end.

        The last block ends with ``[DONE]``. Closed early (the client left), the
        request is metered as cancelled.
        """
        status: Status = "cancelled"
        call, stream = self.call, self.stream
        ended = False
        try:
            async for block in stream.blocks():
                if stream.done and not ended:  # the upstream's [DONE] came in this block
                    ended = True
                    yield block + DONE  # one write less
                    continue
                yield block
            status = "ok"
        except DeploymentFailure as exc:  # cut mid-stream: final, reported in-band
            status = "error"
            call.state.gateway.router.record_failure(self.deployment)
            err = APIError(502, f"Upstream failed mid-stream: {exc.reason}", type="api_error")
            yield sse_event(error_body(err, call.dialect))
        finally:
            await stream.aclose()
            call.meter(self.deployment, stream.usage, status)
        if not ended:
            yield DONE


@dataclass
class UpstreamCall:
    """One client request that may try several upstream deployments; admitted once."""

    state: AppState
    principal: Principal
    card: ModelCard
    body: dict[str, Any]
    dialect: Dialect
    admission: Admission | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.monotonic)

    async def admit_once(self) -> Admission:
        if self.admission is None:
            asked = self.body.get("max_tokens") or self.body.get("max_completion_tokens")
            max_new = int(asked or 0) or self.card.max_context_length // 4
            self.admission = await admit(
                self.state,
                self.principal,
                self.card,
                estimate_prompt_tokens(self.body),
                max_new,
            )
        return self.admission

    def meter(self, deployment: Deployment, usage: Usage | None, status: Status) -> None:
        stats = GenerationStats()
        if usage is not None:
            stats.prompt_tokens = usage.prompt_tokens
            stats.completion_tokens = usage.completion_tokens
            stats.cached_tokens = usage.cached_tokens
        price = 0 if self.admission is None else release(self.state, self.admission, stats)
        record_usage(
            self.state,
            self.principal,
            request_id=self.request_id,
            model=self.card.id,
            stats=stats,
            started=self.started,
            status=status,
            price_micros=price,
            deployment=deployment.name,
            region=deployment.region,
        )

    def abandon(self) -> None:
        """No deployment served: give back what admission reserved."""
        if self.admission is not None:
            release(self.state, self.admission, GenerationStats())
            self.admission = None

    async def serve(self, deployment: Deployment) -> Reply | SSE:
        """One attempt on ``deployment`` (admitting the request on the first)."""
        admission = await self.admit_once()
        policy = self.principal.residency
        pool = self.state.gateway.upstreams
        if not self.body.get("stream"):
            reply = await pool.complete(self.body, policy)(deployment)
            self.meter(deployment, reply.usage, "ok")
            return Reply({**reply.body, "model": self.body.get("model")}, admission.headers)
        stream = await pool.stream(self.body, policy)(deployment)
        return SSE(self, deployment, stream, admission.headers)

    async def attempt(self, deployment: Deployment) -> Response:
        """``serve`` as a Starlette Response (the FastAPI route's attempt)."""
        served = await self.serve(deployment)
        if isinstance(served, Reply):
            return JSONResponse(served.payload, headers=served.headers)
        return sse_response(served.relay(), headers=served.headers)


def policy_error(exc: NoDeploymentInPolicy) -> APIError:
    """No deployment inside the workspace's policy could serve: the error names the policy."""
    return APIError(
        exc.status,
        exc.message,
        type="permission_error" if exc.status == 403 else "service_unavailable",
        param="model",
        code=exc.code,
    )


def upstream_error(exc: DeploymentFailure) -> APIError:
    """A non-retryable upstream failure as the caller should see it."""
    if isinstance(exc, UpstreamError) and exc.client_fault:
        return APIError(exc.status, exc.upstream_message, code="upstream_rejected")
    return APIError(502, f"Upstream failed: {exc.reason}", type="api_error", code="upstream_error")
