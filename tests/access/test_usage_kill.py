"""A process SIGKILLed while metering loses no committed usage and leaves no half-written rows."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select, text

from levant.db.engine import make_engine
from levant.db.migrate import upgrade
from levant.db.tables import UsageEvent
from tests.access.usage_child import CHUNK, record

REPO = Path(__file__).resolve().parents[2]
FIELDS = [c.key for c in UsageEvent.__table__.columns if c.key != "id"]


def _last(lines: list[str], word: str) -> int:
    values = [int(line.split()[1]) for line in lines if line.startswith(word + " ")]
    return values[-1] if values else 0


def test_sigkill_mid_load(db_url: str, tmp_path: Path) -> None:
    upgrade(db_url)
    side = tmp_path / "side"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.access.usage_child", db_url, str(side)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if side.exists() and _last(side.read_text().splitlines(), "committed") >= 3 * CHUNK:
                break
            assert child.poll() is None, "the writer process died on its own"
            time.sleep(0.01)
        else:
            raise AssertionError("the writer process made no progress")
        time.sleep(random.uniform(0, 0.03))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL

    lines = side.read_text().splitlines()
    committed, pending = _last(lines, "committed"), _last(lines, "pending")
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            rows = conn.execute(
                select(*[UsageEvent.__table__.c[f] for f in FIELDS]).order_by(UsageEvent.request_id)
            ).all()
            assert conn.execute(text("SELECT count(*) FROM usage_events")).scalar() == len(rows)
    finally:
        engine.dispose()
    # Nothing acknowledged as committed is missing; at most the one in-flight chunk is extra.
    assert len(rows) in (committed, pending), (len(rows), committed, pending)
    # Every row is whole: exactly the record the child wrote, nothing torn or invented.
    for i, row in enumerate(rows):
        expected = record(i)
        assert dict(zip(FIELDS, row, strict=True)) == {f: getattr(expected, f) for f in FIELDS}
