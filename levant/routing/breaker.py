"""A circuit breaker per deployment: stop sending to a deployment that keeps failing.

closed --N consecutive failures--> open --cool-down--> half-open (one probe at a time)
half-open --probe succeeds--> closed;  half-open --probe fails--> open again.
The clock is injectable so tests drive time by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_since: float | None = None

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def available(self) -> bool:
        """Whether ``allow`` would admit a request now (without taking the probe slot)."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self._probe_in_flight()
        )

    def allow(self) -> bool:
        """Admit one request? In half-open, only one probe is admitted at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._probe_in_flight():
            return False
        self._probe_since = self._clock()
        return True

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probe_since = None

    def record_failure(self) -> None:
        self._failures += 1
        self._probe_since = None
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()  # a failed probe restarts the cool-down

    def release(self) -> None:
        """The admitted request ended with no verdict (cancelled): free the probe slot."""
        self._probe_since = None

    def _probe_in_flight(self) -> bool:
        # A probe whose outcome was never recorded does not block the breaker forever.
        return self._probe_since is not None and self._clock() - self._probe_since < self.cooldown_s
