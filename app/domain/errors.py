"""Domain errors.

Every error the domain and application layers raise is one of these. The HTTP layer maps
them to the public error shape in exactly one place (`app.infrastructure.http.errors`);
nothing below infrastructure knows about status codes.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of all expected, client-visible failures.

    `code` is the machine-readable reason (e.g. ``email_taken``); `param` names the
    offending input field when there is one.
    """

    default_code = "error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param


class InvalidInput(DomainError):
    """The request is well-formed but a value is unacceptable."""

    default_code = "invalid_value"


class Unauthenticated(DomainError):
    """No valid credential was presented."""

    default_code = "invalid_token"


class Forbidden(DomainError):
    """The caller is known but may not do this."""

    default_code = "insufficient_role"


class NotFound(DomainError):
    """The resource does not exist, or belongs to someone else."""

    default_code = "not_found"


class Conflict(DomainError):
    """The request conflicts with the current state of a resource."""

    default_code = "conflict"


class RateLimited(DomainError):
    """A rate limit or quota was exceeded."""

    default_code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float,
        code: str | None = None,
        should_retry: bool = True,
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after_seconds = retry_after_seconds
        self.should_retry = should_retry


class UpstreamError(DomainError):
    """The upstream model answered badly."""

    default_code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    """The upstream model did not answer in time."""

    default_code = "upstream_timeout"


class ServiceUnavailable(DomainError):
    """A dependency the request needs is down (``database_unavailable``, ``redis_unavailable``...)."""

    default_code = "service_unavailable"
