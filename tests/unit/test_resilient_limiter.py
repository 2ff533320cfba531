"""The failure-policy wrapper with fakes: whatever the shared limiter does, callers get a decision
(or, under `closed`, a 503 error), and a single probe brings enforcement back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.application.ratelimit import FailurePolicy, LimitPolicy, RateLimitDecision, RateLimitRequest
from app.application.ratelimit.types import Lease, Reservation, settle_then_release
from app.domain.errors import ServiceUnavailable
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.ratelimit.in_process import InProcessRateLimiter
from app.infrastructure.ratelimit.resilient import RedisHealth, ResilientRateLimiter


class FlakyPrimary:
    """A shared limiter that fails with `error` while `down` is set, and counts its calls."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.down = True
        self.calls = 0
        self.settled: list[int] = []

    async def acquire(self, request: RateLimitRequest) -> RateLimitDecision:
        self.calls += 1
        if self.down:
            raise self.error
        return RateLimitDecision(True, reservation=Reservation(request.subject, request.policy, 5, 0, "redis"))

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        if self.down:
            raise self.error
        self.settled.append(used_tokens)

    async def release(self, lease: Lease) -> None:
        raise self.error

    async def finish(self, reservation: Reservation | None, used_tokens: int | None, lease: Lease | None) -> None:
        await settle_then_release(self, reservation, used_tokens, lease)

    async def renew(self, lease: Lease) -> None:
        raise self.error


class FakeRedis:
    """Answers PING once `comes_back_after` pings have failed (and brings the primary back)."""

    def __init__(self, primary: FlakyPrimary, comes_back_after: int = 3) -> None:
        self.primary = primary
        self.comes_back_after = comes_back_after
        self.pings = 0

    async def ping(self, **_: Any) -> bool:
        self.pings += 1
        if self.pings <= self.comes_back_after:
            raise ConnectionRefusedError("down")
        self.primary.down = False
        return True


@pytest.fixture
async def health_and_primary() -> AsyncIterator[tuple[RedisHealth, FlakyPrimary, Metrics]]:
    primary = FlakyPrimary(ValueError("something nobody expected"))
    metrics = Metrics()
    redis = FakeRedis(primary)
    health = RedisHealth(redis, metrics, probe_interval_seconds=0.01, timeout_seconds=1)
    yield health, primary, metrics
    assert redis.pings <= redis.comes_back_after + 1  # probing stops once Redis answers
    await health.aclose()


def request() -> RateLimitRequest:
    return RateLimitRequest("key:a", LimitPolicy(requests_per_window=2, tokens_per_window=100), tokens=10)


def wrapper(
    health: RedisHealth, primary: FlakyPrimary, metrics: Metrics, policy: FailurePolicy
) -> ResilientRateLimiter:
    return ResilientRateLimiter(primary, InProcessRateLimiter(), health, policy=policy, metrics=metrics)


async def test_local_policy_enforces_per_process_and_asks_redis_only_once(
    health_and_primary: tuple[RedisHealth, FlakyPrimary, Metrics],
) -> None:
    health, primary, metrics = health_and_primary
    limiter = wrapper(health, primary, metrics, FailurePolicy.LOCAL)
    decisions = [await limiter.acquire(request()) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert all(d.degraded for d in decisions)
    assert primary.calls == 1  # degraded: later requests do not wait on Redis
    assert health.degraded
    assert metrics.registry.get_sample_value("agent_api_rate_limit_degraded") == 1
    assert (
        metrics.registry.get_sample_value("agent_api_rate_limit_fallbacks_total", {"limiter": "api", "policy": "local"})
        == 3
    )
    # a reservation made locally settles locally; one owed to Redis is dropped, not raised
    assert decisions[0].reservation is not None
    assert decisions[0].reservation.origin == "local"
    await limiter.settle(decisions[0].reservation, 0)
    await limiter.settle(Reservation("key:a", request().policy, 5, 0, "redis"), 0)
    await limiter.release(Lease("key:a", "x", 30, "redis"))


async def test_open_admits_and_closed_refuses_with_redis_unavailable(
    health_and_primary: tuple[RedisHealth, FlakyPrimary, Metrics],
) -> None:
    health, primary, metrics = health_and_primary
    opened = await wrapper(health, primary, metrics, FailurePolicy.OPEN).acquire(request())
    assert opened.allowed
    assert opened.degraded
    assert opened.requests is None
    with pytest.raises(ServiceUnavailable) as refused:
        await wrapper(health, primary, metrics, FailurePolicy.CLOSED).acquire(request())
    assert refused.value.code == "redis_unavailable"


async def test_one_probe_brings_enforcement_back(
    health_and_primary: tuple[RedisHealth, FlakyPrimary, Metrics],
) -> None:
    health, primary, metrics = health_and_primary
    limiter = wrapper(health, primary, metrics, FailurePolicy.LOCAL)
    assert (await limiter.acquire(request())).degraded
    for _ in range(1000):  # a few failed probes, then one that succeeds
        if not health.degraded:
            break
        await asyncio.sleep(0.01)
    decision = await limiter.acquire(request())
    assert not decision.degraded
    assert decision.reservation is not None
    await limiter.settle(decision.reservation, 3)
    assert primary.settled == [3]
    assert metrics.registry.get_sample_value("agent_api_rate_limit_degraded") == 0


class SlowPrimary(FlakyPrimary):
    """Answers after `delay` seconds; `bounds_calls` says whether its client bounds them itself."""

    def __init__(self, delay: float, bounds_calls: bool) -> None:
        super().__init__(ValueError("unused"))
        self.down = False
        self.delay = delay
        self.bounds_calls = bounds_calls

    async def acquire(self, request: RateLimitRequest) -> RateLimitDecision:
        await asyncio.sleep(self.delay)
        return await super().acquire(request)


@pytest.mark.parametrize(("bounds_calls", "decided_by_redis"), [(True, True), (False, False)])
async def test_a_primary_that_bounds_its_calls_gets_no_second_timer(bounds_calls: bool, decided_by_redis: bool) -> None:
    """The pipelined client's own deadline decides when a call is late (it lets a busy loop read
    a reply that arrived); the wrapper's timer must not fire first at the same instant."""
    metrics = Metrics()
    primary = SlowPrimary(delay=0.08, bounds_calls=bounds_calls)
    health = RedisHealth(FakeRedis(primary, comes_back_after=0), metrics, timeout_seconds=0.05)
    limiter = ResilientRateLimiter(primary, InProcessRateLimiter(), health, policy=FailurePolicy.LOCAL, metrics=metrics)
    try:
        decision = await limiter.acquire(request())
        assert decision.degraded is not decided_by_redis
        assert health.degraded is not decided_by_redis
    finally:
        await health.aclose()
