"""Redis stopped, paused (SIGSTOP) and restored under load: the failure policy holds, nothing
unexpected escapes, and shared enforcement is back within 5 s of Redis returning.

Each scenario runs with the scripts and the recovery probe on the pipelined hot-path client (as
production wires it) and on redis-py's pool."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from app.application.ratelimit import (
    AuthLimitDefaults,
    CallerLimitDefaults,
    FailurePolicy,
    LimitPolicy,
    RateLimitDecision,
    RateLimitRequest,
)
from app.domain.errors import ServiceUnavailable
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.ratelimit.in_process import InProcessRateLimiter
from app.infrastructure.ratelimit.redis_limiter import RedisRateLimiter
from app.infrastructure.ratelimit.resilient import RateLimiters, RateLimitProbe, RedisHealth, ResilientRateLimiter
from app.infrastructure.redis_pipeline import PipelinedRedis
from tests.support.services import RedisServer, spawn_redis

TIMEOUT = 0.2
LIMIT = 3
RECOVERY_BUDGET_SECONDS = 5.0


@dataclass
class Rig:
    limiter: ResilientRateLimiter
    health: RedisHealth
    metrics: Metrics

    def fallbacks(self) -> float:
        value = self.metrics.registry.get_sample_value(
            "agent_api_rate_limit_fallbacks_total", {"limiter": "api", "policy": self.limiter.policy.value}
        )
        return value or 0.0

    def degraded_gauge(self) -> float:
        return self.metrics.registry.get_sample_value("agent_api_rate_limit_degraded") or 0.0


@pytest.fixture(params=["pipelined", "redis-py"])
async def make_rig(
    own_redis: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[FailurePolicy], Rig]]:
    clients: list[Redis | PipelinedRedis] = []
    healths: list[RedisHealth] = []

    def make(policy: FailurePolicy) -> Rig:
        client = Redis.from_url(
            own_redis.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, max_connections=32
        )
        hot = PipelinedRedis.from_url(own_redis.url, timeout=TIMEOUT) if request.param == "pipelined" else None
        metrics = Metrics()
        health = RedisHealth(hot or client, metrics, probe_interval_seconds=0.25, timeout_seconds=TIMEOUT)
        primary = RedisRateLimiter(
            client, key_prefix=f"test-{uuid.uuid4().hex[:8]}:", lease_ttl_seconds=5, hot_path=hot
        )
        limiter = ResilientRateLimiter(
            primary, InProcessRateLimiter(lease_ttl_seconds=5), health, policy=policy, metrics=metrics
        )
        clients.extend([client] if hot is None else [client, hot])
        healths.append(health)
        return Rig(limiter, health, metrics)

    yield make
    for health in healths:
        await asyncio.wait_for(health.aclose(), 3)
    for client in clients:
        await asyncio.wait_for(client.aclose(), 3)


def request(stream: bool = False) -> RateLimitRequest:
    policy = LimitPolicy(requests_per_window=LIMIT, tokens_per_window=10_000, max_concurrent_streams=2)
    return RateLimitRequest(f"key:{uuid.uuid4()}", policy, tokens=10, stream=stream)


class Load:
    """Background traffic through the limiter, recording anything that is not an allowed answer."""

    def __init__(self, limiter: ResilientRateLimiter) -> None:
        self.limiter = limiter
        self.unexpected: list[BaseException] = []
        self.refusal_codes: set[str] = set()
        self.calls = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.calls += 1
            try:
                decision = await self.limiter.acquire(request(stream=True))
                if decision.lease is not None:
                    await self.limiter.release(decision.lease)
                if decision.reservation is not None:
                    await self.limiter.settle(decision.reservation, 5)
            except ServiceUnavailable as exc:
                self.refusal_codes.add(exc.code)
            except Exception as exc:
                self.unexpected.append(exc)
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> Load:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, 3)


async def burst(limiter: ResilientRateLimiter, req: RateLimitRequest, n: int = 10) -> list[RateLimitDecision | str]:
    """`n` concurrent acquires; a `closed` refusal is recorded as the string "503 <code>"."""

    async def one() -> RateLimitDecision | str:
        try:
            return await limiter.acquire(req)
        except ServiceUnavailable as exc:
            return f"503 {exc.code}"

    return list(await asyncio.gather(*(one() for _ in range(n))))


def assert_policy_followed(policy: FailurePolicy, results: list[RateLimitDecision | str]) -> None:
    if policy is FailurePolicy.CLOSED:
        assert results == ["503 redis_unavailable"] * len(results)
        return
    decisions = [r for r in results if isinstance(r, RateLimitDecision)]
    assert len(decisions) == len(results)
    assert all(d.degraded for d in decisions)
    admitted = sum(d.allowed for d in decisions)
    assert admitted == (len(results) if policy is FailurePolicy.OPEN else LIMIT)


async def assert_enforced_by_redis(limiter: ResilientRateLimiter) -> None:
    results = await burst(limiter, request(), n=LIMIT + 3)
    decisions = [r for r in results if isinstance(r, RateLimitDecision)]
    assert len(decisions) == len(results)
    assert not any(d.degraded for d in decisions)
    assert sum(d.allowed for d in decisions) == LIMIT


async def wait_for_recovery(rig: Rig) -> float:
    """Seconds until a concurrent burst is decided by Redis again, every request of it (fails the
    test beyond the budget). A burst, not one request: with redis-py, pooled connections opened
    before the outage fail once each when first used again, and each such failure is one fallback
    (the pipelined client has one connection, replaced as soon as it fails)."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_BUDGET_SECONDS:
        results = await burst(rig.limiter, request(), n=LIMIT + 3)
        if all(isinstance(r, RateLimitDecision) and not r.degraded for r in results):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    pytest.fail(f"enforcement not back within {RECOVERY_BUDGET_SECONDS}s of Redis returning")


@pytest.mark.parametrize("policy", list(FailurePolicy))
async def test_redis_stopped_then_restarted(
    policy: FailurePolicy, own_redis: RedisServer, make_rig: Callable[[FailurePolicy], Rig]
) -> None:
    rig = make_rig(policy)
    await assert_enforced_by_redis(rig.limiter)
    async with Load(rig.limiter) as load:
        own_redis.stop()
        assert_policy_followed(policy, await burst(rig.limiter, request()))
        assert rig.health.degraded
        assert rig.degraded_gauge() == 1
        assert rig.fallbacks() >= 10
        await asyncio.sleep(0.3)  # load keeps flowing while Redis is gone
        restarted = spawn_redis(port=own_redis.port)
        own_redis.process, own_redis.workdir = restarted.process, restarted.workdir
        assert await wait_for_recovery(rig) < RECOVERY_BUDGET_SECONDS
        await assert_enforced_by_redis(rig.limiter)
    assert load.unexpected == []
    assert load.refusal_codes <= {"redis_unavailable"}
    assert load.calls > 10
    assert rig.degraded_gauge() == 0


@pytest.mark.parametrize("policy", list(FailurePolicy))
async def test_redis_paused_then_resumed(
    policy: FailurePolicy, own_redis: RedisServer, make_rig: Callable[[FailurePolicy], Rig]
) -> None:
    rig = make_rig(policy)
    await assert_enforced_by_redis(rig.limiter)
    assert own_redis.process is not None
    async with Load(rig.limiter) as load:
        os.kill(own_redis.process.pid, signal.SIGSTOP)  # hung: connections open, no answers
        started = time.monotonic()
        assert_policy_followed(policy, await burst(rig.limiter, request()))
        assert time.monotonic() - started < 1.0  # a hung Redis costs a short timeout, not a hang
        assert rig.health.degraded
        await asyncio.sleep(0.3)
        os.kill(own_redis.process.pid, signal.SIGCONT)
        assert await wait_for_recovery(rig) < RECOVERY_BUDGET_SECONDS
        await assert_enforced_by_redis(rig.limiter)
    assert load.unexpected == []


async def test_an_exhausted_pool_falls_back_instead_of_failing(own_redis: RedisServer) -> None:
    client = Redis.from_url(own_redis.url, socket_timeout=TIMEOUT, max_connections=2)
    metrics = Metrics()
    health = RedisHealth(client, metrics, probe_interval_seconds=0.25, timeout_seconds=TIMEOUT)
    limiter = ResilientRateLimiter(
        RedisRateLimiter(client, key_prefix="test-pool:"),
        InProcessRateLimiter(),
        health,
        policy=FailurePolicy.LOCAL,
        metrics=metrics,
    )
    try:
        results = await burst(limiter, request(), n=40)
        decisions = [r for r in results if isinstance(r, RateLimitDecision)]
        assert len(decisions) == 40  # no exception escaped
        assert sum(d.allowed for d in decisions) <= 2 * LIMIT  # shared + local, never unlimited
        assert metrics.registry.get_sample_value(
            "agent_api_rate_limit_backend_errors_total", {"operation": "acquire", "error": "MaxConnectionsError"}
        )
    finally:
        await health.aclose()
        await client.aclose()


async def test_readiness_reports_the_degraded_state(
    own_redis: RedisServer, make_rig: Callable[[FailurePolicy], Rig]
) -> None:
    rig = make_rig(FailurePolicy.LOCAL)
    defaults = CallerLimitDefaults(60, 1000, 0, 2)
    limiters = RateLimiters(rig.limiter, rig.limiter, defaults, defaults, AuthLimitDefaults(10, 10), (), rig.health)
    probe = RateLimitProbe(limiters, FailurePolicy.LOCAL)
    assert await probe.check() == "ok"
    own_redis.stop()
    await rig.limiter.acquire(request())
    assert (await probe.check()).startswith("degraded: Redis unreachable")
