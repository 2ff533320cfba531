"""The Redis limiter against a real Redis: exact under concurrency from several processes.

Every test runs twice: with the scripts on the pipelined hot-path client (production: one
connection per process, every concurrent call on it) and on redis-py's pool (the fallback):
the same scripts, keys and replies must give the same decisions."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import pytest
from redis.asyncio import BlockingConnectionPool, Redis

from app.application.ratelimit import (
    INSUFFICIENT_QUOTA,
    LimitKind,
    LimitPolicy,
    RateLimitRefused,
    RateLimitRequest,
    admit,
    rate_limit_headers,
)
from app.infrastructure.ratelimit.redis_limiter import RedisRateLimiter
from app.infrastructure.redis_pipeline import Arg, LuaScript, PipelinedRedis, Reply
from tests.support.ratelimit_burst import burst_worker
from tests.support.services import spawn_redis

BURST_PROCESSES = 2
BURST_ATTEMPTS_PER_PROCESS = 100
BURST_LIMIT = 10
BURST_REPETITIONS = 10


@pytest.fixture
def prefix() -> str:
    return f"test-rl-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=10)
    redis = Redis(connection_pool=pool)
    yield redis
    await redis.aclose()
    await pool.aclose()


@pytest.fixture(params=["pipelined", "redis-py"])
def hot_client(request: pytest.FixtureRequest) -> str:
    """Which client carries the scripts."""
    return str(request.param)


@pytest.fixture
async def hot_path(hot_client: str, redis_url: str) -> AsyncIterator[PipelinedRedis | None]:
    """The pipelined client (None: the limiter uses redis-py's `client`)."""
    if hot_client == "redis-py":
        yield None
        return
    pipelined = PipelinedRedis.from_url(redis_url, timeout=10)
    yield pipelined
    await pipelined.aclose()


@pytest.fixture
def limiter(client: Redis, prefix: str, hot_path: PipelinedRedis | None) -> RedisRateLimiter:
    return RedisRateLimiter(client, key_prefix=prefix, lease_ttl_seconds=30, hot_path=hot_path)


def subject() -> str:
    return f"key:{uuid.uuid4()}"


# --- exactness across processes -------------------------------------------------------------------


def test_a_synchronised_burst_from_two_processes_admits_exactly_the_limit(
    redis_url: str, prefix: str, hot_client: str
) -> None:
    # fork: a spawned child spends seconds re-importing; each child still builds its own
    # event loop, connection pool and limiter (nothing Redis-related exists before the fork).
    context = multiprocessing.get_context("fork")
    subjects = [subject() for _ in range(BURST_REPETITIONS)]
    barrier = context.Barrier(BURST_PROCESSES)
    results = context.Queue()
    workers = [
        context.Process(
            target=burst_worker,
            args=(redis_url, prefix, subjects),
            kwargs={
                "limit": BURST_LIMIT,
                "attempts": BURST_ATTEMPTS_PER_PROCESS,
                "barrier": barrier,
                "results": results,
                "hot_client": hot_client,
            },
        )
        for _ in range(BURST_PROCESSES)
    ]
    for worker in workers:
        worker.start()
    admitted: Counter[str] = Counter()
    for _ in range(BURST_PROCESSES * BURST_REPETITIONS):
        name, count = results.get(timeout=60)
        admitted[name] += count
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0
    assert admitted == dict.fromkeys(subjects, BURST_LIMIT)


# --- one process ------------------------------------------------------------------------------------


async def test_retry_after_is_honoured(limiter: RedisRateLimiter) -> None:
    request = RateLimitRequest(subject(), LimitPolicy(requests_per_window=5, window_seconds=0.5))
    assert all([(await limiter.acquire(request)).allowed for _ in range(5)])
    refused = await limiter.acquire(request)
    assert not refused.allowed
    assert refused.refused_by is LimitKind.REQUESTS
    assert 0 < refused.retry_after_seconds <= 0.1
    await asyncio.sleep(refused.retry_after_seconds)
    assert (await limiter.acquire(request)).allowed


async def test_remaining_drops_by_one_per_admitted_request_and_is_never_negative(limiter: RedisRateLimiter) -> None:
    request = RateLimitRequest(subject(), LimitPolicy(requests_per_window=10, tokens_per_window=1000), tokens=10)
    decisions = [await limiter.acquire(request) for _ in range(14)]
    headers = [rate_limit_headers(d) for d in decisions]
    remaining = [int(h["x-ratelimit-remaining-requests"]) for h in headers]
    assert remaining == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0]
    assert [int(h["x-ratelimit-remaining-tokens"]) for h in headers[:10]] == list(range(990, 890, -10))
    assert all(h["x-ratelimit-limit-requests"] == "10" for h in headers)
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 4
    assert all("Retry-After" in h and "retry-after-ms" in h for h in headers[10:])
    assert all("Retry-After" not in h for h in headers[:10])


async def test_subjects_are_isolated(limiter: RedisRateLimiter) -> None:
    policy = LimitPolicy(requests_per_window=3)
    first, second = subject(), subject()
    assert [(await limiter.acquire(RateLimitRequest(first, policy))).allowed for _ in range(4)] == [True] * 3 + [False]
    assert [(await limiter.acquire(RateLimitRequest(second, policy))).allowed for _ in range(3)] == [True] * 3


async def test_token_reservations_never_exceed_the_tpm_and_settlement_refunds(limiter: RedisRateLimiter) -> None:
    # A 10-minute window keeps refill (1.7 tokens/s) far below the smallest request during the test.
    policy = LimitPolicy(tokens_per_window=1000, window_seconds=600)
    name = subject()
    rng = random.Random(6)
    sizes = [rng.randint(20, 200) for _ in range(100)]
    decisions = await asyncio.gather(*(limiter.acquire(RateLimitRequest(name, policy, tokens=n)) for n in sizes))
    granted = [n for n, d in zip(sizes, decisions, strict=True) if d.allowed]
    assert sum(granted) <= 1000
    assert sum(granted) > 1000 - 200  # whatever was refused did not fit
    assert all(d.refused_by is LimitKind.TOKENS for d in decisions if not d.allowed)
    await asyncio.gather(*(limiter.settle(d.reservation, 0) for d in decisions if d.reservation is not None))
    whole = await limiter.acquire(RateLimitRequest(name, policy, tokens=1000))
    assert whole.allowed  # everything came back


async def test_daily_budget_is_a_quota_and_settlement_adjusts_it(limiter: RedisRateLimiter) -> None:
    policy = LimitPolicy(daily_token_budget=1000)
    name = subject()
    first = await limiter.acquire(RateLimitRequest(name, policy, tokens=800))
    refused = await limiter.acquire(RateLimitRequest(name, policy, tokens=300))
    assert refused.code == INSUFFICIENT_QUOTA
    assert not refused.should_retry
    assert 0 < refused.retry_after_seconds <= 86_400
    assert rate_limit_headers(refused)["x-should-retry"] == "false"
    assert first.reservation is not None
    await limiter.settle(first.reservation, used_tokens=500)
    assert (await limiter.acquire(RateLimitRequest(name, policy, tokens=500))).allowed
    assert not (await limiter.acquire(RateLimitRequest(name, policy, tokens=1))).allowed


async def test_a_thousand_streams_with_random_endings_leave_no_lease_behind(limiter: RedisRateLimiter) -> None:
    name = subject()
    policy = LimitPolicy(max_concurrent_streams=20, tokens_per_window=10_000_000)
    rng = random.Random(1000)
    inside = peak = refused = 0
    gate = asyncio.Semaphore(100)

    class UpstreamFailed(Exception):
        pass

    async def stream(ending: str) -> None:
        nonlocal inside, peak, refused
        async with gate:
            try:
                admission = await admit(limiter, RateLimitRequest(name, policy, tokens=50, stream=True))
            except RateLimitRefused:
                refused += 1
                return
            async with admission:
                inside += 1
                peak = max(peak, inside)
                try:
                    await asyncio.sleep(rng.random() * 0.003)
                    admission.add_usage(rng.randint(0, 50))
                    if ending == "upstream_error":
                        raise UpstreamFailed
                    if ending in ("disconnect", "timeout"):
                        await asyncio.sleep(10)
                finally:
                    inside -= 1

    async def run(ending: str) -> None:
        if ending == "timeout":
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(stream(ending), timeout=0.002)
        elif ending == "disconnect":
            task = asyncio.create_task(stream(ending))
            await asyncio.sleep(rng.random() * 0.004)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:
            await asyncio.gather(stream(ending), return_exceptions=True)

    endings = [rng.choice(["ok", "upstream_error", "disconnect", "timeout"]) for _ in range(1000)]
    await asyncio.gather(*(run(ending) for ending in endings))
    assert peak <= 20
    assert refused < 1000
    assert await limiter.active_leases(name) == 0
    assert not await limiter.client.exists(limiter.keys(name).leases)


async def test_a_lease_whose_holder_crashed_expires_after_its_ttl(
    client: Redis, prefix: str, hot_path: PipelinedRedis | None
) -> None:
    limiter = RedisRateLimiter(client, key_prefix=prefix, lease_ttl_seconds=0.3, hot_path=hot_path)
    request = RateLimitRequest(subject(), LimitPolicy(max_concurrent_streams=1), stream=True)
    crashed = await limiter.acquire(request)
    assert crashed.lease is not None  # never released: its process "died"
    refused = await limiter.acquire(request)
    assert refused.refused_by is LimitKind.CONCURRENCY
    await asyncio.sleep(0.35)
    assert (await limiter.acquire(request)).allowed


async def test_every_key_has_a_ttl_and_the_configured_prefix(limiter: RedisRateLimiter, prefix: str) -> None:
    name = subject()
    policy = LimitPolicy(10, 1000, 5000, 3)
    decision = await limiter.acquire(RateLimitRequest(name, policy, tokens=100, stream=True))
    assert decision.reservation is not None
    assert decision.lease is not None
    await limiter.settle(decision.reservation, 200)
    await limiter.renew(decision.lease)
    await limiter.acquire(RateLimitRequest(name, policy, tokens=100, stream=True))
    keys = [key async for key in limiter.client.scan_iter(match=f"{prefix}*")]
    assert len(keys) == 4
    for key in keys:
        assert key.decode().startswith(f"{prefix}rl:{{{name}}}:")
        assert await limiter.client.pttl(key) > 0


async def test_scripts_survive_a_flushed_script_cache(limiter: RedisRateLimiter) -> None:
    request = RateLimitRequest(subject(), LimitPolicy(requests_per_window=2))
    assert (await limiter.acquire(request)).allowed
    await limiter.client.script_flush()  # what a restart or failover does
    assert (await limiter.acquire(request)).allowed
    assert not (await limiter.acquire(request)).allowed


async def test_a_decision_is_one_round_trip_of_one_script(hot_client: str) -> None:
    server = spawn_redis()
    redis = Redis.from_url(server.url)
    pipelined = PipelinedRedis.from_url(server.url, timeout=10) if hot_client == "pipelined" else None
    try:
        limiter = RedisRateLimiter(redis, key_prefix="test-rtt:", hot_path=pipelined)
        policy = LimitPolicy(10, 1000, 5000, 3)
        await limiter.acquire(RateLimitRequest(subject(), policy, tokens=10, stream=True))  # loads the script
        await redis.config_resetstat()
        await limiter.acquire(RateLimitRequest(subject(), policy, tokens=10, stream=True))
        stats = await redis.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1
        # Redis counts the script's own calls too; nothing else may appear (no GET, EVAL, SCRIPT...).
        inside_script = {"time", "hmget", "hset", "pexpire", "pttl", "zremrangebyscore", "zcard", "zadd"}
        seen = {name.removeprefix("cmdstat_") for name in stats} - {"config", "info"}
        assert seen - inside_script == {"evalsha"}, stats
    finally:
        if pipelined is not None:
            await pipelined.aclose()
        await redis.aclose()
        server.stop()


async def test_finish_settles_and_releases_in_one_script_call(limiter: RedisRateLimiter) -> None:
    policy = LimitPolicy(tokens_per_window=1000, window_seconds=600, max_concurrent_streams=1)
    name = subject()
    decision = await limiter.acquire(RateLimitRequest(name, policy, tokens=600, stream=True))
    assert decision.reservation is not None
    assert decision.lease is not None
    assert not (await limiter.acquire(RateLimitRequest(name, policy, tokens=1, stream=True))).allowed  # slot taken
    calls: list[bytes] = []
    evalsha = limiter._hot.evalsha

    async def counted(script: LuaScript, keys: Sequence[str], args: Sequence[Arg]) -> Reply:
        calls.append(script.sha)
        return await evalsha(script, keys, args)

    limiter._hot.evalsha = counted  # type: ignore[method-assign]
    await limiter.finish(decision.reservation, 100, decision.lease)
    assert len(calls) == 1  # one round trip for both
    limiter._hot.evalsha = evalsha  # type: ignore[method-assign]
    assert await limiter.active_leases(name) == 0
    assert not await limiter.client.exists(limiter.keys(name).leases)
    # 600 reserved, 100 used: 500 refunded, so 900 fit again (and the stream slot is free).
    assert (await limiter.acquire(RateLimitRequest(name, policy, tokens=900, stream=True))).allowed


async def test_finish_with_nothing_to_settle_still_releases(limiter: RedisRateLimiter) -> None:
    name = subject()
    policy = LimitPolicy(max_concurrent_streams=1)
    decision = await limiter.acquire(RateLimitRequest(name, policy, tokens=0, stream=True))
    await limiter.finish(decision.reservation, None, decision.lease)
    assert await limiter.active_leases(name) == 0
