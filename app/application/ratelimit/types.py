"""The rate-limiter port and the plain values it speaks in."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
INSUFFICIENT_QUOTA = "insufficient_quota"
# Limits are "per minute" in the contract; tests may shrink the window to keep waits short.
DEFAULT_WINDOW_SECONDS = 60.0
DAY_SECONDS = 86_400


class LimitKind(enum.StrEnum):
    """Which limit refused a request."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    DAILY_TOKENS = "daily_tokens"
    CONCURRENCY = "concurrency"


class FailurePolicy(enum.StrEnum):
    """What a limiter does when its shared store (Redis) cannot answer.

    ``open`` admits everything (no limits), ``local`` enforces the same limits per process,
    ``closed`` refuses with 503 ``redis_unavailable``.
    """

    OPEN = "open"
    LOCAL = "local"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """The limits that apply to one subject. ``None`` (or 0) means "no such limit".

    ``requests_per_window`` and ``tokens_per_window`` are per ``window_seconds`` (60 in
    production: requests and tokens per minute). The daily budget is per UTC day.
    """

    requests_per_window: int | None = None
    tokens_per_window: int | None = None
    daily_token_budget: int | None = None
    max_concurrent_streams: int | None = None
    window_seconds: float = DEFAULT_WINDOW_SECONDS

    def __post_init__(self) -> None:
        if self.window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        for name in ("requests_per_window", "tokens_per_window", "daily_token_budget", "max_concurrent_streams"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def rpm(self) -> int:
        """Requests per window; 0 = unlimited."""
        return self.requests_per_window or 0

    @property
    def tpm(self) -> int:
        """Tokens per window; 0 = unlimited."""
        return self.tokens_per_window or 0

    @property
    def daily(self) -> int:
        """Daily token budget; 0 = unlimited."""
        return self.daily_token_budget or 0

    @property
    def streams(self) -> int:
        """Concurrent streams; 0 = unlimited."""
        return self.max_concurrent_streams or 0


@dataclass(frozen=True, slots=True)
class RateLimitRequest:
    """One request to admit: who (``subject``), under which limits, for how many tokens.

    ``subject`` names the limited party: ``key:<uuid>``, ``user:<uuid>``, ``ip:<addr>`` or
    ``account:<hash>``. ``tokens`` is the estimate to reserve (prompt estimate plus
    ``max_tokens`` or the model cap). ``stream`` asks for a concurrency lease.
    """

    subject: str
    policy: LimitPolicy
    tokens: int = 0
    stream: bool = False

    def __post_init__(self) -> None:
        if not self.subject or len(self.subject) > 200:
            raise ValueError("subject must be 1..200 characters")
        if self.tokens < 0:
            raise ValueError("tokens must not be negative")


@dataclass(frozen=True, slots=True)
class LimitState:
    """Numbers for the ``x-ratelimit-{limit,remaining,reset}-*`` headers of one limit."""

    limit: int
    remaining: int
    reset_seconds: float


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens charged at admission, to be settled with the real usage.

    ``day`` is the UTC day number (days since the epoch, by the limiter's clock) the daily
    budget was charged on; ``origin`` names the backend that holds the charge.
    """

    subject: str
    policy: LimitPolicy
    tokens: int
    day: int
    origin: str


@dataclass(frozen=True, slots=True)
class Lease:
    """A concurrent-stream slot. Expires by itself after ``ttl_seconds`` unless renewed."""

    subject: str
    lease_id: str
    ttl_seconds: float
    origin: str


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The answer for one request.

    When refused, ``refused_by`` names the limit, ``code`` is ``rate_limit_exceeded`` or
    ``insufficient_quota`` and ``retry_after_seconds`` says when a retry may pass (for the
    daily budget: the next UTC midnight). ``requests``/``tokens`` carry the header numbers
    when such a limit applies. ``degraded`` is true when the shared store did not decide
    (the failure policy did).
    """

    allowed: bool
    refused_by: LimitKind | None = None
    code: str | None = None
    retry_after_seconds: float = 0.0
    requests: LimitState | None = None
    tokens: LimitState | None = None
    reservation: Reservation | None = None
    lease: Lease | None = None
    degraded: bool = False

    @property
    def should_retry(self) -> bool:
        return self.code != INSUFFICIENT_QUOTA


class RateLimiter(Protocol):
    """Checks and records every limit of a request at once, and settles afterwards.

    Implementations must be atomic across all processes sharing them: two concurrent
    ``acquire`` calls never both take the last unit of a limit.
    """

    async def acquire(self, request: RateLimitRequest) -> RateLimitDecision:
        """Admit or refuse; when admitted, charge the request, the tokens and the lease."""
        ...

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Replace the reserved tokens by ``used_tokens`` (refund or extra charge)."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give the stream slot back (idempotent)."""
        ...

    async def finish(self, reservation: Reservation | None, used_tokens: int | None, lease: Lease | None) -> None:
        """``settle`` (when both a reservation and the usage are known) and ``release`` (when
        there is a lease), as one operation: one round trip for a shared store."""
        ...

    async def renew(self, lease: Lease) -> None:
        """Push the lease's expiry ``ttl_seconds`` into the future (long streams)."""
        ...


async def settle_then_release(
    limiter: RateLimiter, reservation: Reservation | None, used_tokens: int | None, lease: Lease | None
) -> None:
    """`RateLimiter.finish` for a limiter with no cheaper way than its two calls."""
    if reservation is not None and used_tokens is not None:
        await limiter.settle(reservation, used_tokens)
    if lease is not None:
        await limiter.release(lease)
