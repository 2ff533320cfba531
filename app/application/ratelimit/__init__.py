"""Rate limits, token quotas and stream concurrency: the port, its types and pure helpers.

The HTTP layer and the use cases depend on this package only; the Redis and in-process
adapters live in `app.infrastructure.ratelimit`. See docs/rate-limits.md.
"""

from app.application.ratelimit.admission import Admission, RateLimitRefused, admit
from app.application.ratelimit.client_ip import client_ip, parse_trusted_proxies
from app.application.ratelimit.headers import format_reset, rate_limit_headers
from app.application.ratelimit.policy import (
    AuthLimitDefaults,
    CallerLimitDefaults,
    account_subject,
    auth_policies,
    ip_subject,
    policy_for_principal,
)
from app.application.ratelimit.types import (
    INSUFFICIENT_QUOTA,
    RATE_LIMIT_EXCEEDED,
    FailurePolicy,
    Lease,
    LimitKind,
    LimitPolicy,
    LimitState,
    RateLimitDecision,
    RateLimiter,
    RateLimitRequest,
    Reservation,
)

__all__ = [
    "INSUFFICIENT_QUOTA",
    "RATE_LIMIT_EXCEEDED",
    "Admission",
    "AuthLimitDefaults",
    "CallerLimitDefaults",
    "FailurePolicy",
    "Lease",
    "LimitKind",
    "LimitPolicy",
    "LimitState",
    "RateLimitDecision",
    "RateLimitRefused",
    "RateLimitRequest",
    "RateLimiter",
    "Reservation",
    "account_subject",
    "admit",
    "auth_policies",
    "client_ip",
    "format_reset",
    "ip_subject",
    "parse_trusted_proxies",
    "policy_for_principal",
    "rate_limit_headers",
]
