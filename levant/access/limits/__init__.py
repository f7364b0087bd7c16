"""Rate and spend limits: Mistral's three per-scope limits and a monthly spend budget.

``policy`` holds the contract (``LimitPolicy``, ``LimitScope``, ``Decision``,
``Reservation``, ``Limiter``); ``InMemoryLimiter`` serves one process and
``RedisLimiter`` several; ``SpendGuard`` stops a workspace at its monthly budget.
HTTP is the API layer's business: it sends ``Decision.headers`` and a 429.
"""

from levant.access.limits.decision import BucketState, decide, rate_limit_headers
from levant.access.limits.memory import InMemoryLimiter
from levant.access.limits.policy import (
    ANY,
    NAMESPACE,
    Decision,
    Limiter,
    LimitName,
    LimitPolicy,
    LimitScope,
    Reservation,
    ReservedBucket,
    month_window,
)
from levant.access.limits.redis_limiter import RedisLimiter
from levant.access.limits.spend import MonthSpend, SpendGuard, SpendHold, month_spend_from

__all__ = [
    "ANY",
    "NAMESPACE",
    "BucketState",
    "Decision",
    "InMemoryLimiter",
    "LimitName",
    "LimitPolicy",
    "LimitScope",
    "Limiter",
    "MonthSpend",
    "RedisLimiter",
    "Reservation",
    "ReservedBucket",
    "SpendGuard",
    "SpendHold",
    "decide",
    "month_spend_from",
    "month_window",
    "rate_limit_headers",
]
