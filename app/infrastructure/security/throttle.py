"""Login throttling: failed attempts per client IP and per account, in a fixed window."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.infrastructure.observability.logging import get_logger

log = get_logger(__name__)


def _account_key(account: str) -> str:
    # Emails are not written into Redis key names.
    return hashlib.sha256(account.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class InProcessLoginThrottle:
    """Per-process counters (no Redis, or Redis unreachable)."""

    def __init__(
        self, *, max_per_account: int, max_per_ip: int, window_seconds: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limits = {"a": max_per_account, "i": max_per_ip}
        self._window = window_seconds
        self._clock = clock
        # (kind, key) -> (window end, failures)
        self._counts: dict[tuple[str, str], tuple[float, int]] = {}

    def _get(self, kind: str, key: str) -> tuple[float, int]:
        now = self._clock()
        until, count = self._counts.get((kind, key), (0.0, 0))
        if until <= now:
            self._counts.pop((kind, key), None)
            return 0.0, 0
        return until, count

    async def retry_after(self, ip: str, account: str) -> float | None:
        waits = []
        for kind, key in (("i", ip), ("a", _account_key(account))):
            until, count = self._get(kind, key)
            if count >= self._limits[kind]:
                waits.append(until - self._clock())
        return max(waits) if waits else None

    async def record_failure(self, ip: str, account: str) -> None:
        if len(self._counts) > 100_000:
            now = self._clock()
            self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
        for kind, key in (("i", ip), ("a", _account_key(account))):
            until, count = self._get(kind, key)
            self._counts[(kind, key)] = (until or self._clock() + self._window, count + 1)

    async def reset_account(self, account: str) -> None:
        self._counts.pop(("a", _account_key(account)), None)


class RedisLoginThrottle:
    """Counters shared by every instance; falls back to the in-process throttle when Redis fails."""

    def __init__(
        self,
        redis: Redis,
        fallback: InProcessLoginThrottle,
        *,
        key_prefix: str,
        max_per_account: int,
        max_per_ip: int,
        window_seconds: int,
    ) -> None:
        self._redis = redis
        self._fallback = fallback
        self._p = f"{key_prefix}login:"
        self._max_account = max_per_account
        self._max_ip = max_per_ip
        self._window = window_seconds

    def _keys(self, ip: str, account: str) -> tuple[str, str]:
        return f"{self._p}i:{ip}", f"{self._p}a:{_account_key(account)}"

    async def retry_after(self, ip: str, account: str) -> float | None:
        ip_key, account_key = self._keys(ip, account)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in (ip_key, account_key):
                    pipe.get(key)
                    pipe.pttl(key)
                ip_count, ip_ttl, account_count, account_ttl = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("login_throttle_redis_unavailable", error=type(exc).__name__)
            return await self._fallback.retry_after(ip, account)
        waits = []
        if ip_count is not None and int(ip_count) >= self._max_ip:
            waits.append(max(int(ip_ttl), 1000) / 1000)
        if account_count is not None and int(account_count) >= self._max_account:
            waits.append(max(int(account_ttl), 1000) / 1000)
        return max(waits) if waits else None

    async def record_failure(self, ip: str, account: str) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in self._keys(ip, account):
                    pipe.set(key, 0, ex=self._window, nx=True)
                    pipe.incr(key)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("login_throttle_redis_unavailable", error=type(exc).__name__)
            await self._fallback.record_failure(ip, account)

    async def reset_account(self, account: str) -> None:
        try:
            await self._redis.delete(self._keys("", account)[1])
        except (RedisError, OSError):
            await self._fallback.reset_account(account)
