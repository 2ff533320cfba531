"""Admitting a request and ending it exactly once: what the HTTP layer and use cases call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Self

from app.application.ratelimit.headers import rate_limit_headers
from app.application.ratelimit.types import (
    INSUFFICIENT_QUOTA,
    LimitKind,
    RateLimitDecision,
    RateLimiter,
    RateLimitRequest,
)
from app.domain.errors import RateLimited

log = logging.getLogger(__name__)

_MESSAGES = {
    LimitKind.REQUESTS: "Rate limit reached for requests. Retry after the time in the Retry-After header.",
    LimitKind.TOKENS: "Rate limit reached for tokens. Retry after the time in the Retry-After header.",
    LimitKind.CONCURRENCY: "Too many concurrent streams for this caller. Retry when one has finished.",
    LimitKind.DAILY_TOKENS: "You exceeded your daily token budget. It renews at 00:00 UTC.",
}


class RateLimitRefused(RateLimited):
    """A 429 that carries its decision, so the response gets every ``x-ratelimit-*`` header."""

    def __init__(self, decision: RateLimitDecision) -> None:
        kind = decision.refused_by or LimitKind.REQUESTS
        super().__init__(
            _MESSAGES[kind],
            retry_after_seconds=decision.retry_after_seconds,
            code=decision.code,
            should_retry=decision.code != INSUFFICIENT_QUOTA,
        )
        self.decision = decision

    @property
    def headers(self) -> dict[str, str]:
        return rate_limit_headers(self.decision)


class Admission:
    """What an admitted request holds (a token reservation, maybe a stream lease) until it ends.

    Report usage with `add_usage` (streams: as chunks arrive) or by setting ``used_tokens``;
    `finish` settles the reservation with it and releases the lease, once, never raising.
    When no usage was reported the reservation stands as charged (nothing better is known);
    report 0 for an upstream failure that produced nothing, to refund it all.
    `keep_lease` renews the lease every third of its TTL until `finish` (streams longer than
    the TTL). Used as ``async with``, it keeps the lease while the block runs and finishes on
    every exit: success, error, cancellation (disconnect), timeout.
    """

    def __init__(self, limiter: RateLimiter, decision: RateLimitDecision) -> None:
        self.limiter = limiter
        self.decision = decision
        self.used_tokens: int | None = None
        self._finished = False
        # Renewal is a timer, not a task per stream: most streams end long before the first
        # renewal is due, and a timer costs a fraction of a task (docs/benchmarks.md).
        self._renewal: asyncio.TimerHandle | None = None
        self._renewing: asyncio.Task[None] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers for the response (send them on streams too)."""
        return rate_limit_headers(self.decision)

    @property
    def finished(self) -> bool:
        return self._finished

    def add_usage(self, tokens: int) -> None:
        self.used_tokens = (self.used_tokens or 0) + max(0, tokens)

    async def finish(self, used_tokens: int | None = None) -> None:
        """Settle with the real usage and release the lease. Idempotent; never raises."""
        if self._finished:
            return
        self._finished = True
        if used_tokens is not None:
            self.used_tokens = used_tokens
        self._stop_renewing()
        try:
            await self.limiter.finish(self.decision.reservation, self.used_tokens, self.decision.lease)
        except Exception:  # the limiter should not raise; a leak is worse than a lost refund
            log.warning("rate_limit_finish_failed", exc_info=True)

    def keep_lease(self) -> None:
        """Renew the stream lease (if any) every third of its TTL until `finish`."""
        lease = self.decision.lease
        if lease is None or self._finished or self._renewal is not None:
            return
        self._renewal = asyncio.get_running_loop().call_later(max(lease.ttl_seconds / 3, 0.05), self._renew_due)

    def _renew_due(self) -> None:
        self._renewal = None
        if not self._finished:
            self._renewing = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        lease = self.decision.lease
        if lease is not None:
            with contextlib.suppress(Exception):
                await self.limiter.renew(lease)
        self._renewing = None
        self.keep_lease()

    def _stop_renewing(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        if self._renewing is not None:
            self._renewing.cancel()
            self._renewing = None

    async def __aenter__(self) -> Self:
        self.keep_lease()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Shielded: a second cancellation (a client gone twice) must not skip the release.
        await asyncio.shield(self.finish())


async def admit(limiter: RateLimiter, request: RateLimitRequest) -> Admission:
    """Check and charge every limit of `request`; raise `RateLimitRefused` (429) when refused.

    A limiter whose store is down may raise ``ServiceUnavailable`` (policy ``closed``).
    """
    decision = await limiter.acquire(request)
    if not decision.allowed:
        raise RateLimitRefused(decision)
    return Admission(limiter, decision)
