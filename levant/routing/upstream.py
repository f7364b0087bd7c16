"""Client for one OpenAI- or Mistral-compatible upstream (another Levant, vLLM, a vendor API).

``complete`` returns the upstream's JSON response; ``open_stream`` returns a
stream whose first event has already arrived. Transient failures (timeouts,
refused connections, 408/429/5xx, a stream cut before its first event) are
retried with bounded exponential backoff and jitter — only before anything
has been handed to the caller; once an event is out, a failure is final
(``UpstreamStreamBroken``), never a replay. The API key is sent as a header and
appears in no message, repr or log line.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import httpx

from levant.routing.deployment import Deployment, UpstreamConfig
from levant.routing.errors import (
    UpstreamError,
    UpstreamFailure,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
)

REGION_HEADER = "levant-region"
DEPLOYMENT_HEADER = "levant-deployment"
_DONE = "[DONE]"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def parse(cls, raw: Any) -> Usage | None:
        if not isinstance(raw, dict):
            return None
        details = raw.get("prompt_tokens_details")
        cached = raw.get("num_cached_tokens") or (
            details.get("cached_tokens") if isinstance(details, dict) else 0
        )
        return cls(
            int(raw.get("prompt_tokens") or 0),
            int(raw.get("completion_tokens") or 0),
            int(cached or 0),
        )


@dataclass(frozen=True, slots=True)
class Served:
    """Who answered: what the upstream says about itself (a Levant sends both headers)."""

    region: str | None
    deployment: str | None
    attempts: int

    @classmethod
    def of(cls, response: httpx.Response, attempts: int) -> Served:
        h = response.headers
        return cls(h.get(REGION_HEADER), h.get(DEPLOYMENT_HEADER), attempts)


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A non-streamed chat completion, as the upstream sent it."""

    body: dict[str, Any]
    served: Served

    @property
    def usage(self) -> Usage | None:
        return Usage.parse(self.body.get("usage"))


@dataclass(frozen=True, slots=True)
class UpstreamChunk:
    """One SSE event: its parsed JSON and the exact ``data: …\\n\\n`` frame to pass on."""

    data: dict[str, Any]
    raw: bytes

    @property
    def usage(self) -> Usage | None:
        return Usage.parse(self.data.get("usage"))

    @property
    def usage_only(self) -> bool:
        """OpenAI's extra ``include_usage`` chunk: no choices, only usage."""
        return not self.data.get("choices") and "usage" in self.data

    @property
    def content(self) -> str:
        out = []
        for choice in self.data.get("choices") or ():
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                out.append(delta["content"])
        return "".join(out)

    @property
    def finish_reason(self) -> str | None:
        for choice in self.data.get("choices") or ():
            if choice.get("finish_reason"):
                return str(choice["finish_reason"])
        return None


def _error_message(response: httpx.Response) -> str:
    """The upstream's own error message (Mistral or OpenAI shape), kept short."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "error"
    msg: Any = None
    if isinstance(body, dict):
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else (err or body.get("message"))
        msg = msg or body.get("detail")
    text = msg if isinstance(msg, str) else response.reason_phrase or "error"
    return text[:300]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


def _in_band_error(data: dict[str, Any]) -> bool:
    return data.get("object") == "error" or "error" in data


class UpstreamStream:
    """An open upstream stream whose first event has arrived (so it was worth committing to).

    Iterate it for ``UpstreamChunk``s; it ends after ``[DONE]`` (or a finished
    choice). Any failure now raises ``UpstreamStreamBroken`` (``started=True``).
    Always closed: by ``aclose``, ``async with``, or iterating to the end.
    """

    def __init__(
        self,
        deployment: str,
        response: httpx.Response,
        events: AsyncGenerator[UpstreamChunk, None],
        first: UpstreamChunk | None,
        served: Served,
    ) -> None:
        self.deployment = deployment
        self.served = served
        self.usage: Usage | None = first.usage if first else None
        self._response = response
        self._events = events
        self._first = first

    def __aiter__(self) -> AsyncIterator[UpstreamChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[UpstreamChunk]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield first
            async for chunk in self._events:
                if chunk.usage is not None:
                    self.usage = chunk.usage
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._events.aclose()
        await self._response.aclose()

    async def __aenter__(self) -> UpstreamStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass
class _Backoff:
    base_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, retry: int) -> float:
        """Equal jitter: half the exponential step, plus up to the other half at random."""
        step = min(self.max_s, self.base_s * 2.0 ** (retry - 1))
        return step / 2 + self.rng.uniform(0, step / 2)


class UpstreamClient:
    """Calls one upstream deployment. One pooled ``httpx.AsyncClient`` per deployment."""

    def __init__(
        self,
        deployment: Deployment,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if deployment.upstream is None:
            raise ValueError(f"deployment {deployment.name!r} has no upstream")
        self.deployment = deployment
        self.config: UpstreamConfig = deployment.upstream
        cfg = self.config
        self._url = cfg.chat_url
        self._headers = {"content-type": "application/json", "user-agent": "levant-gateway"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._backoff = _Backoff(cfg.backoff_base_s, cfg.backoff_max_s, rng or random.Random())
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(
                connect=cfg.connect_timeout_s,
                read=cfg.read_timeout_s,
                write=cfg.read_timeout_s,
                pool=cfg.connect_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections
            ),
        )

    def __repr__(self) -> str:  # never the headers: they hold the key
        return f"UpstreamClient({self.deployment.name!r}, {self._url!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def name(self) -> str:
        return self.deployment.name

    def payload(self, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        """The request as the upstream should see it: its model name, the stream flag."""
        out = {**body, "model": self.deployment.upstream_model, "stream": stream}
        if stream and self.config.dialect == "openai":
            opts = dict(out.get("stream_options") or {})
            opts["include_usage"] = True
            out["stream_options"] = opts
        elif not stream:
            out.pop("stream_options", None)
        return out

    @overload
    def chat(
        self, body: dict[str, Any], *, stream: Literal[False] = ...
    ) -> Coroutine[Any, Any, UpstreamReply]: ...
    @overload
    def chat(
        self, body: dict[str, Any], *, stream: Literal[True]
    ) -> Coroutine[Any, Any, UpstreamStream]: ...
    def chat(
        self, body: dict[str, Any], *, stream: bool = False
    ) -> Coroutine[Any, Any, UpstreamReply] | Coroutine[Any, Any, UpstreamStream]:
        return self.open_stream(body) if stream else self.complete(body)

    async def complete(self, body: dict[str, Any]) -> UpstreamReply:
        content = json.dumps(self.payload(body, stream=False)).encode()
        return await self._with_retries(lambda n: self._complete_once(content, n))

    async def open_stream(self, body: dict[str, Any]) -> UpstreamStream:
        content = json.dumps(self.payload(body, stream=True)).encode()
        return await self._with_retries(lambda n: self._open_stream_once(content, n))

    async def _with_retries(self, once: Callable[[int], Awaitable[T]]) -> T:
        attempt = 1
        while True:
            try:
                return await once(attempt)
            except UpstreamFailure as exc:
                if not exc.retryable or attempt > self.config.max_retries:
                    raise
                delay = self._backoff.delay(attempt)
                hint = exc.retry_after_s if isinstance(exc, UpstreamError) else None
                if hint is not None:
                    if hint > self.config.backoff_max_s:
                        raise  # asked to wait longer than we may: let the router fail over
                    delay = max(delay, hint)
                await self._sleep(delay)
                attempt += 1

    async def _complete_once(self, content: bytes, attempt: int) -> UpstreamReply:
        try:
            response = await self._http.post(self._url, content=content, headers=self._headers)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=False) from exc
        if response.status_code != 200:
            raise self._status_error(response)
        try:
            data = response.json()
        except ValueError as exc:
            raise UpstreamError(self.name, 502, "response is not JSON", retryable=True) from exc
        if not isinstance(data, dict) or _in_band_error(data):
            raise UpstreamError(self.name, 502, "response is not a chat completion", retryable=True)
        return UpstreamReply(data, Served.of(response, attempt))

    async def _open_stream_once(self, content: bytes, attempt: int) -> UpstreamStream:
        headers = {**self._headers, "accept": "text/event-stream"}
        request = self._http.build_request("POST", self._url, content=content, headers=headers)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=False) from exc
        try:
            if response.status_code != 200:
                await response.aread()
                raise self._status_error(response)
            events = self._events(response)
            try:
                first = await anext(events, None)
            except BaseException:
                await events.aclose()
                raise
            if first is None:
                raise UpstreamStreamBroken(self.name, "stream ended with no events", started=False)
        except BaseException:
            await response.aclose()
            raise
        return UpstreamStream(self.name, response, events, first, Served.of(response, attempt))

    async def _events(self, response: httpx.Response) -> AsyncGenerator[UpstreamChunk, None]:
        started = False  # set once a chunk has been yielded, i.e. may have reached the client
        finished = False
        done = False  # [DONE] seen: read on to the end of the body so the connection is reused
        data_lines: list[str] = []
        try:
            async for line in response.aiter_lines():
                if done:
                    continue
                if line.startswith("data:"):
                    data_lines.append(line[5:].lstrip(" "))
                    continue
                if line or not data_lines:
                    continue  # comments, event:/id: fields, keep-alive blank lines
                payload = "\n".join(data_lines)
                data_lines = []
                if payload == _DONE:
                    done = True
                    continue
                try:
                    data = json.loads(payload)
                except ValueError as exc:
                    raise UpstreamStreamBroken(
                        self.name, "stream carried an event that is not JSON", started=started
                    ) from exc
                if not isinstance(data, dict) or _in_band_error(data):
                    raise UpstreamStreamBroken(
                        self.name, "upstream reported an error mid-stream", started=started
                    )
                chunk = UpstreamChunk(data, b"data: " + payload.encode() + b"\n\n")
                finished = finished or chunk.finish_reason is not None
                started = True
                yield chunk
        except httpx.HTTPError as exc:
            if done:
                return  # the answer is complete; only the connection's tail was lost
            raise self._transport_error(exc, started=started) from exc
        if done or (data_lines and "\n".join(data_lines) == _DONE):
            return
        if not finished:
            raise UpstreamStreamBroken(
                self.name, "stream ended before the completion finished", started=started
            )

    def _transport_error(self, exc: httpx.HTTPError, *, started: bool) -> UpstreamFailure:
        cfg = self.config
        if started:
            what = "timed out" if isinstance(exc, httpx.TimeoutException) else "was cut"
            return UpstreamStreamBroken(self.name, f"stream {what} mid-way", started=True)
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            return UpstreamTimeout(self.name, "connect", cfg.connect_timeout_s)
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(self.name, "read", cfg.read_timeout_s)
        if isinstance(exc, httpx.ConnectError):
            return UpstreamUnreachable(self.name, "connection failed")
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return UpstreamStreamBroken(
                self.name, "connection dropped before a response", started=False
            )
        return UpstreamUnreachable(self.name, type(exc).__name__)

    def _status_error(self, response: httpx.Response) -> UpstreamError:
        return UpstreamError(
            self.name,
            response.status_code,
            _error_message(response),
            retry_after_s=_retry_after(response),
        )
