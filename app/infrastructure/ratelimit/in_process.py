"""The in-process limiter: the embedded default (no REDIS_URL) and the `local` fallback.

Same algorithm and semantics as the Redis script (GCRA for requests and tokens, a UTC-day
counter for the budget, expiring leases for streams), held in this process's memory. Each
call runs without awaiting, so it is atomic within the event loop; it is NOT shared between
processes: with N workers each enforces the limits on its own (N times the limit overall).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from app.application.ratelimit import gcra
from app.application.ratelimit.types import (
    DAY_SECONDS,
    INSUFFICIENT_QUOTA,
    RATE_LIMIT_EXCEEDED,
    Lease,
    LimitKind,
    LimitState,
    RateLimitDecision,
    RateLimitRequest,
    Reservation,
    settle_then_release,
)

ORIGIN = "local"
# Seconds suggested to a caller refused for concurrency (a stream slot has no schedule).
CONCURRENCY_RETRY_SECONDS = 1.0


@dataclass
class _SubjectState:
    requests_tat: Fraction = Fraction(0)  # µs
    tokens_tat: Fraction = Fraction(0)
    day: int = -1
    day_used: int = 0
    leases: dict[str, float] = field(default_factory=dict)  # lease id -> expiry time

    def idle(self, now: float) -> bool:
        now_us = gcra.micros(now)
        return (
            self.requests_tat <= now_us
            and self.tokens_tat <= now_us
            and not self.leases
            and self.day != math.floor(now / DAY_SECONDS)
        )


class InProcessRateLimiter:
    """`RateLimiter` in this process's memory; ``clock`` returns Unix seconds (injectable for tests).

    Idle subjects are swept every ``sweep_every`` calls so memory follows the active set.
    """

    def __init__(
        self,
        *,
        lease_ttl_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
        sweep_every: int = 1000,
    ) -> None:
        self.lease_ttl_seconds = lease_ttl_seconds
        self._clock = clock
        self._subjects: dict[str, _SubjectState] = {}
        self._sweep_every = sweep_every
        self._calls = 0

    def __len__(self) -> int:
        return len(self._subjects)

    def active_leases(self, subject: str) -> int:
        state = self._subjects.get(subject)
        if state is None:
            return 0
        now = self._clock()
        return sum(1 for expiry in state.leases.values() if expiry > now)

    def _state(self, subject: str, now: float) -> _SubjectState:
        self._calls += 1
        if self._calls % self._sweep_every == 0:
            self._sweep(now)
        state = self._subjects.get(subject)
        if state is None:
            state = self._subjects[subject] = _SubjectState()
        return state

    def _sweep(self, now: float) -> None:
        for subject, state in list(self._subjects.items()):
            state.leases = {lid: exp for lid, exp in state.leases.items() if exp > now}
            if state.idle(now):
                del self._subjects[subject]

    async def acquire(self, request: RateLimitRequest) -> RateLimitDecision:
        return self.acquire_now(request)

    def acquire_now(self, request: RateLimitRequest) -> RateLimitDecision:  # noqa: PLR0912 - one branch per limit
        """The synchronous decision (the async `acquire` wraps it)."""
        now = self._clock()
        policy = request.policy
        now_us, window = gcra.micros(now), gcra.micros(policy.window_seconds)
        state = self._state(request.subject, now)
        today = math.floor(now / DAY_SECONDS)
        if state.day != today:
            state.day, state.day_used = today, 0
        state.leases = {lid: exp for lid, exp in state.leases.items() if exp > now}

        refusals: list[tuple[LimitKind, float]] = []
        requests_outcome = tokens_outcome = None
        if policy.rpm:
            requests_outcome = gcra.check(state.requests_tat, now_us, policy.rpm, window, 1)
            if not requests_outcome.allowed:
                refusals.append((LimitKind.REQUESTS, requests_outcome.retry_after))
        if policy.tpm:
            tokens_outcome = gcra.check(state.tokens_tat, now_us, policy.tpm, window, request.tokens)
            if not tokens_outcome.allowed:
                refusals.append((LimitKind.TOKENS, tokens_outcome.retry_after))
        if policy.daily and request.tokens > 0 and state.day_used + request.tokens > policy.daily:
            refusals.append((LimitKind.DAILY_TOKENS, (today + 1) * DAY_SECONDS - now))
        if request.stream and policy.streams and len(state.leases) >= policy.streams:
            refusals.append((LimitKind.CONCURRENCY, CONCURRENCY_RETRY_SECONDS))

        allowed = not refusals
        lease: Lease | None = None
        reservation: Reservation | None = None
        if allowed:
            if requests_outcome is not None:
                state.requests_tat = requests_outcome.tat
            if tokens_outcome is not None:
                state.tokens_tat = tokens_outcome.tat
            state.day_used += request.tokens
            if request.tokens > 0:
                reservation = Reservation(request.subject, policy, request.tokens, today, ORIGIN)
            if request.stream and policy.streams:
                lease_id = os.urandom(16).hex()
                state.leases[lease_id] = now + self.lease_ttl_seconds
                lease = Lease(request.subject, lease_id, self.lease_ttl_seconds, ORIGIN)
        requests = _state(policy.rpm, requests_outcome)
        tokens = _state(policy.tpm, tokens_outcome)
        if not allowed:
            return refusal(refusals, requests, tokens)
        return RateLimitDecision(True, requests=requests, tokens=tokens, reservation=reservation, lease=lease)

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        now = self._clock()
        state = self._subjects.get(reservation.subject)
        if state is None:
            return
        policy = reservation.policy
        used = max(0, used_tokens)
        if policy.tpm:
            delta = used - gcra.charged(reservation.tokens, policy.tpm)
            window = gcra.micros(policy.window_seconds)
            state.tokens_tat = gcra.adjust(state.tokens_tat, gcra.micros(now), policy.tpm, window, delta)
        if state.day == reservation.day:
            state.day_used = max(0, state.day_used + used - reservation.tokens)

    async def release(self, lease: Lease) -> None:
        state = self._subjects.get(lease.subject)
        if state is not None:
            state.leases.pop(lease.lease_id, None)

    async def finish(self, reservation: Reservation | None, used_tokens: int | None, lease: Lease | None) -> None:
        await settle_then_release(self, reservation, used_tokens, lease)

    async def renew(self, lease: Lease) -> None:
        state = self._subjects.get(lease.subject)
        if state is not None and lease.lease_id in state.leases:
            state.leases[lease.lease_id] = self._clock() + lease.ttl_seconds


def _state(limit: int, outcome: gcra.GcraOutcome | None) -> LimitState | None:
    return LimitState(limit, outcome.remaining, outcome.reset) if outcome is not None else None


# The limit reported when several refuse: the budget first (retrying soon cannot help).
_PRIORITY = (LimitKind.DAILY_TOKENS, LimitKind.REQUESTS, LimitKind.TOKENS, LimitKind.CONCURRENCY)


def refusal(
    refusals: list[tuple[LimitKind, float]], requests: LimitState | None, tokens: LimitState | None
) -> RateLimitDecision:
    """A refused decision: the most telling limit, and a wait after which all of them pass."""
    kinds = {kind for kind, _ in refusals}
    refused_by = next(kind for kind in _PRIORITY if kind in kinds)
    return RateLimitDecision(
        False,
        refused_by=refused_by,
        code=INSUFFICIENT_QUOTA if refused_by is LimitKind.DAILY_TOKENS else RATE_LIMIT_EXCEEDED,
        retry_after_seconds=max(seconds for _, seconds in refusals),
        requests=requests,
        tokens=tokens,
    )
