"""The Redis clients (redis-py for everything, the pipelined one for the hot path) and the
readiness probe."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from app.config import RedisSettings
from app.infrastructure.observability.logging import get_logger
from app.infrastructure.redis_pipeline import HotPathRedis, PipelinedRedis, RedisPyHotPath, UnsupportedRedisUrl

log = get_logger(__name__)

# Longest wait for a free pooled connection (then the caller's fallback applies).
POOL_WAIT_SECONDS = 2.0


def create_redis(settings: RedisSettings) -> Redis | None:
    """A pooled client with short timeouts, or None when no REDIS_URL is configured.

    Timeouts are short because every caller has a fallback (the in-process limiter, the
    cached revocation state): a hung Redis must cost a request milliseconds, not seconds.
    """
    if settings.url is None:
        return None
    # A blocking pool: a burst of more concurrent calls than connections waits briefly for a free
    # one instead of failing at once. With the plain pool, 100 simultaneous requests on one process
    # exhausted 64 connections and the rate limiter fell back to per-process limits exactly when a
    # shared decision mattered most (the two-process burst test), and 1,000 held streams sent 800
    # requests to the database fallback (the benchmark); a pool still empty after the wait is an
    # outage as before.
    pool = BlockingConnectionPool.from_url(
        settings.url.get_secret_value(),
        socket_timeout=settings.socket_timeout_seconds,
        socket_connect_timeout=settings.socket_timeout_seconds,
        max_connections=settings.max_connections,
        timeout=POOL_WAIT_SECONDS,
        health_check_interval=15,
        retry_on_timeout=False,
    )
    client: Redis = Redis.from_pool(pool)
    return client


def create_hot_path_redis(settings: RedisSettings, client: Redis) -> HotPathRedis:
    """The client of the calls every request makes (limit scripts, revocation reads).

    `PipelinedRedis` from the same ``REDIS_URL`` (one auto-pipelined connection, the same
    timeout), unless ``REDIS_HOT_PATH_CLIENT=redis-py`` or the URL is one it cannot serve
    (``unix://``): then those calls go through ``client`` (redis-py), which is logged.
    """
    if settings.hot_path_client == "redis-py":
        log.info("redis_hot_path_client", client="redis-py", reason="REDIS_HOT_PATH_CLIENT=redis-py")
        return RedisPyHotPath(client)
    assert settings.url is not None
    try:
        return PipelinedRedis.from_url(settings.url.get_secret_value(), timeout=settings.socket_timeout_seconds)
    except UnsupportedRedisUrl as exc:
        log.warning("redis_hot_path_client", client="redis-py", reason=str(exc))
        return RedisPyHotPath(client)


class RedisProbe:
    name = "redis"
    required = True

    def __init__(self, client: Redis) -> None:
        self._client = client

    async def check(self) -> str:
        await self._client.ping()
        return "ok"


class InProcessLimiterProbe:
    """Reported when no Redis is configured: limits are per process (single-process setups only)."""

    name = "redis"
    required = False

    async def check(self) -> str:
        return "not configured (in-process limiter)"
