"""The one authentication middleware (JWT access tokens and API keys) and the role guards."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from app.application.identity.auth import Authenticator
from app.domain.errors import Forbidden, Unauthenticated
from app.domain.principal import Principal

# Paths served without a credential. Anchored regular expressions, matched against the path.
PUBLIC_PATHS = (
    r"^/$",
    r"^/health$",
    r"^/ready$",
    r"^/metrics$",
    r"^/docs(/.*)?$",
    r"^/openapi\.json$",
    r"^/v1/auth/(register|login|refresh)$",
    r"^/console(/.*)?$",
    r"^/static(/.*)?$",
)
API_KEY_HEADER = "x-api-key"
API_KEY_MARK = "sk-"
# Any sane credential is far shorter; a huge header is refused before any parsing.
MAX_CREDENTIAL_LENGTH = 4096


def credential_from(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """`Authorization: Bearer <credential>`, else `X-API-Key`, else (WebSocket only) `?token=`."""
    credential = credential_from_headers(
        connection.headers.get("authorization"), connection.headers.get(API_KEY_HEADER)
    )
    if credential is None and connection.scope["type"] == ScopeType.WEBSOCKET:
        token = connection.query_params.get("token")
        if token:
            return str(token)
    return credential


def credential_from_headers(authorization: str | None, api_key: str | None) -> str | None:
    """The credential of `Authorization: Bearer <credential>`, else of `X-API-Key`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthenticated("Use 'Authorization: Bearer <token or API key>'.", code="invalid_token")
        return value.strip()
    if api_key:
        return api_key.strip()
    return None


async def authenticate_credential(authenticator: Authenticator, credential: str | None) -> Principal:
    """The caller behind a credential (API key or JWT access token); 401 for none or a bad one."""
    if credential is None:
        raise Unauthenticated(
            "Authentication required: send 'Authorization: Bearer <token or API key>' or 'X-API-Key'.",
            code="invalid_api_key",
        )
    if len(credential) > MAX_CREDENTIAL_LENGTH:
        raise Unauthenticated("The credential is not valid.", code="invalid_token")
    if credential.startswith(API_KEY_MARK):
        return await authenticator.api_key(credential)
    return await authenticator.access_token(credential)


class CredentialAuthenticationMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the caller into a `Principal` on `request.user` (`request.auth` says which kind).

    Litestar runs middleware after routing, so an unknown path is a 404 whatever the
    credential; a known protected path without a valid credential is a 401 in the contract's
    shape (raised as a domain error, mapped in `http/errors.py`).
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator, exclude: list[str] | None = None) -> None:
        super().__init__(app, exclude=exclude or list(PUBLIC_PATHS))
        self._authenticator = authenticator

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        principal = await authenticate_credential(self._authenticator, credential_from(connection))
        return AuthenticationResult(user=principal, auth=principal.credential.value)


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise Unauthenticated("Authentication required.", code="invalid_token")
    return user


def requires_admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: admin role only (an API key is an admin's only if its user is an admin)."""
    if not principal_of(connection).is_admin:
        raise Forbidden("This action requires the admin role.", code="insufficient_role")
