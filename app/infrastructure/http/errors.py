"""The one place where failures become HTTP responses in the contract's error shape.

``{"error": {"message", "type", "param", "code"}}``, for domain errors, framework errors
(unknown route, wrong method, bad JSON, body too large, validation) and anything
unexpected (500 with no internals; the traceback goes to the log only).
"""

from __future__ import annotations

import math
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    SerializationException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from app.application.ratelimit import RateLimitRefused
from app.domain import errors as domain
from app.infrastructure.observability.logging import get_logger

log = get_logger(__name__)

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_error",
}

_CODE_BY_STATUS = {
    400: "invalid_value",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limit_exceeded",
    500: "internal_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_timeout",
}

_STATUS_BY_DOMAIN_ERROR: tuple[tuple[type[domain.DomainError], int], ...] = (
    (domain.UpstreamTimeout, 504),
    (domain.UpstreamError, 502),
    (domain.InvalidInput, 400),
    (domain.Unauthenticated, 401),
    (domain.Forbidden, 403),
    (domain.NotFound, 404),
    (domain.Conflict, 409),
    (domain.RateLimited, 429),
    (domain.ServiceUnavailable, 503),
)


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code if code is not None else _CODE_BY_STATUS.get(status),
        }
    }


def error_response(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    return Response(
        content=error_body(status, message, code=code, param=param),
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def status_for(exc: domain.DomainError) -> int:
    for cls, status in _STATUS_BY_DOMAIN_ERROR:
        if isinstance(exc, cls):
            return status
    return 400


# Where a handler leaves the x-ratelimit-* headers of an admitted request, so that an error it
# raises afterwards (a 401 from an auth endpoint, say) still carries them.
RATE_LIMIT_HEADERS_STATE = "rate_limit_headers"


def domain_error_response_parts(
    exc: domain.DomainError, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers of a domain error (``Retry-After`` and the rate-limit numbers
    where they apply), on top of `headers` (those of an admitted request)."""
    status = status_for(exc)
    headers = dict(headers or {})
    if isinstance(exc, RateLimitRefused):
        headers.update(exc.headers)  # the x-ratelimit-* numbers too, not only Retry-After
    elif isinstance(exc, domain.RateLimited):
        seconds = max(exc.retry_after_seconds, 0.0)
        headers["Retry-After"] = str(max(1, math.ceil(seconds)))
        headers["retry-after-ms"] = str(max(1, math.ceil(seconds * 1000)))
        if not exc.should_retry:
            headers["x-should-retry"] = "false"
    if status == 503:
        headers["Retry-After"] = "1"
    return status, error_body(status, exc.message, code=exc.code, param=exc.param), headers


def handle_domain_error(request: Request[Any, Any, Any], exc: domain.DomainError) -> Response[dict[str, Any]]:
    admitted = getattr(request.state, RATE_LIMIT_HEADERS_STATE, None)
    status, body, headers = domain_error_response_parts(exc, admitted if isinstance(admitted, dict) else None)
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers or None)


def validation_error_parts(details: Any, fallback: str) -> tuple[str | None, str, str]:
    """The first failing field, a readable message and a code out of a validation detail list
    (``[{"key": "messages.0.role", "message": "..."}]``, as Litestar reports them)."""
    if isinstance(details, list) and details:
        first = details[0]
        if isinstance(first, dict):
            key = first.get("key")
            message = str(first.get("message") or fallback)
            code = "missing_field" if "required" in message.lower() or "missing" in message.lower() else "invalid_value"
            param = str(key) if key else None
            return param, f"{param}: {message}" if param else message, code
    return None, fallback, "invalid_value"


def handle_http_exception(  # noqa: PLR0911 - one branch per framework error kind
    request: Request[Any, Any, Any], exc: HTTPException
) -> Response[dict[str, Any]]:
    status = exc.status_code
    if isinstance(exc, NotFoundException):
        message = exc.detail if exc.detail and exc.detail != "Not Found" else f"No such resource: {request.url.path}"
        return error_response(404, message, code="not_found")
    if isinstance(exc, MethodNotAllowedException):
        allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        return error_response(
            405,
            f"Method {request.method} is not allowed on {request.url.path}.",
            code="method_not_allowed",
            headers={"Allow": allow} if allow else None,
        )
    if status == 400 and _looks_like_bad_json(exc):
        return error_response(400, "The request body is not valid JSON.", code="invalid_json")
    if isinstance(exc, ValidationException):
        param, message, code = validation_error_parts(exc.extra, str(exc.detail))
        return error_response(400, message, code=code, param=param)
    if isinstance(exc, SerializationException):
        return error_response(400, "The request body is not valid JSON.", code="invalid_json")
    if status == 413:
        return error_response(413, "The request body is larger than the server accepts.", code="request_too_large")
    if status >= 500:
        log.error("http_error", status=status, detail=str(exc.detail))
        return error_response(status, "The server failed to handle the request.", code=_CODE_BY_STATUS.get(status))
    return error_response(status, str(exc.detail), headers=exc.headers or None)


def handle_undecodable_body(_: Request[Any, Any, Any], __: UnicodeDecodeError) -> Response[dict[str, Any]]:
    """A body that is not UTF-8 cannot be JSON: the client's fault, never a 500."""
    return error_response(400, "The request body is not valid UTF-8 JSON.", code="invalid_json")


def _looks_like_bad_json(exc: HTTPException) -> bool:
    detail = str(exc.detail).lower()
    return "json" in detail and ("decod" in detail or "malformed" in detail or "parse" in detail)


def make_unexpected_error_handler(on_error: Any = None) -> Any:
    def handle_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
        log.exception("unhandled_exception", exc_type=type(exc).__name__)
        if on_error is not None:
            on_error()
        return error_response(
            HTTP_500_INTERNAL_SERVER_ERROR,
            "The server failed to handle the request.",
            code="internal_error",
        )

    return handle_unexpected
