"""The lean HTTP/1.1 pool against a raw asyncio server: framing, keep-alive, bounds, faults."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from levant.routing.http1 import Http1Pool

Reply = Callable[[bytes], Awaitable[bytes | None]]
"""Given the request bytes, the raw answer (None: close without answering)."""


class Server:
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                request = head + await reader.readexactly(length)
                answer = await self.reply(request)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self) -> Http1Pool:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return Http1Pool(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            connect_timeout_s=1,
            read_timeout_s=0.3,
            max_connections=2,
        )

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def answer(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


async def fixed(request: bytes) -> bytes:
    return answer(b'{"ok": true}', b"levant-region: eu-west-paris")


async def read(pool: Http1Pool, body: bytes = b"{}") -> tuple[int, bytes, dict[str, str]]:
    response = await pool.post(pool.head({"content-type": "application/json"}), body)
    return response.status_code, await response.aread(), dict(response.headers)


async def test_keep_alive_reuses_one_connection() -> None:
    server = Server(fixed)
    async with server as pool:
        for _ in range(5):
            status, body, headers = await read(pool)
            assert (status, body) == (200, b'{"ok": true}')
            assert headers["levant-region"] == "eu-west-paris"
        assert server.connections == 1


async def test_request_carries_path_host_and_length() -> None:
    seen: list[bytes] = []

    async def record(request: bytes) -> bytes:
        seen.append(request)
        return answer(b"{}")

    async with Server(record) as pool:
        await read(pool, b'{"model": "m"}')
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"content-length: 14" in head and body == b'{"model": "m"}'


async def test_chunked_and_read_to_close_bodies() -> None:
    async def chunked(request: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )

    async with Server(chunked) as pool:
        assert (await read(pool))[1] == b"abcde"

    async def to_close(request: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end"

    server = Server(to_close)
    async with server as pool:
        assert (await read(pool))[1] == b"until the end"
        assert (await read(pool))[1] == b"until the end"
        assert server.connections == 2  # not reused


async def test_streamed_body_arrives_in_blocks() -> None:
    async def sse(request: bytes) -> bytes:
        body = b"data: 1\n\ndata: 2\n\n"
        return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + (
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        )

    async with Server(sse) as pool:
        response = await pool.post(pool.head({}), b"{}")
        blocks = [b async for b in response.aiter_bytes()]
        assert b"".join(blocks) == b"data: 1\n\ndata: 2\n\n"


async def test_silence_is_a_read_timeout_and_a_close_before_answering_a_protocol_error() -> None:
    async def hang(request: bytes) -> bytes:
        await asyncio.sleep(5)
        return answer(b"{}")

    async with Server(hang) as pool:
        with pytest.raises(httpx.ReadTimeout):
            await read(pool)

    async def close(request: bytes) -> None:
        return None

    async with Server(close) as pool:
        with pytest.raises(httpx.RemoteProtocolError):
            await read(pool)


async def test_refused_connection_is_a_connect_error() -> None:
    async with Server(fixed) as pool:
        pass  # the server is closed now
    with pytest.raises(httpx.ConnectError):
        await read(pool)


async def test_pool_bound_waits_then_times_out() -> None:
    release = asyncio.Event()

    async def slow(request: bytes) -> bytes:
        await release.wait()
        return answer(b"{}")

    server = Server(slow)
    async with server as pool:
        pool.connect_timeout_s = 0.2
        pool.read_timeout_s = 5
        busy = [asyncio.create_task(read(pool)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await read(pool)  # both connections are taken
        third = asyncio.create_task(read(pool))
        await asyncio.sleep(0.05)
        release.set()
        results = await asyncio.gather(*busy, third)
        assert all(status == 200 for status, _, _ in results)
        assert server.connections == 2  # the third request waited for a free connection


async def test_idle_connection_closed_by_the_server_is_not_reused() -> None:
    async def once(request: bytes) -> bytes:
        return answer(b"{}", b"connection: close")

    server = Server(once)
    async with server as pool:
        await read(pool)
        await asyncio.sleep(0.05)
        assert (await read(pool))[0] == 200
        assert server.connections == 2


def test_a_connection_left_idle_by_another_event_loop_is_not_reused() -> None:
    import threading

    ready = threading.Event()
    server = Server(fixed)
    holder: dict[str, object] = {}

    def serve() -> None:
        async def main() -> None:
            holder["pool"] = await server.__aenter__()
            ready.set()
            while not holder.get("stop"):
                await asyncio.sleep(0.01)
            await server.__aexit__()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(5)
    pool = holder["pool"]
    assert isinstance(pool, Http1Pool)
    try:
        assert asyncio.run(read(pool))[0] == 200  # leaves its connection idle in the pool
        assert asyncio.run(read(pool))[0] == 200  # another loop: a new connection
        assert server.connections == 2
    finally:
        holder["stop"] = True
        thread.join(5)
