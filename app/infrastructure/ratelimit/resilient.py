"""The limiter the application uses: Redis when it answers, the failure policy when it does not.

Redis down, hung (every call is bounded by a short timeout) or its pool exhausted: the call
is answered by the configured policy (`open`, `local` = the in-process limiter, `closed` =
503 ``redis_unavailable``), the fallback is counted, and the shared `RedisHealth` turns
degraded. While degraded no request waits on Redis; one background probe pings it every
``probe_interval`` seconds and the first answer turns enforcement back on, so limits are
shared again within about a second of Redis returning (never a stampede of probes).
Nothing but the `closed` policy's ``ServiceUnavailable`` ever leaves these methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from app.application.ratelimit.client_ip import IPNetwork
from app.application.ratelimit.policy import AuthLimitDefaults, CallerLimitDefaults
from app.application.ratelimit.types import (
    FailurePolicy,
    Lease,
    RateLimitDecision,
    RateLimiter,
    RateLimitRequest,
    Reservation,
    settle_then_release,
)
from app.domain.errors import ServiceUnavailable
from app.infrastructure.observability.logging import get_logger
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.ratelimit import in_process
from app.infrastructure.ratelimit.in_process import InProcessRateLimiter

log = get_logger(__name__)
T = TypeVar("T")


def _reraise_if_cancelled(exc: Exception | None) -> None:
    """A cancellation (client gone) that arrived during a Redis call must not be lost.

    Seen in tests: a cancel delivered just as a redis-py call completed surfaced as a normal
    return or a redis error, and the task ran on. The task's pending cancel count still tells
    the truth, so it is checked after every call.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


class Pingable(Protocol):
    """What the health probe needs of a Redis client (redis-py's `Redis` is one)."""

    def ping(self, **kwargs: Any) -> Awaitable[Any]: ...


class RedisHealth:
    """Whether the limiters' Redis is usable; shared by every limiter of the process.

    Degraded from the first failed call until one background ``PING`` succeeds.
    """

    def __init__(
        self, client: Pingable, metrics: Metrics, *, probe_interval_seconds: float = 1.0, timeout_seconds: float = 0.25
    ) -> None:
        self._client = client
        self._metrics = metrics
        self.probe_interval_seconds = probe_interval_seconds
        self.timeout_seconds = timeout_seconds
        self.degraded_since: float | None = None
        self.last_error: str | None = None
        self._probe: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def degraded(self) -> bool:
        return self.degraded_since is not None

    def mark_failed(self, operation: str, exc: BaseException) -> None:
        self._metrics.rate_limit_backend_errors.labels(operation=operation, error=type(exc).__name__).inc()
        self.last_error = type(exc).__name__
        if self.degraded or self._closed:
            return
        self.degraded_since = time.monotonic()
        self._metrics.rate_limit_degraded.set(1)
        log.warning("rate_limit_redis_degraded", operation=operation, error=type(exc).__name__)
        self.ensure_probing()

    def ensure_probing(self) -> None:
        """Start the (single) recovery probe if degraded and none is running."""
        if self.degraded and not self._closed and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_back(), name="rate-limit-probe")

    async def _probe_until_back(self) -> None:
        while self.degraded and not self._closed:
            await asyncio.sleep(self.probe_interval_seconds)
            try:
                async with asyncio.timeout(self.timeout_seconds * 2):
                    await self._client.ping()
            except Exception as exc:  # noqa: BLE001 - still down, whatever the reason
                self.last_error = type(exc).__name__
                continue
            outage = time.monotonic() - (self.degraded_since or time.monotonic())
            self.degraded_since = None
            self._metrics.rate_limit_degraded.set(0)
            log.info("rate_limit_redis_recovered", outage_seconds=round(outage, 3))

    async def aclose(self) -> None:
        self._closed = True
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(BaseException):
                await self._probe
            self._probe = None


class ResilientRateLimiter:
    """`RateLimiter` over Redis (``primary``, a `RedisRateLimiter`) with a failure policy.

    See the module docstring.
    """

    def __init__(
        self,
        primary: RateLimiter,
        fallback: InProcessRateLimiter,
        health: RedisHealth,
        *,
        policy: FailurePolicy,
        metrics: Metrics,
        name: str = "api",
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.health = health
        self.policy = policy
        self.name = name
        self._metrics = metrics
        # A primary whose client bounds its own calls (the pipelined client, whose deadline also
        # lets a busy loop read a reply that has arrived) gets no second timer here: it would
        # race the first at the same instant, and costs a timer per call.
        self._timeout = None if getattr(primary, "bounds_calls", False) else health.timeout_seconds

    async def acquire(self, request: RateLimitRequest) -> RateLimitDecision:
        if not self.health.degraded:
            try:
                decision = await self._bounded(self.primary.acquire(request))
            except Exception as exc:  # noqa: BLE001 - any Redis failure means "apply the policy"
                _reraise_if_cancelled(exc)
                self.health.mark_failed("acquire", exc)
            else:
                _reraise_if_cancelled(None)
                self._count(decision)
                return decision
        return self._without_redis(request)

    async def _bounded(self, call: Awaitable[T]) -> T:
        """`call` within the Redis timeout, unless the primary's client bounds its calls itself."""
        if self._timeout is None:
            return await call
        async with asyncio.timeout(self._timeout):
            return await call

    def _without_redis(self, request: RateLimitRequest) -> RateLimitDecision:
        self.health.ensure_probing()  # cheap; restarts a probe that died for any reason
        self._metrics.rate_limit_fallbacks.labels(limiter=self.name, policy=self.policy.value).inc()
        if self.policy is FailurePolicy.CLOSED:
            raise ServiceUnavailable(
                "Rate limiting is unavailable (Redis is not answering); retry shortly.", code="redis_unavailable"
            )
        if self.policy is FailurePolicy.OPEN:
            return RateLimitDecision(True, degraded=True)
        try:
            decision = self.fallback.acquire_now(request)
        except Exception:  # the in-process limiter should not fail; if it does, do not turn it into a 500
            log.exception("rate_limit_local_fallback_failed")
            return RateLimitDecision(True, degraded=True)
        self._count(decision)
        return dataclasses.replace(decision, degraded=True)

    def _count(self, decision: RateLimitDecision) -> None:
        if not decision.allowed and decision.refused_by is not None:
            self._metrics.rate_limit_rejections.labels(limiter=self.name, limit=decision.refused_by.value).inc()

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        if reservation.origin == in_process.ORIGIN:
            await self.fallback.settle(reservation, used_tokens)
            return
        await self._on_redis("settle", self.primary.settle(reservation, used_tokens))

    async def release(self, lease: Lease) -> None:
        if lease.origin == in_process.ORIGIN:
            await self.fallback.release(lease)
            return
        # A lease that cannot be released now expires by its TTL.
        await self._on_redis("release", self.primary.release(lease))

    async def finish(self, reservation: Reservation | None, used_tokens: int | None, lease: Lease | None) -> None:
        origins = {held.origin for held in (reservation, lease) if held is not None}
        if origins == {in_process.ORIGIN}:
            await self.fallback.finish(reservation, used_tokens, lease)
        elif in_process.ORIGIN in origins:  # never made by one decision; still handled
            await settle_then_release(self, reservation, used_tokens, lease)
        elif origins:
            await self._on_redis("finish", self.primary.finish(reservation, used_tokens, lease))

    async def renew(self, lease: Lease) -> None:
        if lease.origin == in_process.ORIGIN:
            await self.fallback.renew(lease)
            return
        await self._on_redis("renew", self.primary.renew(lease))

    async def _on_redis(self, operation: str, call: Coroutine[Any, Any, None]) -> None:
        if self.health.degraded:
            # Do not wait on a Redis known to be down; the refund is lost, the lease expires.
            call.close()
            self._metrics.rate_limit_backend_errors.labels(operation=operation, error="skipped_degraded").inc()
            return
        try:
            await self._bounded(call)
        except Exception as exc:  # noqa: BLE001 - never fail the request's ending
            _reraise_if_cancelled(exc)
            self.health.mark_failed(operation, exc)
        else:
            _reraise_if_cancelled(None)


@dataclass
class RateLimiters:
    """The limiters and limit defaults of one application instance (built in bootstrap).

    ``api`` serves `/v1` traffic (policy ``RATE_LIMIT_API_FAILURE_POLICY``), ``auth`` the auth
    endpoints (``RATE_LIMIT_AUTH_FAILURE_POLICY``). ``health`` is None without Redis.
    """

    api: RateLimiter
    auth: RateLimiter
    api_keys: CallerLimitDefaults
    users: CallerLimitDefaults
    auth_defaults: AuthLimitDefaults
    # Parsed RATE_LIMIT_TRUSTED_PROXIES, for `client_ip`.
    trusted_proxies: tuple[IPNetwork, ...]
    health: RedisHealth | None = None

    async def aclose(self) -> None:
        if self.health is not None:
            await self.health.aclose()


class RateLimitProbe:
    """Readiness line for the limits: ``ok``, ``in-process`` or ``degraded (...)``; never fails readiness."""

    name = "rate_limits"
    required = False

    def __init__(self, limiters: RateLimiters, api_policy: FailurePolicy) -> None:
        self._limiters = limiters
        self._api_policy = api_policy

    async def check(self) -> str:
        health = self._limiters.health
        if health is None:
            return "in-process (no REDIS_URL; limits are per process)"
        if health.degraded:
            return f"degraded: Redis unreachable ({health.last_error}), policy {self._api_policy.value}"
        return "ok"
