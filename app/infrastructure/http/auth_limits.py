"""Rate limits of the auth endpoints (register, login, refresh): per client IP and per account.

Checked before anything is verified (no argon2 work, no database query for a refused call),
with the auth limiter (`container.rate_limits.auth`, failure policy ``closed`` by default:
503 ``redis_unavailable`` while Redis is down). The client IP honours ``X-Forwarded-For``
only from ``RATE_LIMIT_TRUSTED_PROXIES``. This sits beside identity's login-failure throttle,
which counts failed logins over 15 minutes; see docs/rate-limits.md.
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from app.application.ratelimit import (
    RateLimitRequest,
    account_subject,
    admit,
    auth_policies,
    client_ip,
    ip_subject,
)
from app.infrastructure.http.errors import RATE_LIMIT_HEADERS_STATE
from app.infrastructure.ratelimit.resilient import RateLimiters

REMAINING = "x-ratelimit-remaining-requests"


def request_client_ip(request: Request[Any, Any, Any], limits: RateLimiters) -> str:
    """The caller's address: the peer, or the X-Forwarded-For client when the peer is a trusted proxy."""
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.getall("x-forwarded-for", []), limits.trusted_proxies)


async def limit_auth_request(
    request: Request[Any, Any, Any], limits: RateLimiters, *, email: str | None = None
) -> dict[str, str]:
    """Admit one auth request per client IP (and per account when `email` is given).

    Raises `RateLimitRefused` (429 with every header) or ``ServiceUnavailable`` (policy
    ``closed``, Redis down). Returns the ``x-ratelimit-*`` headers of the tighter limit.
    """
    per_ip, per_account = auth_policies(limits.auth_defaults)
    admission = await admit(limits.auth, RateLimitRequest(ip_subject(request_client_ip(request, limits)), per_ip))
    headers = admission.headers
    if email is not None:
        account = (await admit(limits.auth, RateLimitRequest(account_subject(email), per_account))).headers
        if REMAINING not in headers or (REMAINING in account and int(account[REMAINING]) < int(headers[REMAINING])):
            headers = account
    setattr(request.state, RATE_LIMIT_HEADERS_STATE, headers)  # on the 401/403/409 that may follow too
    return headers
