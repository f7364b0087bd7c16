"""AsyncEngine: the engine behind an asyncio-friendly interface.

One worker thread runs ``LLMEngine.step()`` while any request is unfinished, so the event
loop never blocks on a forward pass. It is the one thread of the process that runs
parallel torch work: it sets the torch thread count and warms the engine up (compiles)
before the constructor returns. Whoever loaded the model should have done it with one
torch thread (``single_threaded``): a second OpenMP thread team alive in the process
(libgomp keeps one per thread that ever ran a parallel region) halved the speed of the
engine's team here, two teams contending for two cores.

Requests and aborts reach the worker through a command queue that is drained before every
step: a request whose consumer left before it was scheduled never runs; a running one
stops, its blocks freed, within one step. Admission is bounded: past
``max_waiting_requests`` / ``max_waiting_tokens`` not yet started, ``generate`` raises
``EngineOverloaded`` at once.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from levant.engine.core import LLMEngine
from levant.engine.errors import ContextLengthExceeded, EngineOverloaded
from levant.engine.protocol import EngineOutput, EngineRequest
from levant.engine.stats import EngineStats

_Item = EngineOutput | BaseException


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Item]
    num_prompt_tokens: int
    started: bool = False  # produced its first output: no longer counts as waiting


@dataclass
class _Commands:
    adds: deque[EngineRequest] = field(default_factory=deque)
    aborts: deque[str] = field(default_factory=deque)


class AsyncEngine:
    def __init__(
        self,
        engine: LLMEngine,
        *,
        max_waiting_requests: int = 256,
        max_waiting_tokens: int | None = None,
        threads: int | None = None,
        nice: int = 0,
    ) -> None:
        """``max_waiting_tokens`` (prompt tokens of admitted requests without output yet, less
        what the prefix cache held when each was admitted) defaults to twice the KV cache's
        capacity; ``threads``: torch intra-op threads of the worker (None: torch's default,
        one per core); ``nice``: added to the worker's scheduling niceness before it starts
        its OpenMP team (whose threads inherit it), so that the event loop's wake-ups (an
        output to deliver, a request to parse) take a core from the step at once rather
        than waiting for the scheduler's next turn."""
        self.engine = engine
        self.max_waiting_requests = max_waiting_requests
        self.max_waiting_tokens = max_waiting_tokens or 2 * engine.kv_cache_tokens
        self._lock = threading.Lock()  # admission counters, commands and streams
        self._commands = _Commands()
        self._streams: dict[str, _Stream] = {}
        self._waiting_requests = 0
        self._waiting_tokens = 0
        self._wake = threading.Event()
        self._stopping = False
        self._threads = threads
        self._nice = nice
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._worker = threading.Thread(target=self._work, name="levant-engine", daemon=True)
        self._worker.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error

    @property
    def num_in_flight(self) -> int:
        """Requests submitted and not yet finished (queued or running)."""
        with self._lock:
            return len(self._streams)

    @property
    def num_running(self) -> int:
        return self.engine.num_running

    @property
    def num_waiting(self) -> int:
        return self._waiting_requests

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens of context the KV cache holds across all requests (for the startup log)."""
        return self.engine.kv_cache_tokens

    def stats(self) -> EngineStats:
        return replace(self.engine.stats(), num_requests_waiting=self._waiting_requests)

    async def generate(self, request: EngineRequest) -> AsyncGenerator[EngineOutput, None]:
        """Yield the request's outputs; closing the iterator cancels the request.

        Raises EngineOverloaded (queue full) or ContextLengthExceeded before any output.
        """
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue(), len(request.prompt_token_ids))
        self._submit(request, stream)
        finished = False
        try:
            while True:
                item = await stream.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
                if item.finished:
                    finished = True
                    return
        finally:
            if not finished:
                self.abort(request.request_id)

    def abort(self, request_id: str) -> None:
        """Cancel a request; its stream ends with finish reason ``abort`` if still read."""
        with self._lock:
            self._commands.aborts.append(request_id)
        self._wake.set()

    def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        self._worker.join(timeout=5)

    def check_capacity(
        self,
        prompt_token_ids: Sequence[int],
        *,
        copies: int = 1,
        cache_salt: str | None = None,
        prefix_cache: bool = True,
    ) -> None:
        """Raise EngineOverloaded if ``copies`` requests of this prompt would be refused now."""
        n = self._cost(prompt_token_ids, cache_salt, prefix_cache) * copies
        with self._lock:
            self._check_capacity(n)

    def _cost(self, prompt_token_ids: Sequence[int], salt: str | None, cache: bool) -> int:
        return self.engine.uncached_prompt_tokens(prompt_token_ids, salt, cache)

    def _check_capacity(self, n: int) -> None:
        if self._stopping:
            raise EngineOverloaded("shutting down", 1)
        if self._waiting_requests + 1 > self.max_waiting_requests:
            raise EngineOverloaded(
                f"{self._waiting_requests} requests waiting", self._retry_after()
            )
        if self._waiting_tokens + n > self.max_waiting_tokens and self._waiting_requests:
            raise EngineOverloaded(
                f"{self._waiting_tokens} prompt tokens waiting", self._retry_after()
            )

    def _submit(self, request: EngineRequest, stream: _Stream) -> None:
        n = len(request.prompt_token_ids)
        if n >= self.engine.max_context:
            raise ContextLengthExceeded(n, self.engine.max_context)
        n = stream.num_prompt_tokens = self._cost(
            request.prompt_token_ids, request.cache_salt, request.uses_prefix_cache
        )
        with self._lock:
            self._check_capacity(n)
            if request.request_id in self._streams:
                raise ValueError(f"request id {request.request_id!r} is already in flight")
            self._waiting_requests += 1
            self._waiting_tokens += n
            self._streams[request.request_id] = stream
            self._commands.adds.append(request)
        self._wake.set()

    def _retry_after(self) -> int:
        """Seconds until the waiting prompts are likely through, at the recent rate."""
        rate = max(self.engine.tokens_per_second, 1.0)
        return max(1, min(60, math.ceil(self._waiting_tokens / rate)))

    def _start(self) -> bool:
        try:
            if self._nice:
                _renice_this_thread(self._nice)
            if self._threads is not None:
                torch.set_num_threads(self._threads)
            self.engine.warm_up()
        except Exception as exc:  # raised by the constructor
            self._startup_error = exc
            return False
        finally:
            self._ready.set()
        return True

    def _work(self) -> None:
        if not self._start():
            return
        while not self._stopping:
            self._apply_commands()
            if not self.engine.has_unfinished_requests():
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as exc:  # surfaced to every consumer, never kills the worker
                self._fail_all(exc)
                continue
            self._deliver(outputs)
        self._fail_all(EngineOverloaded("shutting down", 1))

    def _apply_commands(self) -> None:
        with self._lock:
            adds, aborts = self._commands.adds, self._commands.aborts
            self._commands = _Commands()
        failed: list[EngineOutput | tuple[str, BaseException]] = []
        for request in adds:  # before the aborts: a request cancelled while queued never runs
            try:
                self.engine.add_request(request)
            except ContextLengthExceeded as exc:
                failed.append((request.request_id, exc))
        for request_id in aborts:
            self.engine.abort_request(request_id)
        self._deliver(failed)

    def _deliver(self, items: Sequence[EngineOutput | tuple[str, BaseException]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[_Item], _Item]]]
        by_loop = defaultdict(list)
        with self._lock:
            for item in items:
                rid, payload = (item.request_id, item) if isinstance(item, EngineOutput) else item
                stream = self._streams.get(rid)
                if stream is None:
                    continue
                if not stream.started:
                    stream.started = True
                    self._waiting_requests -= 1
                    self._waiting_tokens -= stream.num_prompt_tokens
                if not isinstance(payload, EngineOutput) or payload.finished:
                    del self._streams[rid]
                by_loop[stream.loop].append((stream.queue, payload))
        for loop, puts in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, puts)
            except RuntimeError:  # that event loop is closed: nobody is listening
                for _, payload in puts:
                    if isinstance(payload, EngineOutput) and not payload.finished:
                        self.abort(payload.request_id)

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            ids = list(self._streams)
        for rid in ids:
            self.engine.abort_request(rid)
        self.engine.step()  # collect the aborts so the engine holds nothing
        self._deliver([(rid, exc) for rid in ids])


def _renice_this_thread(nice: int) -> None:
    """Lower this thread's priority by ``nice`` (Linux: niceness is per thread, and threads
    it creates inherit it). Served one stream at a time on a 2-core Xeon, the event loop's
    delivery of an output waited up to 0.3-2 ms (p90) for a core with the engine at the same
    niceness, 0.2 ms at +5 (8 requests of ~1,000 cached tokens each way: TTFT 34-50 ms
    against 33-38). Where the platform has no per-thread niceness, nothing changes."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError):
        pass


def _put_all(puts: list[tuple[asyncio.Queue[_Item], _Item]]) -> None:
    for queue, item in puts:
        queue.put_nowait(item)


@contextmanager
def single_threaded() -> Iterator[None]:
    """Torch on one thread in this block, on this thread (loading a model, say), so that
    the engine's worker holds the process's only multi-threaded OpenMP team."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
