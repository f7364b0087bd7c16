"""From the state of each bucket after a check to one ``Decision`` with its headers.

Shared by every ``Limiter`` so the in-memory and Redis ones answer alike; they
only differ in where the bucket levels live and how the check is made atomic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from levant.access.limits.policy import Decision, LimitName

EPSILON = 1e-6
"""Units of slack when comparing float levels, so float rounding never refuses a fit."""

_HEADER_SUFFIX: dict[LimitName, str] = {
    "requests_per_second": "requests",
    "tokens_per_minute": "tokens",
    "tokens_per_month": "tokens-month",
    "monthly_spend": "spend-month",
}


@dataclass(frozen=True, slots=True)
class BucketState:
    """One bucket as a check found it, before this request was (or was not) charged to it."""

    name: LimitName
    capacity: float
    level: float
    """Units in the bucket now: drained level of a rate bucket, used count of a month."""
    cost: int
    wait_s: float
    """Time until this bucket admits the request; 0 if it does now."""
    never_fits: bool
    rate_per_s: float
    """How fast it drains; 0 for a month bucket, which empties when the month ends."""
    month_left_s: float
    """Time until the UTC month ends."""

    def reset_s(self, level: float) -> float:
        """Time until the bucket, holding ``level``, is empty again."""
        if self.rate_per_s > 0:
            return level / self.rate_per_s
        return self.month_left_s if level > 0 else 0.0


def decide(states: Sequence[BucketState], tokens: int) -> Decision:
    """Allowed when every bucket admits the request; otherwise name the one to wait for."""
    hopeless = [s for s in states if s.never_fits]
    if hopeless:
        s = hopeless[0]
        return Decision(
            allowed=False,
            limit_name=s.name,
            headers=rate_limit_headers(states, charged=False),
            never_fits=True,
            message=(
                f"request needs {tokens} tokens but the {s.name} limit is "
                f"{_number(s.capacity)}; it can never be admitted (lower max_tokens)"
            ),
        )
    waiting = [s for s in states if s.wait_s > 0]
    if not waiting:
        return Decision(allowed=True, headers=rate_limit_headers(states, charged=True))
    # Every bucket must admit the request, so it waits for the slowest one.
    s = max(waiting, key=lambda st: st.wait_s)
    headers = rate_limit_headers(states, charged=False)
    headers["retry-after"] = str(max(1, math.ceil(s.wait_s)))
    return Decision(
        allowed=False,
        retry_after_s=s.wait_s,
        limit_name=s.name,
        headers=headers,
        message=f"rate limit exceeded: {s.name}; retry after {_seconds(s.wait_s)} s",
    )


def rate_limit_headers(states: Sequence[BucketState], *, charged: bool) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens,tokens-month}``, OpenAI's spelling.

    ``charged``: whether the request was admitted, and so counts in what remains.
    ``limit-requests`` is the burst (what may arrive at once); resets are seconds.
    """
    headers: dict[str, str] = {}
    for s in states:
        suffix = _HEADER_SUFFIX[s.name]
        level = s.level + s.cost if charged else s.level
        remaining = max(0, math.floor(s.capacity - level + EPSILON))
        headers[f"x-ratelimit-limit-{suffix}"] = _number(s.capacity)
        headers[f"x-ratelimit-remaining-{suffix}"] = str(remaining)
        headers[f"x-ratelimit-reset-{suffix}"] = _seconds(s.reset_s(level))
    return headers


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _seconds(s: float) -> str:
    """Seconds rounded up to the millisecond, without trailing zeros ("0.1", "60")."""
    text = f"{math.ceil(max(0.0, s) * 1000) / 1000:.3f}"
    return text.rstrip("0").rstrip(".")
