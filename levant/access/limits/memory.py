"""``InMemoryLimiter``: the limits of one gateway process, when no Redis is configured.

The same leaky-bucket (GCRA) arithmetic as the Redis script, on a dict under a
lock. Each check-and-commit runs without an ``await`` inside, under a
``threading.Lock`` held for microseconds, so it is atomic for coroutines and threads alike.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from levant.access.limits.decision import EPSILON, BucketState, decide
from levant.access.limits.policy import (
    NAMESPACE,
    BucketSpec,
    Decision,
    LimitPolicy,
    LimitScope,
    Reservation,
    bucket_specs,
    month_window,
    token_buckets,
)

_PRUNE_EVERY = 4096


@dataclass(slots=True)
class _Rate:
    level: float
    at: float
    rate_per_s: float


class InMemoryLimiter:
    """A ``Limiter`` over process memory. ``clock`` gives epoch seconds (calendar months need it).

    A clock that steps backwards only pauses draining; it never admits more.
    """

    def __init__(
        self, clock: Callable[[], float] = time.time, *, reservation_ttl_s: float = 3600.0
    ) -> None:
        self._clock = clock
        self._reservation_ttl_s = reservation_ttl_s
        self._lock = threading.Lock()
        self._rates: dict[str, _Rate] = {}
        self._months: dict[str, int] = {}
        self._pending: dict[str, float] = {}
        """Reservation id -> when it was made; a settle after the ttl does nothing (as in Redis)."""
        self._ops = 0

    async def reserve(
        self, scope: LimitScope, policy: LimitPolicy, tokens: int, now: float | None = None
    ) -> tuple[Decision, Reservation | None]:
        specs = bucket_specs(NAMESPACE, scope, policy, tokens)
        with self._lock:
            t = self._clock() if now is None else now
            month, next_month = month_window(t)
            checks = [self._check(spec, t, month, next_month) for spec in specs]
            decision = decide([state for state, _ in checks], tokens)
            if not decision.allowed:
                return decision, None
            # All or nothing: only now, with every bucket known to admit it, charge them.
            for _, commit in checks:
                commit()
            reservation = Reservation(
                secrets.token_hex(12), tokens, scope, token_buckets(specs, month)
            )
            self._pending[reservation.id] = t
            self._ops += 1
            if self._ops % _PRUNE_EVERY == 0:
                self._prune(t, month)
            return decision, reservation

    async def settle(
        self, reservation: Reservation, actual_tokens: int, now: float | None = None
    ) -> None:
        delta = actual_tokens - reservation.tokens
        with self._lock:
            t = self._clock() if now is None else now
            made = self._pending.pop(reservation.id, None)
            if made is None or t - made > self._reservation_ttl_s:
                return
            for b in reservation.buckets:
                if b.kind == "month":
                    if b.key in self._months:
                        self._months[b.key] = max(0, self._months[b.key] + delta)
                    continue
                rate = self._rates.get(b.key)
                if rate is None:
                    rate = self._rates[b.key] = _Rate(0.0, t, b.rate_per_s)
                level = _drained(rate, t, b.rate_per_s)
                rate.level, rate.at = max(0.0, level + delta), max(rate.at, t)

    def _check(
        self, spec: BucketSpec, t: float, month: str, next_month: float
    ) -> tuple[BucketState, Callable[[], None]]:
        """This bucket's state, and how to charge it the request if every bucket agrees."""
        never = spec.cost > spec.capacity + EPSILON
        month_left = next_month - t
        if spec.kind == "month":
            key = f"{spec.key}:{month}"
            used = self._months.get(key, 0)
            wait = 0.0 if used + spec.cost <= spec.capacity else month_left

            def commit_month() -> None:
                self._months[key] = used + spec.cost

            state = BucketState(
                spec.name, spec.capacity, used, spec.cost, wait, never, 0.0, month_left
            )
            return state, commit_month

        rate = self._rates.get(spec.key) or _Rate(0.0, t, spec.rate_per_s)
        # Drain at the policy's rate now, in case it changed since the last request.
        level = _drained(rate, t, spec.rate_per_s)
        excess = level + spec.cost - spec.capacity
        wait = 0.0 if excess <= EPSILON else excess / spec.rate_per_s

        def commit_rate() -> None:
            self._rates[spec.key] = _Rate(level + spec.cost, max(rate.at, t), spec.rate_per_s)

        state = BucketState(
            spec.name, spec.capacity, level, spec.cost, wait, never, spec.rate_per_s, month_left
        )
        return state, commit_rate

    def _prune(self, t: float, month: str) -> None:
        """Forget drained buckets, past months and stale reservations: idle scopes cost nothing."""
        self._rates = {k: r for k, r in self._rates.items() if _drained(r, t, r.rate_per_s) > 0}
        self._months = {k: v for k, v in self._months.items() if k.endswith(month)}
        horizon = t - self._reservation_ttl_s
        self._pending = {r: made for r, made in self._pending.items() if made >= horizon}


def _drained(rate: _Rate, t: float, rate_per_s: float) -> float:
    return max(0.0, rate.level - max(0.0, t - rate.at) * rate_per_s)
