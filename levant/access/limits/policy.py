"""The limits contract the API calls: policies, scopes, decisions, reservations, ``Limiter``.

No HTTP and no storage here: a ``Limiter`` (in memory or in Redis) answers
``reserve`` with a ``Decision``; the API turns it into 429 + headers, runs the
request, then ``settle``s the reservation with the tokens really used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

LimitName = Literal["requests_per_second", "tokens_per_minute", "tokens_per_month", "monthly_spend"]
BucketKind = Literal["rate", "month"]
"""``rate``: a leaky bucket (GCRA), draining continuously; ``month``: a UTC calendar-month count."""

ANY = "*"
"""Scope wildcard: every key of the workspace, or every model."""
NAMESPACE = "levant:rl"
"""The default prefix of every limiter key."""


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """Mistral's three limits for one scope; ``None`` means unlimited.

    ``request_burst`` is how many requests may arrive at once before the per-second
    rate applies; by default one second's worth (at least 1).
    """

    requests_per_second: float | None = None
    tokens_per_minute: int | None = None
    tokens_per_month: int | None = None
    request_burst: int | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_second", "tokens_per_minute", "tokens_per_month"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if self.request_burst is not None and self.request_burst < 1:
            raise ValueError("request_burst must be at least 1")

    @property
    def burst(self) -> int:
        if self.request_burst is not None:
            return self.request_burst
        return max(1, math.ceil(self.requests_per_second or 1))


@dataclass(frozen=True, slots=True)
class LimitScope:
    """Whose buckets: a workspace, optionally one key of it, for one model or ``*`` (any).

    The caller picks the scope that matches the policy's granularity: a
    workspace-wide policy uses ``key_id=None`` so all its keys share the buckets.
    """

    workspace_id: str
    key_id: str | None = None
    model: str = ANY

    def key(self, namespace: str, limit: LimitName) -> str:
        return f"{namespace}:{self.workspace_id}:{self.key_id or ANY}:{self.model}:{limit}"


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """One bucket a request must fit: ``cost`` more units within ``capacity``."""

    name: LimitName
    kind: BucketKind
    key: str
    """The storage key; a month bucket appends ``:YYYY-MM`` to it."""
    capacity: float
    rate_per_s: float
    """How fast a ``rate`` bucket drains; 0 for a ``month`` bucket."""
    cost: int


def bucket_specs(
    namespace: str, scope: LimitScope, policy: LimitPolicy, tokens: int
) -> list[BucketSpec]:
    """The buckets ``policy`` puts on a request of ``tokens`` in ``scope``, in a fixed order."""
    if tokens < 0:
        raise ValueError("tokens must not be negative")
    specs = []
    if policy.requests_per_second is not None:
        name: LimitName = "requests_per_second"
        specs.append(
            BucketSpec(
                name,
                "rate",
                scope.key(namespace, name),
                policy.burst,
                policy.requests_per_second,
                1,
            )
        )
    if policy.tokens_per_minute is not None:
        name = "tokens_per_minute"
        cap = policy.tokens_per_minute
        specs.append(BucketSpec(name, "rate", scope.key(namespace, name), cap, cap / 60, tokens))
    if policy.tokens_per_month is not None:
        name = "tokens_per_month"
        cap = policy.tokens_per_month
        specs.append(BucketSpec(name, "month", scope.key(namespace, name), cap, 0.0, tokens))
    return specs


@dataclass(frozen=True, slots=True)
class ReservedBucket:
    """A token bucket a reservation charged, as ``settle`` must find it again."""

    key: str
    kind: BucketKind
    rate_per_s: float


@dataclass(frozen=True, slots=True)
class Reservation:
    """An admitted request's hold on its token buckets; hand it back to ``settle``.

    The request-per-second slot is not part of it: a request that ran was a request.
    """

    id: str
    tokens: int
    scope: LimitScope
    buckets: tuple[ReservedBucket, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(b.key for b in self.buckets)


def month_window(now: float) -> tuple[str, float]:
    """The UTC calendar month holding epoch second ``now``: ("YYYY-MM", start of the next)."""
    t = datetime.fromtimestamp(now, UTC)
    after = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)
    return f"{t.year:04d}-{t.month:02d}", after.timestamp()


def token_buckets(specs: Sequence[BucketSpec], month: str) -> tuple[ReservedBucket, ...]:
    """The buckets a reservation must correct on settle: all but the request-per-second one."""
    return tuple(
        ReservedBucket(f"{s.key}:{month}" if s.kind == "month" else s.key, s.kind, s.rate_per_s)
        for s in specs
        if s.name != "requests_per_second"
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request may run now, and the ``x-ratelimit-*`` headers to send either way.

    A denial names the limit that refused it. ``retry_after_s`` is the exact time
    until that bucket admits this request (the ``retry-after`` header rounds it up
    to whole seconds). ``never_fits`` marks a request larger than the bucket
    itself: no ``retry_after_s``, retrying cannot help.
    """

    allowed: bool
    retry_after_s: float | None = None
    limit_name: LimitName | None = None
    headers: dict[str, str] = field(default_factory=dict)
    never_fits: bool = False
    message: str | None = None


class Limiter(Protocol):
    """Admits requests against a ``LimitPolicy``, all of its limits or none."""

    async def reserve(
        self, scope: LimitScope, policy: LimitPolicy, tokens: int, now: float | None = None
    ) -> tuple[Decision, Reservation | None]:
        """Check every bucket and, only if all admit ``tokens``, charge them all at once.

        ``tokens`` is the worst case: prompt tokens + ``max_tokens``. ``now`` (epoch
        seconds) overrides the limiter's clock, for tests.
        """
        ...

    async def settle(
        self, reservation: Reservation, actual_tokens: int, now: float | None = None
    ) -> None:
        """Correct the token buckets with what the request really used (refund or charge).

        Idempotent: a second settle of the same reservation does nothing.
        """
        ...
