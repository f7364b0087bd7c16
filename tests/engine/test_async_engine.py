"""AsyncEngine: streaming, cancellation, backpressure and failure isolation."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Iterator

import pytest

from levant.engine.async_engine import AsyncEngine
from levant.engine.errors import ContextLengthExceeded, EngineOverloaded
from levant.engine.protocol import EngineOutput, EngineRequest, SamplingParams
from levant.engine.scheduler import ScheduledRequest
from levant.models.transformer import Transformer
from tests.engine.conftest import random_prompts
from tests.engine.test_engine import make_engine

LONG = SamplingParams(temperature=0.0, max_tokens=400)


@pytest.fixture
def engine(tiny_model: Transformer) -> Iterator[AsyncEngine]:
    eng = AsyncEngine(make_engine(tiny_model, max_num_seqs=1), max_waiting_requests=2)
    yield eng
    eng.shutdown()


def scheduled_ids(engine: AsyncEngine) -> list[str]:
    """Record every request id the runner computes (wraps the real runner)."""
    seen: list[str] = []
    runner = engine.engine.runner
    execute = runner.execute

    def recording(scheduled: list[ScheduledRequest]) -> dict[str, int]:
        seen.extend(s.request.request_id for s in scheduled)
        return execute(scheduled)

    runner.execute = recording  # type: ignore[method-assign]
    return seen


async def collect(gen: AsyncGenerator[EngineOutput, None]) -> list[EngineOutput]:
    return [o async for o in gen]


async def cancel(*tasks: asyncio.Future[EngineOutput]) -> None:
    """Cancel tasks blocked in anext(stream): the stream's generator sees the cancellation."""
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def wait_until_idle(engine: AsyncEngine) -> None:
    for _ in range(500):
        if not engine.engine.has_unfinished_requests():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("engine still busy")


async def test_streams_deltas_until_finished(engine: AsyncEngine) -> None:
    req = EngineRequest("a", [1, 2, 3], SamplingParams(temperature=0.0, max_tokens=5))
    outs = await asyncio.wait_for(collect(engine.generate(req)), 30)
    assert [len(o.new_token_ids) for o in outs] == [1] * 5 and outs[-1].finished


async def test_closing_the_stream_frees_the_blocks_within_a_step(engine: AsyncEngine) -> None:
    gen = engine.generate(EngineRequest("a", [1, 2, 3], LONG))
    await anext(gen)
    assert engine.engine.kv.pool.usage > 0
    await gen.aclose()
    await wait_until_idle(engine)
    pool = engine.engine.kv.pool
    assert pool.num_free_blocks == pool.num_blocks
    assert engine.stats().request_success_total == {"abort": 1}


async def test_a_queued_request_whose_consumer_left_never_runs(engine: AsyncEngine) -> None:
    seen = scheduled_ids(engine)
    running = engine.generate(EngineRequest("running", [1, 2, 3], LONG))
    await anext(running)  # holds the only seat (max_num_seqs=1)
    queued = engine.generate(EngineRequest("queued", [4, 5, 6], LONG))
    task = asyncio.ensure_future(anext(queued))
    await asyncio.sleep(0.05)
    await cancel(task)
    await running.aclose()
    await wait_until_idle(engine)
    assert "queued" not in seen and engine.num_waiting == 0


async def test_overload_raises_at_once_with_a_retry_after(engine: AsyncEngine) -> None:
    running = engine.generate(EngineRequest("running", [1, 2, 3], LONG))
    await anext(running)
    # All released at once: exactly max_waiting_requests (2) get in, the rest are refused.
    gens = [engine.generate(EngineRequest(f"w{i}", [1, 2], LONG)) for i in range(6)]
    tasks = [asyncio.ensure_future(anext(g)) for g in gens]
    await asyncio.sleep(0.05)
    refused = [t for t in tasks if t.done() and isinstance(t.exception(), EngineOverloaded)]
    assert len(refused) == 4
    exc = refused[0].exception()
    assert isinstance(exc, EngineOverloaded) and exc.retry_after_s >= 1
    assert engine.num_waiting == 2
    await cancel(*tasks)
    await running.aclose()
    await wait_until_idle(engine)
    assert engine.num_waiting == 0


async def test_waiting_prompt_tokens_are_bounded(tiny_model: Transformer) -> None:
    eng = AsyncEngine(make_engine(tiny_model, max_num_seqs=1), max_waiting_tokens=10)
    try:
        running = eng.generate(EngineRequest("running", [1, 2, 3], LONG))
        await anext(running)
        first = eng.generate(EngineRequest("w0", [1] * 8, LONG))
        task = asyncio.ensure_future(anext(first))
        await asyncio.sleep(0.01)
        with pytest.raises(EngineOverloaded, match="prompt tokens"):
            await anext(eng.generate(EngineRequest("w1", [1] * 8, LONG)))
        await cancel(task)
        await running.aclose()
    finally:
        eng.shutdown()


async def test_the_waiting_bound_counts_only_what_the_prefix_cache_lacks(
    tiny_model: Transformer,
) -> None:
    """64 cached tokens of a 65-token prompt cost 1 against the bound, not 65; a salt (other
    workspace), a request that skips the cache or a seeded one (which computes its whole
    prompt itself) pays in full."""
    eng = AsyncEngine(make_engine(tiny_model, max_num_seqs=1), max_waiting_tokens=40)
    prefix = random_prompts(1, 64, 65, seed=7)[0][:64]
    short = SamplingParams(temperature=0.0, max_tokens=2)
    try:
        await collect(eng.generate(EngineRequest("warm", prefix, short)))  # caches 4 blocks
        assert eng.engine.uncached_prompt_tokens([*prefix, 5], None, True) == 1
        running = eng.generate(EngineRequest("running", [1, 2, 3], LONG))
        await anext(running)  # holds the only sequence slot: everything else waits
        waiting = [eng.generate(EngineRequest(f"w{i}", [*prefix, i], LONG)) for i in range(3)]
        tasks = [asyncio.ensure_future(anext(w)) for w in waiting]
        await asyncio.sleep(0.05)
        assert eng.num_waiting == 3  # 3 tokens against the bound of 40, all admitted
        for refused in (
            EngineRequest("cold", random_prompts(1, 65, 66, seed=8)[0], LONG),
            EngineRequest("salted", [*prefix, 9], LONG, cache_salt="other-workspace"),
            EngineRequest("uncached", [*prefix, 9], LONG, prefix_cache=False),
            EngineRequest("seeded", [*prefix, 9], SamplingParams(max_tokens=400, seed=3)),
        ):
            with pytest.raises(EngineOverloaded, match="prompt tokens"):
                await anext(eng.generate(refused))
        await cancel(*tasks)
        await running.aclose()
    finally:
        eng.shutdown()


async def test_too_long_prompt_is_refused_before_queueing(engine: AsyncEngine) -> None:
    too_long = [1] * engine.engine.max_context
    with pytest.raises(ContextLengthExceeded):
        await anext(engine.generate(EngineRequest("x", too_long, LONG)))


async def test_many_streams_over_a_tiny_cache_all_finish(tiny_model: Transformer) -> None:
    eng = AsyncEngine(
        make_engine(tiny_model, kv_tokens=96, block_size=8), max_waiting_tokens=10_000
    )
    try:
        params = SamplingParams(temperature=0.0, max_tokens=30)
        gens = [
            eng.generate(EngineRequest(f"r{i}", p, params))
            for i, p in enumerate(random_prompts(12, 10, 40))
        ]
        results = await asyncio.wait_for(asyncio.gather(*(collect(g) for g in gens)), 120)
        assert all(r[-1].finish_reason == "length" for r in results)
        assert eng.stats().num_preemptions_total > 0
    finally:
        eng.shutdown()


async def test_a_failing_step_reaches_the_consumers_and_the_engine_goes_on(
    engine: AsyncEngine,
) -> None:
    runner = engine.engine.runner
    execute = runner.execute
    calls = [0]

    def flaky(scheduled: list[ScheduledRequest]) -> dict[str, int]:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("boom")
        return execute(scheduled)

    runner.execute = flaky  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="boom"):
        await collect(engine.generate(EngineRequest("a", [1, 2], LONG)))
    req = EngineRequest("b", [1, 2], SamplingParams(temperature=0.0, max_tokens=3))
    outs = await asyncio.wait_for(collect(engine.generate(req)), 30)
    assert outs[-1].finished
    pool = engine.engine.kv.pool
    assert pool.num_free_blocks == pool.num_blocks


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread niceness here")
def test_the_worker_runs_at_the_niceness_asked_for(tiny_model: Transformer) -> None:
    """``nice`` lowers the engine worker's priority (and its OpenMP team's, which inherit
    it) below the event loop's; the thread that built the engine keeps its own."""
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    eng = AsyncEngine(make_engine(tiny_model, max_num_seqs=1), nice=3)
    try:
        worker = eng._worker.native_id
        assert worker is not None
        assert os.getpriority(os.PRIO_PROCESS, worker) == min(base + 3, 19)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    finally:
        eng.shutdown()
