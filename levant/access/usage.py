"""Metering: one ``UsageRecord`` per request, written in batches off the request path.

``UsageWriter.submit`` only appends to an in-memory queue; a background thread
writes batches (every ``batch_size`` records or ``interval_s`` seconds, one
transaction each) with ``INSERT … ON CONFLICT (request_id) DO NOTHING``, so a
replayed record never counts twice. ``flush``/``close`` drain the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError

from levant.db.engine import IMMEDIATE
from levant.db.tables import UsageEvent
from levant.db.types import utcnow

log = logging.getLogger(__name__)

RETRY_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one request cost. Carries counts and ids only, never prompt or completion text."""

    request_id: str
    workspace_id: str
    key_id: str | None
    model: str
    deployment: str
    region: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    price_micros: int
    latency_ms: int
    status: str
    """Either "ok" for a completed request, or why not (e.g. "error", "cancelled")."""
    created_at: datetime = field(default_factory=utcnow)


class UsageWriter:
    """A batched, thread-backed writer of usage rows; safe to call from any thread or loop.

    ``on_commit`` (if given) is called from the writer thread with each batch once
    its transaction has committed, before ``flush`` callers waiting on it return.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 500,
        interval_s: float = 0.25,
        on_commit: Callable[[Sequence[UsageRecord]], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._engine = engine
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._on_commit = on_commit
        self._insert = _insert_ignoring_duplicates(engine.dialect.name)
        self._cond = threading.Condition()
        self._queue: deque[UsageRecord] = deque()
        self._oldest_at: float | None = None  # monotonic time the oldest queued record arrived
        self._submitted = 0
        self._done = 0  # records handled: written, ignored as duplicates, or given up on
        self._lost = 0  # records given up on (invalid, or the database stayed away at close)
        self._flush_upto = 0
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="levant-usage-writer", daemon=True)
        self._thread.start()

    def submit(self, record: UsageRecord) -> None:
        """Queue one record; never waits for the database."""
        with self._cond:
            if self._closing:
                raise RuntimeError("UsageWriter is closed")
            first = not self._queue
            if first:
                self._oldest_at = time.monotonic()
            self._queue.append(record)
            self._submitted += 1
            # Wake the writer when it must start its timer or when a batch is full.
            if first or len(self._queue) >= self._batch_size:
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record submitted before this call is committed; False on timeout."""
        with self._cond:
            target = self._submitted
            self._flush_upto = max(self._flush_upto, target)
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drain the queue and stop the thread; False if records were still unwritten."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            left = self._submitted - self._done + self._lost
        if left:
            log.error("usage writer closed with %d records unwritten", left)
        return left == 0

    @property
    def pending(self) -> int:
        """Records submitted but not yet handled."""
        with self._cond:
            return self._submitted - self._done

    @property
    def lost(self) -> int:
        """Records that could not be written (each one was logged by request id)."""
        with self._cond:
            return self._lost

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                lost = self._write(batch)
            except Exception:
                log.exception("usage writer failed on a batch of %d", len(batch))
                lost = len(batch)
            if self._on_commit is not None and lost < len(batch):
                try:
                    self._on_commit(batch)
                except Exception:
                    log.exception("usage on_commit hook failed")
            with self._cond:
                self._done += len(batch)
                self._lost += lost
                self._cond.notify_all()

    def _next_batch(self) -> list[UsageRecord] | None:
        with self._cond:
            while True:
                if self._queue and self._batch_due():
                    break
                if self._closing and not self._queue:
                    return None
                timeout = None
                if self._queue and self._oldest_at is not None:
                    timeout = max(0.0, self._oldest_at + self._interval_s - time.monotonic())
                self._cond.wait(timeout)
            n = min(self._batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            # Records left behind have waited at most as long as this batch.
            self._oldest_at = time.monotonic() if self._queue else None
            return batch

    def _batch_due(self) -> bool:
        return (
            len(self._queue) >= self._batch_size
            or self._closing
            or self._flush_upto > self._done
            or (
                self._oldest_at is not None
                and time.monotonic() >= self._oldest_at + self._interval_s
            )
        )

    def _write(self, batch: list[UsageRecord]) -> int:
        """Write a batch; returns how many records had to be given up."""
        rows = [{f: getattr(record, f) for f in _FIELDS} for record in batch]
        delay = 0.05
        while True:
            try:
                self._commit(rows)
                return 0
            except OperationalError:
                # Database away or locked: keep the batch and retry; usage is not dropped.
                log.warning("usage batch of %d not written yet; retrying", len(rows), exc_info=True)
            except DBAPIError:
                # Some row is invalid (constraint, value too long): write the rest one
                # by one so one bad record cannot block billing for everyone.
                return self._write_one_by_one(rows)
            if self._closing and delay >= RETRY_MAX_S:
                log.error("usage writer giving up on a batch of %d while closing", len(rows))
                return len(rows)
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def _write_one_by_one(self, rows: list[dict[str, Any]]) -> int:
        lost = 0
        for row in rows:
            try:
                self._commit([row])
            except DBAPIError as exc:
                lost += 1
                log.error(
                    "dropped invalid usage record %s: %s", row["request_id"], type(exc).__name__
                )
        return lost

    def _commit(self, rows: list[dict[str, Any]]) -> None:
        with self._engine.connect() as conn:
            conn.execution_options(**{IMMEDIATE: True})
            with conn.begin():
                conn.execute(self._insert, rows)


_FIELDS = tuple(f.name for f in fields(UsageRecord))
"""A record's columns; read with getattr (``asdict`` deep-copies, several times slower)."""


def _insert_ignoring_duplicates(dialect: str) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(UsageEvent).on_conflict_do_nothing(index_elements=["request_id"])
    if dialect == "sqlite":
        return sqlite.insert(UsageEvent).on_conflict_do_nothing(index_elements=["request_id"])
    raise ValueError(f"no usage writer for {dialect!r}")
