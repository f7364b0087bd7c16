"""Child process for the SIGKILL test: writes usage through a UsageWriter until killed.

``python -m tests.access.usage_child URL SIDE_FILE``. Each chunk of CHUNK records
is one transaction (batch_size == CHUNK, no timer flush). Before submitting a
chunk it appends ``pending N`` to SIDE_FILE, after ``flush()`` returns
``committed N``: so after a kill the table must hold exactly the last committed
or the last pending count, and every row must equal ``record(i)``.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta

from levant.access.usage import UsageRecord, UsageWriter
from levant.db.engine import make_engine

CHUNK = 200
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def record(i: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{i:08d}",
        workspace_id="ws_kill",
        key_id=f"key_{i % 7}",
        model=f"model-{i % 3}",
        deployment="local",
        region="eu-west",
        prompt_tokens=i % 1000 + 1,
        completion_tokens=(i * 7) % 500,
        cached_tokens=i % 13,
        price_micros=i * 3 + 1,
        latency_ms=i % 250,
        status="ok" if i % 11 else "error",
        created_at=BASE + timedelta(milliseconds=i),
    )


def main(url: str, side_file: str) -> None:
    writer = UsageWriter(make_engine(url), batch_size=CHUNK, interval_s=3600)
    fd = os.open(side_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    total = 0
    while True:
        os.write(fd, f"pending {total + CHUNK}\n".encode())
        for i in range(total, total + CHUNK):
            writer.submit(record(i))
        writer.flush()
        total += CHUNK
        os.write(fd, f"committed {total}\n".encode())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
