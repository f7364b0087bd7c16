"""UsageWriter: batched, every record lands once from many threads, replays never double count."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from levant.access.rollups import DailyUsage, daily_usage
from levant.access.usage import UsageRecord, UsageWriter
from levant.db.session import Database
from levant.db.tables import UsageEvent


def _record(request_id: str, **overrides: Any) -> UsageRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "workspace_id": "ws_a",
        "key_id": "key_a",
        "model": "m",
        "deployment": "local",
        "region": "eu-west",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 1,
        "price_micros": 100,
        "latency_ms": 20,
        "status": "ok",
    }
    fields.update(overrides)
    return UsageRecord(**fields)


def _totals(db: Database) -> tuple[int, int]:
    with db.reading() as session:
        count, tokens = session.execute(
            select(func.count(), func.coalesce(func.sum(UsageEvent.prompt_tokens), 0))
        ).one()
    return int(count), int(tokens)


def test_many_threads_land_every_record_exactly_once(db: Database) -> None:
    commits: list[int] = []
    writer = UsageWriter(
        db.engine, batch_size=64, interval_s=0.02, on_commit=lambda b: commits.append(len(b))
    )
    threads, per_thread = 4, 300

    def produce(t: int) -> None:
        for i in range(per_thread):
            writer.submit(_record(f"t{t}-{i}", prompt_tokens=i))
            if i % 10 == 0:  # a retried request reports its usage again
                writer.submit(_record(f"t{t}-{i}", prompt_tokens=i))

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert writer.close(timeout=30)
    assert writer.lost == 0
    assert _totals(db) == (threads * per_thread, threads * sum(range(per_thread)))
    assert max(commits) <= 64 and len(commits) < threads * per_thread


def test_replays_after_a_restart_are_ignored(db: Database) -> None:
    records = [_record(f"r{i}") for i in range(50)]
    for _ in range(2):
        writer = UsageWriter(db.engine)
        for rec in records:
            writer.submit(rec)
        assert writer.close(timeout=30)
    assert _totals(db) == (50, 500)


def test_flush_waits_for_the_commit(db: Database) -> None:
    writer = UsageWriter(db.engine, batch_size=1000, interval_s=3600)
    try:
        writer.submit(_record("f1"))
        assert writer.flush(timeout=10)
        assert _totals(db)[0] == 1
        assert writer.pending == 0
    finally:
        writer.close()


def test_a_lone_record_is_written_after_the_interval(db: Database) -> None:
    writer = UsageWriter(db.engine, batch_size=1000, interval_s=0.05)
    try:
        writer.submit(_record("lone"))
        deadline = time.monotonic() + 10
        while _totals(db)[0] == 0:
            assert time.monotonic() < deadline, "the timer never flushed"
            time.sleep(0.02)
    finally:
        writer.close()


def test_an_invalid_record_does_not_block_the_others(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    writer = UsageWriter(db.engine, batch_size=10, interval_s=3600)
    writer.submit(_record("good-1"))
    writer.submit(_record("bad", workspace_id=None))
    writer.submit(_record("good-2"))
    assert not writer.close(timeout=30)
    assert writer.lost == 1
    assert _totals(db)[0] == 2
    assert "bad" in caplog.text


def test_submit_after_close_is_an_error(db: Database) -> None:
    writer = UsageWriter(db.engine)
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(_record("late"))


async def test_usable_from_an_event_loop(db: Database) -> None:
    writer = UsageWriter(db.engine, interval_s=3600)

    async def request(i: int) -> None:
        await asyncio.sleep(0)
        writer.submit(_record(f"async-{i}"))  # never awaits the database

    await asyncio.gather(*(request(i) for i in range(100)))
    assert await asyncio.to_thread(writer.flush, 10)
    await asyncio.to_thread(writer.close)
    assert _totals(db)[0] == 100


def test_daily_rollups_per_workspace_and_model(db: Database) -> None:
    day1 = datetime(2026, 5, 1, 23, 59, 59, tzinfo=UTC)
    day2 = day1 + timedelta(seconds=2)
    writer = UsageWriter(db.engine)
    writer.submit(_record("a", model="m1", created_at=day1, price_micros=7))
    writer.submit(_record("a", model="m1", created_at=day1, price_micros=7))  # replay
    writer.submit(_record("b", model="m1", created_at=day1, status="error"))
    writer.submit(_record("c", model="m2", created_at=day1))
    writer.submit(_record("d", model="m1", created_at=day2, prompt_tokens=3))
    writer.submit(_record("e", model="m1", created_at=day2, workspace_id="ws_other"))
    writer.submit(_record("f", model="m1", created_at=day2 + timedelta(days=5)))
    assert writer.close(timeout=30)
    with db.reading() as session:
        rollup = daily_usage(session, "ws_a", date(2026, 5, 1), date(2026, 5, 2))
    assert rollup == [
        DailyUsage(date(2026, 5, 1), "m1", 2, 1, 20, 10, 2, 107),
        DailyUsage(date(2026, 5, 1), "m2", 1, 0, 10, 5, 1, 100),
        DailyUsage(date(2026, 5, 2), "m1", 1, 0, 3, 5, 1, 100),
    ]
