"""A lean HTTP/1.1 client for plaintext upstreams: pooled keep-alive connections over asyncio.

Why not httpx here: on the gateway's hot path httpx (with httpcore and anyio
underneath) costs several hundred microseconds of CPU per request, more than
everything else the gateway does. This client writes a request with one
``transport.write`` and parses the answer with httptools (the parser uvicorn
uses) straight from the protocol's ``data_received``.

It speaks only what the upstream client needs: ``POST`` with a body, a response
with Content-Length, chunked or read-to-close framing, keep-alive reuse, a
connect timeout, a read timeout on every wait for bytes (the first one
included) and a pool bound. Failures raise httpx's own exception classes
(``ConnectTimeout``, ``ConnectError``, ``ReadTimeout``, ``PoolTimeout``,
``RemoteProtocolError``), so callers map one set of errors whichever client
ran. TLS, proxies and compressed bodies are httpx's job: ``UpstreamClient``
uses this client only for ``http://`` URLs that no proxy setting covers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import httptools
import httpx

KEEPALIVE_EXPIRY_S = 4.0
"""An idle connection older than this is closed, not reused: below the common 5 s idle
timeout of servers (uvicorn's, httpx's own expiry), so a server is unlikely to close a
connection just as a request goes out on it."""
HIGH_WATER = 256 * 1024
"""Buffered body bytes past which the socket stops being read until the reader catches up."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one exchange at a time."""

    def __init__(self) -> None:
        self.loop = self._loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.error: Exception | None = None
        self.got_bytes = False
        self._paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and self._reads_to_close():
            self.complete = True  # a body framed by the connection's end: now it has ended
            self._wake()
            return
        if not self.complete:
            what = "peer closed connection without sending complete message body"
            if not self.headers_done:
                what = "Server disconnected without sending a response."
            self._fail(httpx.RemoteProtocolError(what))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in self.headers:
            self.headers[key] += ", " + text
        else:
            self.headers[key] = text

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:  # 1xx: an interim answer, the real one follows
            self.headers = {}
            return
        self.headers_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status < 200:
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # only valid until the next message
        self._wake()

    # the exchange

    def _reads_to_close(self) -> bool:
        h = self.headers
        return "content-length" not in h and "chunked" not in h.get("transfer-encoding", "")

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until the next parser event, at most ``timeout`` seconds (then ReadTimeout)."""
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def start(self, request: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.write(request)

    def take(self) -> bytes:
        """Every body byte buffered so far."""
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.closed
            and self.error is None
            and not self.chunks
            and self.keep_alive
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout("timed out waiting for the upstream"))


class Http1Response:
    """The part of ``httpx.Response`` the upstream client uses, over one pooled connection."""

    def __init__(self, pool: Http1Pool, conn: _Connection) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self.status_code = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self._content: bytes | None = None

    @property
    def reason_phrase(self) -> str:
        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive (several network reads may come as one block)."""
        conn = self._conn
        if conn is None:
            if self._content:
                yield self._content
            return
        timeout = self._pool.read_timeout_s
        try:
            while True:
                if conn.chunks:
                    yield conn.take()
                    continue
                if conn.complete:
                    break
                if conn.error is not None:
                    raise conn.error
                await conn.wait(timeout)
        except BaseException:
            self._release(reusable=False)
            raise
        self._release(reusable=conn.reusable)

    async def aread(self) -> bytes:
        if self._content is None:
            parts = [part async for part in self.aiter_bytes()]
            self._content = b"".join(parts)
        return self._content

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the response body has not been read")
        return self._content

    def json(self) -> Any:
        return json.loads(self.content)

    async def aclose(self) -> None:
        if self._conn is not None:
            self._release(reusable=self._conn.reusable)

    def _release(self, *, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn, reusable=reusable)


class Http1Pool:
    """Keep-alive connections to one ``http://host:port`` (at most ``max_connections``)."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_connections: int,
        keepalive_expiry_s: float = KEEPALIVE_EXPIRY_S,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not a plain http:// URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = self.host if ":" not in self.host else f"[{self.host}]"
        if parts.port is not None and parts.port != 80:
            authority += f":{parts.port}"
        self.authority = authority
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self.keepalive_expiry_s = keepalive_expiry_s
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    def head(self, headers: Mapping[str, str]) -> bytes:
        """The request line and the headers that do not change between requests."""
        lines = [f"POST {self.path} HTTP/1.1", f"host: {self.authority}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n").encode("latin-1")

    async def post(self, head: bytes, content: bytes) -> Http1Response:
        """Send one request (``head`` from ``head()``); returns once the headers are in."""
        conn = await self._acquire()
        try:
            conn.start(head + b"content-length: %d\r\n\r\n" % len(content) + content)
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(self.read_timeout_s)
        except BaseException:
            self.release(conn, reusable=False)
            raise
        return Http1Response(self, conn)

    async def _acquire(self) -> _Connection:
        if self._closed:
            raise httpx.ConnectError("the upstream client is closed")
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        while self._idle:
            conn = self._idle.pop()
            if conn.loop is not loop:  # made under another event loop: unusable here
                self._open -= 1
                continue
            if (
                not conn.closed
                and not conn.got_bytes
                and now - conn.idle_since < self.keepalive_expiry_s
                and conn.transport is not None
                and not conn.transport.is_closing()
            ):
                return conn
            self._discard(conn)
        while self._open >= self.max_connections:
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    handed = await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self.release_unused(waiter.result())  # handed over as we gave up
                else:
                    waiter.cancel()
                if isinstance(exc, TimeoutError):
                    raise httpx.PoolTimeout("no upstream connection became free") from None
                raise
            if handed is not None:
                return handed
        self._open += 1
        try:
            return await self._connect()
        except BaseException:
            self._open -= 1
            self._wake_one(None)
            raise

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting to the upstream") from None
        except OSError as exc:
            raise httpx.ConnectError(f"connection failed: {exc.strerror or exc}") from None
        return conn

    def release(self, conn: _Connection, *, reusable: bool) -> None:
        if reusable and not self._closed:
            conn.got_bytes = False
            conn.idle_since = time.monotonic()
            if self._wake_one(conn):
                return
            self._idle.append(conn)
            return
        self._discard(conn)
        self._wake_one(None)

    def release_unused(self, conn: _Connection | None) -> None:
        """Give back what a waiter was handed but will not use (a connection, or a slot)."""
        if conn is not None:
            self.release(conn, reusable=True)
        else:
            self._wake_one(None)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open -= 1

    def _wake_one(self, conn: _Connection | None) -> bool:
        """Hand ``conn`` (or, for None, the right to open one) to the first live waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is not None:
                    conn.got_bytes = False
                waiter.set_result(conn)
                return True
        return False

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._discard(self._idle.pop())
