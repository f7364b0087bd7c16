"""``RedisLimiter``: limits shared by every gateway process pointed at one Redis.

One Lua script per ``reserve`` checks all of a policy's buckets and charges them
all or none, on the Redis server's own ``TIME`` so processes with skewed clocks
agree; a second script settles. The arithmetic mirrors ``InMemoryLimiter``.
Keys: ``{namespace}:{workspace}:{key|*}:{model}:{limit}`` (``:YYYY-MM`` for months).
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from redis.asyncio import Redis

from levant.access.limits.decision import EPSILON, BucketState, decide
from levant.access.limits.policy import (
    NAMESPACE,
    Decision,
    LimitPolicy,
    LimitScope,
    Reservation,
    bucket_specs,
    token_buckets,
)

# Shared by both scripts: the clock, and the UTC calendar month of a Unix time
# (Howard Hinnant's civil-from-days; Redis Lua has no os.date).
_PRELUDE = """
local function now_us(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m > 2) and (m - 3) or (m + 9)
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- ("YYYY-MM", Unix second the next month starts) for the month holding Unix second s
local function month_window(s)
  local z = math.floor(s / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  local ny, nm = y, m + 1
  if nm == 13 then ny, nm = y + 1, 1 end
  return string.format('%04d-%02d', y, m), days_from_civil(ny, nm, 1) * 86400
end

local function num(x) return string.format('%.17g', x) end
"""

# KEYS[1]: the reservation's key; KEYS[2..]: the buckets (a month bucket gets ':YYYY-MM').
# ARGV: now_us or '', reservation ttl (s), epsilon, then per bucket: kind, capacity, rate/s, cost.
# Returns: allowed, seconds left in the month, month, then per bucket: level, wait_s, never_fits.
_RESERVE = (
    _PRELUDE
    + """
local now = now_us(ARGV[1])
local month, next_month = month_window(math.floor(now / 1000000))
local month_left = (next_month * 1000000 - now) / 1000000
local eps = tonumber(ARGV[3])
local out = {}
local commits = {}
local allowed = 1
for i = 1, #KEYS - 1 do
  local a = 3 + (i - 1) * 4
  local kind, cap, rate, cost = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]),
                                tonumber(ARGV[a + 4])
  local never = (cost > cap + eps) and 1 or 0
  local level, wait
  if kind == 'month' then
    local key = KEYS[i + 1] .. ':' .. month
    level = tonumber(redis.call('GET', key) or '0')
    wait = (level + cost <= cap) and 0 or month_left
    commits[i] = {'month', key, cost}
  else
    local key = KEYS[i + 1]
    local h = redis.call('HMGET', key, 'l', 't')
    local at = tonumber(h[2]) or now
    level = math.max(0, (tonumber(h[1]) or 0) - math.max(0, now - at) * rate / 1000000)
    local excess = level + cost - cap
    wait = (excess <= eps) and 0 or (excess / rate)
    commits[i] = {'rate', key, level + cost, math.max(at, now), rate}
  end
  if wait > 0 or never == 1 then allowed = 0 end
  out[#out + 1] = num(level)
  out[#out + 1] = num(wait)
  out[#out + 1] = never
end
-- All or nothing: charge the buckets only when every one of them admits the request.
if allowed == 1 then
  for _, c in ipairs(commits) do
    if c[1] == 'month' then
      redis.call('INCRBY', c[2], c[3])
      -- Relative, so a test's 'now' in the past does not delete the key at once.
      redis.call('EXPIRE', c[2], math.ceil(month_left) + 86400)
    else
      redis.call('HSET', c[2], 'l', num(c[3]), 't', num(c[4]))
      redis.call('PEXPIRE', c[2], math.ceil(c[3] / c[5] * 1000) + 1000)
    end
  end
  redis.call('SET', KEYS[1], '1', 'EX', tonumber(ARGV[2]))
end
local reply = {allowed, num(month_left), month}
for _, v in ipairs(out) do reply[#reply + 1] = v end
return reply
"""
)

# KEYS[1]: the reservation's key; KEYS[2..]: its token buckets (month keys complete).
# ARGV: now_us or '', then per bucket: kind, rate/s, delta. Returns 1, or 0 if already settled.
_SETTLE = (
    _PRELUDE
    + """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
local now = now_us(ARGV[1])
for i = 2, #KEYS do
  local a = 1 + (i - 2) * 3
  local kind, rate, delta = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local key = KEYS[i]
  if kind == 'month' then
    -- A month key gone means that month is closed; there is nothing left to correct.
    if redis.call('EXISTS', key) == 1 then
      if redis.call('INCRBY', key, delta) < 0 then redis.call('SET', key, '0', 'KEEPTTL') end
    end
  else
    local h = redis.call('HMGET', key, 'l', 't')
    local at = tonumber(h[2]) or now
    local level = math.max(0, (tonumber(h[1]) or 0) - math.max(0, now - at) * rate / 1000000)
    level = math.max(0, level + delta)
    redis.call('HSET', key, 'l', num(level), 't', num(math.max(at, now)))
    redis.call('PEXPIRE', key, math.ceil(level / rate * 1000) + 1000)
  end
end
return 1
"""
)


class RedisLimiter:
    """A ``Limiter`` in Redis. ``namespace`` prefixes every key (tests use their own)."""

    def __init__(
        self,
        client: Redis,
        *,
        namespace: str = NAMESPACE,
        reservation_ttl_s: int = 3600,
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._reservation_ttl_s = reservation_ttl_s
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)

    async def reserve(
        self, scope: LimitScope, policy: LimitPolicy, tokens: int, now: float | None = None
    ) -> tuple[Decision, Reservation | None]:
        specs = bucket_specs(self._namespace, scope, policy, tokens)
        rid = secrets.token_hex(12)
        if not specs:  # nothing to limit: no round trip
            return decide([], tokens), Reservation(rid, tokens, scope)
        args: list[Any] = [_now_arg(now), self._reservation_ttl_s, EPSILON]
        for s in specs:
            args += [s.kind, repr(float(s.capacity)), repr(s.rate_per_s), s.cost]
        keys = [self._reservation_key(rid), *(s.key for s in specs)]
        reply = await self._reserve(keys=keys, args=args)
        allowed, month_left, month = int(reply[0]), float(reply[1]), _text(reply[2])
        states = []
        for i, s in enumerate(specs):
            level, wait, never = reply[3 + 3 * i : 6 + 3 * i]
            states.append(
                BucketState(
                    s.name,
                    s.capacity,
                    float(level),
                    s.cost,
                    float(wait),
                    int(never) == 1,
                    s.rate_per_s,
                    month_left,
                )
            )
        decision = decide(states, tokens)
        if decision.allowed != (allowed == 1):
            # Both apply the same test to the same numbers; a mismatch is a bug in one of them.
            raise RuntimeError(f"reserve script said {allowed} but decide() said {decision}")
        if not allowed:
            return decision, None
        return decision, Reservation(rid, tokens, scope, token_buckets(specs, month))

    async def settle(
        self, reservation: Reservation, actual_tokens: int, now: float | None = None
    ) -> None:
        if not reservation.buckets:
            return
        delta = actual_tokens - reservation.tokens
        args: list[Any] = [_now_arg(now)]
        for b in reservation.buckets:
            args += [b.kind, repr(b.rate_per_s), delta]
        keys = [self._reservation_key(reservation.id), *reservation.keys]
        await self._settle(keys=keys, args=args)

    def _reservation_key(self, rid: str) -> str:
        return f"{self._namespace}:reservation:{rid}"


def _now_arg(now: float | None) -> str:
    return "" if now is None else str(math.floor(now * 1_000_000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
