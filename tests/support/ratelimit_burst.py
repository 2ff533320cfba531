"""A burst worker for the multi-process rate-limit test: one OS process, its own clients and limiter.

Kept apart from the test module so a spawned process imports only what it needs (fast start).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.synchronize import Barrier

from redis.asyncio import Redis

from app.application.ratelimit.types import LimitPolicy, RateLimitRequest
from app.infrastructure.ratelimit.redis_limiter import RedisRateLimiter
from app.infrastructure.redis_pipeline import PipelinedRedis


def burst_worker(
    url: str,
    prefix: str,
    subjects: list[str],
    *,
    limit: int,
    attempts: int,
    barrier: Barrier,
    results: multiprocessing.Queue,  # type: ignore[type-arg]
    hot_client: str = "pipelined",
) -> None:
    """For each subject: wait for every worker at the barrier, then fire `attempts` acquires at once
    (on one pipelined connection, or on redis-py's pool when ``hot_client`` is ``redis-py``)."""

    async def run() -> None:
        redis = Redis.from_url(url, max_connections=attempts + 8, socket_timeout=10)
        pipelined = PipelinedRedis.from_url(url, timeout=10) if hot_client == "pipelined" else None
        limiter = RedisRateLimiter(redis, key_prefix=prefix, hot_path=pipelined)
        policy = LimitPolicy(requests_per_window=limit)
        try:
            # Warm the connections and the script cache so each burst is just the scripts.
            await asyncio.gather(*(redis.ping() for _ in range(attempts)))
            if pipelined is not None:
                await pipelined.ping()
            for name in subjects:
                barrier.wait(timeout=30)
                decisions = await asyncio.gather(
                    *(limiter.acquire(RateLimitRequest(name, policy)) for _ in range(attempts))
                )
                results.put((name, sum(d.allowed for d in decisions)))
        finally:
            if pipelined is not None:
                await pipelined.aclose()
            await redis.aclose()

    asyncio.run(run())
