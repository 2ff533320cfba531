"""The shared limiter: every limit of a request decided by ONE Lua script in ONE round trip.

Why a script: the check and the write of every limit (requests, tokens, daily budget,
stream lease) happen inside Redis, atomically, so any number of processes and replicas
sharing the Redis see one sequence of decisions. Time comes from ``redis.call('TIME')``, so
the replicas' clocks do not matter. Every key written gets a TTL.

Key layout (``P`` = ``REDIS_KEY_PREFIX``, ``S`` = the subject; the braces are a Redis
Cluster hash tag keeping a subject's keys in one slot):

- ``P rl:{S}:req``    hash ``a`` anchor µs, ``o`` debt in 1/L µs, ``l`` limit (GCRA requests)
- ``P rl:{S}:tok``    the same for tokens
- ``P rl:{S}:day``    hash ``d`` UTC day number, ``u`` tokens used that day
- ``P rl:{S}:leases`` sorted set: lease id -> expiry µs
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from app.application.ratelimit import gcra
from app.application.ratelimit.types import (
    Lease,
    LimitKind,
    LimitState,
    RateLimitDecision,
    RateLimitRequest,
    Reservation,
)
from app.infrastructure.ratelimit.in_process import refusal
from app.infrastructure.redis_pipeline import HotPathRedis, LuaScript, RedisPyHotPath

ORIGIN = "redis"
# GCRA state is integer debt in units of 1/L µs; W*L must stay below 2^53 for exact math.
MAX_WINDOW_TIMES_LIMIT = 2**53 // 4

# Shared by the scripts: read a GCRA bucket and bring its debt forward to `now`.
_LOAD = """
local function load(key, limit, now)
  local v = redis.call('HMGET', key, 'a', 'o', 'l')
  if not v[1] then return 0 end
  local anchor, debt, old = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
  if old ~= limit then debt = math.ceil(debt * limit / old) end
  local elapsed = now - anchor
  if elapsed < 0 then elapsed = 0 end
  if elapsed >= debt / limit then return 0 end
  return debt - elapsed * limit
end
local function int(x) return string.format('%d', x) end
local function store(key, limit, now, debt)
  redis.call('HSET', key, 'a', int(now), 'o', int(debt), 'l', int(limit))
  redis.call('PEXPIRE', key, math.ceil(debt / limit / 1000) + 1000)
end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

# KEYS: req, tok, day, leases
# ARGV: window_us, rpm, tpm, tokens, daily_budget, max_streams, lease_id ('' = none), lease_ttl_us
# Returns {allowed, refused_mask, retry_us, req_remaining, req_reset_us, tok_remaining,
#          tok_reset_us, day}; refused_mask bits: 1 requests, 2 tokens, 4 daily, 8 streams.
ACQUIRE = (
    _LOAD
    + """
local window = tonumber(ARGV[1])
local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local budget, max_streams = tonumber(ARGV[5]), tonumber(ARGV[6])
local lease_id, lease_ttl = ARGV[7], tonumber(ARGV[8])
local now = clock()
local day = math.floor(now / 86400000000)
local mask, retry = 0, 0
local req_debt, req_new, tok_debt, tok_new = 0, 0, 0, 0
local req_left, req_reset, tok_left, tok_reset = -1, 0, -1, 0

if rpm > 0 then
  req_debt = load(KEYS[1], rpm, now)
  req_new = req_debt + window
  local over = req_new - window * rpm
  if over > 0 then
    mask = mask + 1
    retry = math.max(retry, math.ceil(over / rpm))
  end
end
if tpm > 0 then
  local cost = math.min(tokens, tpm)
  tok_debt = load(KEYS[2], tpm, now)
  tok_new = tok_debt + cost * window
  local over = tok_new - window * tpm
  if over > 0 then
    mask = mask + 2
    retry = math.max(retry, math.ceil(over / tpm))
  end
end
local used = 0
if budget > 0 and tokens > 0 then
  local d = redis.call('HMGET', KEYS[3], 'd', 'u')
  if d[1] and tonumber(d[1]) == day then used = tonumber(d[2]) end
  if used + tokens > budget then
    mask = mask + 4
    retry = math.max(retry, (day + 1) * 86400000000 - now)
  end
end
if lease_id ~= '' and max_streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', int(now))
  if redis.call('ZCARD', KEYS[4]) >= max_streams then
    mask = mask + 8
    retry = math.max(retry, 1000000)
  end
end

if mask == 0 then
  if rpm > 0 then store(KEYS[1], rpm, now, req_new); req_debt = req_new end
  if tpm > 0 then store(KEYS[2], tpm, now, tok_new); tok_debt = tok_new end
  if budget > 0 and tokens > 0 then
    redis.call('HSET', KEYS[3], 'd', int(day), 'u', int(used + tokens))
    redis.call('PEXPIRE', KEYS[3], math.ceil(((day + 1) * 86400000000 - now) / 1000) + 3600000)
  end
  if lease_id ~= '' and max_streams > 0 then
    redis.call('ZADD', KEYS[4], int(now + lease_ttl), lease_id)
    local ttl = math.ceil(lease_ttl / 1000) + 1000
    if redis.call('PTTL', KEYS[4]) < ttl then redis.call('PEXPIRE', KEYS[4], ttl) end
  end
end
if rpm > 0 then
  req_left = rpm - math.ceil(req_debt / window)
  req_reset = math.ceil(req_debt / rpm)
end
if tpm > 0 then
  tok_left = tpm - math.ceil(tok_debt / window)
  tok_reset = math.ceil(tok_debt / tpm)
end
local allowed = 0
if mask == 0 then allowed = 1 end
return {allowed, mask, retry, req_left, req_reset, tok_left, tok_reset, day}
"""
)

# KEYS: tok, day.  ARGV: window_us, tpm, delta_tokens_tpm, day, delta_tokens_day
SETTLE = (
    _LOAD
    + """
local window, tpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local day, delta_day = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = clock()
if tpm > 0 and delta ~= 0 and (delta > 0 or redis.call('EXISTS', KEYS[1]) == 1) then
  local debt = load(KEYS[1], tpm, now) + delta * window
  if debt < 0 then debt = 0 end
  store(KEYS[1], tpm, now, debt)
end
if delta_day ~= 0 then
  local d = redis.call('HMGET', KEYS[2], 'd', 'u')
  if d[1] and tonumber(d[1]) == day then
    local used = tonumber(d[2]) + delta_day
    if used < 0 then used = 0 end
    redis.call('HSET', KEYS[2], 'u', int(used))
  end
end
return 1
"""
)

# KEYS: leases.  ARGV: lease_id
RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: tok, day, leases.  ARGV: the five of SETTLE, then lease_id: the end of a stream, one
# round trip instead of two.
FINISH = (
    SETTLE.removesuffix("return 1\n")
    + """
redis.call('ZREM', KEYS[3], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', int(now))
if redis.call('ZCARD', KEYS[3]) == 0 then redis.call('DEL', KEYS[3]) end
return 1
"""
)

# KEYS: leases.  ARGV: lease_id, lease_ttl_us
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', string.format('%d', now + ttl), ARGV[1])
local key_ttl = math.ceil(ttl / 1000) + 1000
if redis.call('PTTL', KEYS[1]) < key_ttl then redis.call('PEXPIRE', KEYS[1], key_ttl) end
return 1
"""


@dataclass(frozen=True, slots=True)
class SubjectKeys:
    requests: str
    tokens: str
    day: str
    leases: str


def subject_keys(prefix: str, subject: str) -> SubjectKeys:
    """The Redis keys of one subject (all in one cluster slot)."""
    base = f"{prefix}rl:{{{subject}}}:"
    return SubjectKeys(base + "req", base + "tok", base + "day", base + "leases")


def _window_us(seconds: float) -> int:
    return max(1, round(seconds * gcra.MICROS))


_ACQUIRE, _SETTLE, _RELEASE, _FINISH, _RENEW = (LuaScript(body) for body in (ACQUIRE, SETTLE, RELEASE, FINISH, RENEW))


class RedisRateLimiter:
    """`RateLimiter` shared by every process through Redis (one script call per operation).

    The scripts go through ``hot_path`` (production: `PipelinedRedis`, one auto-pipelined
    connection; without it, redis-py's ``client``) by ``EVALSHA``, their body re-sent after
    ``NOSCRIPT`` (a restarted or failed-over Redis). ``client`` (redis-py) serves what is not on
    the request path (`active_leases`, tests). Errors (connection, timeout, pool exhausted)
    propagate: the resilient wrapper decides what they mean.
    """

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str,
        lease_ttl_seconds: float = 300.0,
        hot_path: HotPathRedis | None = None,
    ) -> None:
        self._client = client
        self._hot = hot_path if hot_path is not None else RedisPyHotPath(client)
        self._prefix = key_prefix
        self.lease_ttl_seconds = lease_ttl_seconds

    @property
    def client(self) -> Redis:
        return self._client

    @property
    def bounds_calls(self) -> bool:
        """Whether its Redis client ends every call within its own timeout (`HotPathRedis`)."""
        return self._hot.bounds_calls

    def keys(self, subject: str) -> SubjectKeys:
        return subject_keys(self._prefix, subject)

    async def acquire(self, request: RateLimitRequest) -> RateLimitDecision:
        policy = request.policy
        window = _window_us(policy.window_seconds)
        keys = self.keys(request.subject)
        lease_id = os.urandom(16).hex() if request.stream and policy.streams else ""
        lease_ttl = _window_us(self.lease_ttl_seconds)
        raw: Any = await self._hot.evalsha(
            _ACQUIRE,
            [keys.requests, keys.tokens, keys.day, keys.leases],
            [
                window,
                _capped(policy.rpm, window),
                _capped(policy.tpm, window),
                request.tokens,
                policy.daily,
                policy.streams,
                lease_id,
                lease_ttl,
            ],
        )
        allowed, mask, retry_us, req_left, req_reset, tok_left, tok_reset, day = (int(v) for v in raw)
        requests = LimitState(policy.rpm, max(0, req_left), req_reset / gcra.MICROS) if policy.rpm else None
        tokens = LimitState(policy.tpm, max(0, tok_left), tok_reset / gcra.MICROS) if policy.tpm else None
        if not allowed:
            refusals = [
                (kind, retry_us / gcra.MICROS)
                for bit, kind in (
                    (1, LimitKind.REQUESTS),
                    (2, LimitKind.TOKENS),
                    (4, LimitKind.DAILY_TOKENS),
                    (8, LimitKind.CONCURRENCY),
                )
                if mask & bit
            ]
            return refusal(refusals, requests, tokens)
        reservation = Reservation(request.subject, policy, request.tokens, day, ORIGIN) if request.tokens > 0 else None
        lease = Lease(request.subject, lease_id, self.lease_ttl_seconds, ORIGIN) if lease_id else None
        return RateLimitDecision(True, requests=requests, tokens=tokens, reservation=reservation, lease=lease)

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        args = _settle_args(reservation, used_tokens)
        if args is None:
            return
        keys = self.keys(reservation.subject)
        await self._hot.evalsha(_SETTLE, [keys.tokens, keys.day], args)

    async def finish(self, reservation: Reservation | None, used_tokens: int | None, lease: Lease | None) -> None:
        """Settle and release in one round trip (either may be absent)."""
        args = None if reservation is None or used_tokens is None else _settle_args(reservation, used_tokens)
        if lease is None:
            if args is not None and reservation is not None:
                keys = self.keys(reservation.subject)
                await self._hot.evalsha(_SETTLE, [keys.tokens, keys.day], args)
            return
        if args is None:
            await self.release(lease)
            return
        keys = self.keys(lease.subject)
        await self._hot.evalsha(_FINISH, [keys.tokens, keys.day, keys.leases], [*args, lease.lease_id])

    async def release(self, lease: Lease) -> None:
        await self._hot.evalsha(_RELEASE, [self.keys(lease.subject).leases], [lease.lease_id])

    async def renew(self, lease: Lease) -> None:
        await self._hot.evalsha(
            _RENEW, [self.keys(lease.subject).leases], [lease.lease_id, _window_us(lease.ttl_seconds)]
        )

    async def active_leases(self, subject: str) -> int:
        """Live leases of a subject (operations and tests; not on the request path)."""
        key = self.keys(subject).leases
        now_s, now_us = await self._client.time()
        return int(await self._client.zcount(key, f"({int(now_s) * 1_000_000 + int(now_us)}", "+inf"))


def _settle_args(reservation: Reservation, used_tokens: int) -> list[int] | None:
    """SETTLE's arguments, or None when the usage matches the reservation (nothing to change)."""
    policy = reservation.policy
    used = max(0, used_tokens)
    tpm = _capped(policy.tpm, _window_us(policy.window_seconds))
    delta_tpm = used - gcra.charged(reservation.tokens, tpm) if tpm else 0
    delta_day = used - reservation.tokens if policy.daily else 0
    if delta_tpm == 0 and delta_day == 0:
        return None
    return [_window_us(policy.window_seconds), tpm, delta_tpm, reservation.day, delta_day]


def _capped(limit: int, window_us: int) -> int:
    """Limits beyond exact double arithmetic (over ~37 million per minute) are capped there."""
    return min(limit, MAX_WINDOW_TIMES_LIMIT // window_us)
