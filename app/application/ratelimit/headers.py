"""The contract's rate-limit headers, computed from a decision (pure)."""

from __future__ import annotations

import math

from app.application.ratelimit.types import LimitState, RateLimitDecision

# Every x-ratelimit-* header name (CORS must expose them for browser clients).
RATE_LIMIT_HEADER_NAMES = tuple(
    f"x-ratelimit-{what}-{kind}" for kind in ("requests", "tokens") for what in ("limit", "remaining", "reset")
)


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI writes ``x-ratelimit-reset-*``: ``20ms``, ``1.5s``, ``6m0s``, ``1h2m5s``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    whole_ms = math.ceil(seconds * 1000)
    hours, rest_ms = divmod(whole_ms, 3_600_000)
    minutes, rest_ms = divmod(rest_ms, 60_000)
    secs = f"{rest_ms / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _trio(kind: str, state: LimitState) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(state.limit),
        f"x-ratelimit-remaining-{kind}": str(max(0, state.remaining)),
        f"x-ratelimit-reset-{kind}": format_reset(state.reset_seconds),
    }


def rate_limit_headers(decision: RateLimitDecision) -> dict[str, str]:
    """Headers for any response the decision applies to (admitted, refused, or a stream).

    Always the ``-requests`` trio and the ``-tokens`` trio where those limits apply; on a
    refusal also ``Retry-After`` (whole seconds, at least 1), ``retry-after-ms`` and, for an
    exhausted daily budget, ``x-should-retry: false``.
    """
    headers: dict[str, str] = {}
    if decision.requests is not None:
        headers.update(_trio("requests", decision.requests))
    if decision.tokens is not None:
        headers.update(_trio("tokens", decision.tokens))
    if not decision.allowed:
        seconds = max(0.0, decision.retry_after_seconds)
        headers["Retry-After"] = str(max(1, math.ceil(seconds)))
        headers["retry-after-ms"] = str(max(1, math.ceil(seconds * 1000)))
        if not decision.should_retry:
            headers["x-should-retry"] = "false"
    return headers
