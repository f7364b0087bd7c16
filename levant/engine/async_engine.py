"""AsyncEngine: the engine behind an asyncio-friendly interface.

Model work runs on one worker thread so the event loop never blocks on a
forward pass. Requests queue in arrival order; a request whose consumer went
away is dropped before it runs, or stops within one step if it is running.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from levant.engine.core import LLMEngine
from levant.engine.protocol import EngineOutput, EngineRequest


@dataclass
class _Job:
    request: EngineRequest
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue[EngineOutput | BaseException]
    cancelled: threading.Event = field(default_factory=threading.Event)


class AsyncEngine:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._running = 0
        self._worker = threading.Thread(target=self._work, name="levant-engine", daemon=True)
        self._worker.start()

    @property
    def num_running(self) -> int:
        return self._running

    @property
    def num_waiting(self) -> int:
        return self._jobs.qsize()

    async def generate(self, request: EngineRequest) -> AsyncGenerator[EngineOutput, None]:
        """Yield the request's outputs; closing the iterator cancels the request."""
        loop = asyncio.get_running_loop()
        job = _Job(request, loop, asyncio.Queue())
        self._jobs.put(job)
        try:
            while True:
                item = await job.outputs.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finished:
                    return
        finally:
            job.cancelled.set()

    def shutdown(self) -> None:
        self._jobs.put(None)
        self._worker.join(timeout=5)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled.is_set():
                continue  # the client left while queued: never runs
            self._running += 1
            try:
                for out in self.engine.generate(job.request, job.cancelled.is_set):
                    _deliver(job, out)
            except Exception as exc:  # surfaced to the consumer, never kills the worker
                _deliver(job, exc)
            finally:
                self._running -= 1


def _deliver(job: _Job, item: EngineOutput | BaseException) -> None:
    try:
        job.loop.call_soon_threadsafe(job.outputs.put_nowait, item)
    except RuntimeError:  # the consumer's event loop is closed: nobody is listening
        job.cancelled.set()
