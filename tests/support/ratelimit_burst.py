"""A burst worker for the multi-process rate-limit test: one OS process, its own pool and limiter.

Kept apart from the test module so a spawned process imports only what it needs (fast start).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.synchronize import Barrier

from redis.asyncio import Redis

from app.application.ratelimit.types import LimitPolicy, RateLimitRequest
from app.infrastructure.ratelimit.redis_limiter import RedisRateLimiter


def burst_worker(
    url: str,
    prefix: str,
    subjects: list[str],
    *,
    limit: int,
    attempts: int,
    barrier: Barrier,
    results: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    """For each subject: wait for every worker at the barrier, then fire `attempts` acquires at once."""

    async def run() -> None:
        redis = Redis.from_url(url, max_connections=attempts + 8, socket_timeout=10)
        limiter = RedisRateLimiter(redis, key_prefix=prefix)
        policy = LimitPolicy(requests_per_window=limit)
        try:
            # Warm the pool so each burst is just the scripts.
            await asyncio.gather(*(redis.ping() for _ in range(attempts)))
            for name in subjects:
                barrier.wait(timeout=30)
                decisions = await asyncio.gather(
                    *(limiter.acquire(RateLimitRequest(name, policy)) for _ in range(attempts))
                )
                results.put((name, sum(d.allowed for d in decisions)))
        finally:
            await redis.aclose()

    asyncio.run(run())
