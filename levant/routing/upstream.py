"""Client for one OpenAI- or Mistral-compatible upstream (another Levant, vLLM, a vendor API).

``complete`` returns the upstream's JSON response; ``open_stream`` returns a
stream whose first event has already arrived. Plain ``http://`` upstreams are
called through ``http1.Http1Pool`` (lean keep-alive HTTP/1.1 on asyncio); TLS,
proxies and injected test transports go through httpx. Both raise httpx's
exception classes, mapped here to one set of typed failures. Transient failures (timeouts,
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
import urllib.request
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Mapping,
)
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar, overload
from urllib.parse import urlsplit

import httpx

from levant.routing.deployment import Deployment, UpstreamConfig
from levant.routing.errors import (
    UpstreamError,
    UpstreamFailure,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from levant.routing.http1 import Http1Pool

REGION_HEADER = "levant-region"
DEPLOYMENT_HEADER = "levant-deployment"
_DONE = b"[DONE]"

T = TypeVar("T")


class _Response(Protocol):
    """What the client reads of a response: ``httpx.Response`` or ``http1.Http1Response``."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def reason_phrase(self) -> str: ...
    def json(self) -> Any: ...
    async def aread(self) -> bytes: ...
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


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
    def of(cls, response: _Response, attempts: int) -> Served:
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


def _error_message(response: _Response) -> str:
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


def _retry_after(response: _Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


def _in_band_error(data: dict[str, Any]) -> bool:
    return data.get("object") == "error" or "error" in data


@dataclass(slots=True)
class _Progress:
    done: bool = False


def _last_usage(chunks: list[UpstreamChunk]) -> Usage | None:
    for chunk in reversed(chunks):
        if "usage" in chunk.data:
            usage = chunk.usage
            if usage is not None:
                return usage
    return None


class UpstreamStream:
    """An open upstream stream whose first event has arrived (so it was worth committing to).

    Iterate it for ``UpstreamChunk``s, or ``blocks()`` for their ``data:`` frames
    joined as they arrived (one block per network read: fewer writes to pass on);
    it ends after ``[DONE]`` (or a finished choice). Any failure now raises
    ``UpstreamStreamBroken`` (``started=True``). Always closed: by ``aclose``,
    ``async with``, or iterating to the end.
    """

    def __init__(
        self,
        deployment: str,
        response: _Response,
        events: AsyncGenerator[list[UpstreamChunk], None],
        first: list[UpstreamChunk] | None,
        served: Served,
        progress: _Progress | None = None,
    ) -> None:
        self.deployment = deployment
        self.served = served
        self.usage: Usage | None = _last_usage(first) if first else None
        self._response = response
        self._events = events
        self._first = first
        self._progress = progress or _Progress()

    @property
    def done(self) -> bool:
        """Whether the upstream's ``[DONE]`` has been read (true when its block is yielded)."""
        return self._progress.done

    def __aiter__(self) -> AsyncIterator[UpstreamChunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[UpstreamChunk]:
        async for block in self._chunk_lists():
            for chunk in block:
                yield chunk

    async def blocks(self) -> AsyncIterator[bytes]:
        """The stream's events as bytes to pass on: whole ``data: …\n\n`` frames, batched."""
        async for block in self._chunk_lists():
            yield block[0].raw if len(block) == 1 else b"".join(c.raw for c in block)

    async def _chunk_lists(self) -> AsyncIterator[list[UpstreamChunk]]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield first
            async for block in self._events:
                usage = _last_usage(block)
                if usage is not None:
                    self.usage = usage
                yield block
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


def _lean_http(url: str) -> bool:
    """Whether ``url`` may go through ``Http1Pool``: plain http and no proxy for its host."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    proxies = urllib.request.getproxies()
    if not ({"http", "all"} & proxies.keys()):
        return True
    return bool(urllib.request.proxy_bypass(parts.hostname))


class UpstreamClient:
    """Calls one upstream deployment over one connection pool: ``Http1Pool`` for a plain
    ``http://`` URL, otherwise (TLS, a proxy, an injected ``transport``) an
    ``httpx.AsyncClient``."""

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
        self._stream_headers = {**self._headers, "accept": "text/event-stream"}
        self._backoff = _Backoff(cfg.backoff_base_s, cfg.backoff_max_s, rng or random.Random())
        self._sleep = sleep
        self._lean: Http1Pool | None = None
        if transport is None and _lean_http(self._url):
            self._lean = Http1Pool(
                self._url,
                connect_timeout_s=cfg.connect_timeout_s,
                read_timeout_s=cfg.read_timeout_s,
                max_connections=cfg.max_connections,
            )
            extra = {"accept-encoding": "identity"}
            self._heads = (
                self._lean.head({**self._headers, **extra}),
                self._lean.head({**self._stream_headers, **extra}),
            )
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
        if self._lean is not None:
            await self._lean.aclose()
        await self._http.aclose()

    async def _post(self, content: bytes, *, stream: bool) -> _Response:
        """Send the request; returns once the response's headers are in (body unread)."""
        if self._lean is not None:
            return await self._lean.post(self._heads[stream], content)
        headers = self._stream_headers if stream else self._headers
        request = self._http.build_request("POST", self._url, content=content, headers=headers)
        return await self._http.send(request, stream=True)

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
            response = await self._post(content, stream=False)
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=False) from exc
        if response.status_code != 200:
            raise self._status_error(response)
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise UpstreamError(self.name, 502, "response is not JSON", retryable=True) from exc
        if not isinstance(data, dict) or _in_band_error(data):
            raise UpstreamError(self.name, 502, "response is not a chat completion", retryable=True)
        return UpstreamReply(data, Served.of(response, attempt))

    async def _open_stream_once(self, content: bytes, attempt: int) -> UpstreamStream:
        try:
            response = await self._post(content, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, started=False) from exc
        try:
            if response.status_code != 200:
                try:
                    await response.aread()
                except httpx.HTTPError as exc:
                    raise self._transport_error(exc, started=False) from exc
                raise self._status_error(response)
            progress = _Progress()
            events = self._events(response, progress)
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
        served = Served.of(response, attempt)
        return UpstreamStream(self.name, response, events, first, served, progress)

    async def _events(
        self, response: _Response, progress: _Progress
    ) -> AsyncGenerator[list[UpstreamChunk], None]:
        """The stream's events, a list per block of bytes read (never an empty list)."""
        started = False  # set once a chunk has been yielded, i.e. may have reached the client
        finished = False
        done = False  # [DONE] seen: read on to the end of the body so the connection is reused
        data_lines: list[bytes] = []
        pending = b""  # a line not yet ended
        try:
            async for block in response.aiter_bytes():
                if done:
                    continue
                if pending:
                    block = pending + block
                if b"\r" in block:  # CRLF or CR line ends; keep a final CR for its LF
                    carry = block.endswith(b"\r")
                    block = block.replace(b"\r\n", b"\n")
                    if carry:
                        block = block[:-1]
                    block = block.replace(b"\r", b"\n") + (b"\r" if carry else b"")
                lines = block.split(b"\n")
                pending = lines.pop()
                out: list[UpstreamChunk] = []
                broken: UpstreamStreamBroken | None = None
                for line in lines:
                    if line.startswith(b"data:"):
                        data_lines.append(line[5:].lstrip(b" "))
                        continue
                    if line or not data_lines:
                        continue  # comments, event:/id: fields, keep-alive blank lines
                    payload = data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines)
                    data_lines = []
                    if payload == _DONE:
                        done = progress.done = True
                        break
                    chunk, broken = self._chunk(payload, started=started or bool(out))
                    if broken is not None:
                        break
                    assert chunk is not None
                    finished = finished or chunk.finish_reason is not None
                    out.append(chunk)
                if out:
                    started = True
                    yield out
                if broken is not None:
                    raise broken
        except httpx.HTTPError as exc:
            if done:
                return  # the answer is complete; only the connection's tail was lost
            raise self._transport_error(exc, started=started) from exc
        if pending.rstrip(b"\r").startswith(b"data:"):
            data_lines.append(pending.rstrip(b"\r")[5:].lstrip(b" "))
        if done or (data_lines and b"\n".join(data_lines) == _DONE):
            return
        if not finished:
            raise UpstreamStreamBroken(
                self.name, "stream ended before the completion finished", started=started
            )

    def _chunk(
        self, payload: bytes, *, started: bool
    ) -> tuple[UpstreamChunk | None, UpstreamStreamBroken | None]:
        try:
            data = json.loads(payload)
        except ValueError:
            return None, UpstreamStreamBroken(
                self.name, "stream carried an event that is not JSON", started=started
            )
        if not isinstance(data, dict) or _in_band_error(data):
            return None, UpstreamStreamBroken(
                self.name, "upstream reported an error mid-stream", started=started
            )
        return UpstreamChunk(data, b"data: " + payload + b"\n\n"), None

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

    def _status_error(self, response: _Response) -> UpstreamError:
        return UpstreamError(
            self.name,
            response.status_code,
            _error_message(response),
            retry_after_s=_retry_after(response),
        )
