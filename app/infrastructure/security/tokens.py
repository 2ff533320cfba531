"""JWT access tokens (PyJWT, HS256 pinned, rotating signing keys by `kid`) and opaque refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from app.application.identity.ports import AccessClaims, IssuedAccessToken
from app.domain.errors import Unauthenticated

ALGORITHM = "HS256"
ACCESS_TYPE = "access"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "nbf", "jti", "sid", "typ")


def key_id(secret: str) -> str:
    """A public identifier of a signing secret (a truncated hash: reveals nothing usable)."""
    return hashlib.sha256(b"agent-api-jwt-kid:" + secret.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class VerificationKey:
    secret: str
    # Unix time after which this key no longer verifies (None: the current key).
    retires_at: float | None = None


class JwtAccessTokens:
    """Short-lived access tokens.

    The algorithm is pinned (HS256: a token saying `none` or anything else is refused before
    its signature is looked at), every claim is required, leeway is small. The header's
    `kid` picks the verification key: the current secret, or a previous one until its
    overlap ends; an unknown `kid` is an ordinary 401. Only the current secret signs.
    """

    def __init__(
        self,
        *,
        secret: str,
        previous_secrets: Sequence[str],
        previous_retire_at: float,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        leeway_seconds: int,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._kid = key_id(secret)
        self._secret = secret
        self._keys = {self._kid: VerificationKey(secret)}
        for old in previous_secrets:
            self._keys.setdefault(key_id(old), VerificationKey(old, previous_retire_at))
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds
        self._leeway = leeway_seconds
        self._now = now

    def issue(self, user_id: uuid.UUID, session_id: uuid.UUID) -> IssuedAccessToken:
        now = int(self._now())
        payload = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "iat": now,
            "nbf": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
            "sid": str(session_id),
            "typ": ACCESS_TYPE,
        }
        token = jwt.encode(payload, self._secret, algorithm=ALGORITHM, headers={"kid": self._kid, "typ": "JWT"})
        return IssuedAccessToken(token=token, expires_in=self._ttl)

    def verify(self, token: str) -> AccessClaims:
        invalid = Unauthenticated("The access token is not valid.", code="invalid_token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise invalid from exc
        if header.get("alg") != ALGORITHM:
            raise invalid
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise invalid
        if key.retires_at is not None and self._now() > key.retires_at:
            raise Unauthenticated("The access token was signed with a retired key.", code="invalid_token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("The access token has expired.", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise invalid from exc
        if claims.get("typ") != ACCESS_TYPE:
            raise invalid
        try:
            return AccessClaims(
                user_id=uuid.UUID(str(claims["sub"])),
                session_id=uuid.UUID(str(claims["sid"])),
                token_id=str(claims["jti"]),
                expires_at=int(claims["exp"]),
            )
        except (ValueError, TypeError) as exc:
            raise invalid from exc


class OpaqueRefreshTokens:
    """Refresh tokens: 256 random bits, recognisable by an `rt_` prefix; stored as SHA-256.

    A plain hash suffices here (unlike passwords): the input has 256 bits of entropy.
    """

    def new(self) -> str:
        return "rt_" + secrets.token_urlsafe(32)

    def digest(self, token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
