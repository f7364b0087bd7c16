from __future__ import annotations

from levant.routing import BreakerState, CircuitBreaker


def state(b: CircuitBreaker) -> BreakerState:
    return b.state  # a call, so the checker does not pin the property across steps


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_consecutive_failures_only() -> None:
    clock = FakeClock()
    b = CircuitBreaker(3, 10.0, clock=clock)
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the run
    b.record_failure()
    b.record_failure()
    assert state(b) is BreakerState.CLOSED and b.allow()
    b.record_failure()
    assert state(b) is BreakerState.OPEN
    assert not b.allow() and not b.available()


def test_half_open_admits_one_probe_then_closes_on_success() -> None:
    clock = FakeClock()
    b = CircuitBreaker(1, 10.0, clock=clock)
    b.record_failure()
    clock.now += 9.9
    assert state(b) is BreakerState.OPEN and not b.allow()
    clock.now += 0.1
    assert state(b) is BreakerState.HALF_OPEN and b.available()
    assert b.allow()  # the probe
    assert not b.allow() and not b.available()  # one at a time
    b.record_success()
    assert state(b) is BreakerState.CLOSED and b.allow() and b.consecutive_failures == 0


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    b = CircuitBreaker(2, 5.0, clock=clock)
    b.record_failure()
    b.record_failure()
    clock.now += 5
    assert b.allow()
    b.record_failure()
    assert state(b) is BreakerState.OPEN
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()


def test_released_or_abandoned_probe_frees_the_slot() -> None:
    clock = FakeClock()
    b = CircuitBreaker(1, 5.0, clock=clock)
    b.record_failure()
    clock.now += 5
    assert b.allow()
    b.release()  # the probe was cancelled: no verdict
    assert b.allow()
    clock.now += 5  # never reported at all: after a cool-down another probe may go
    assert b.allow()
