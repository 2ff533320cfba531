"""Ports of the identity use cases (passwords, tokens, key codec, revocation, caches, throttling).

Each has a production adapter in `app.infrastructure.security` and a fake in `tests/fakes.py`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.domain.identity import ApiKey, UserSnapshot


class PasswordHasher(Protocol):
    """argon2id in production; both methods run off the event loop."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password: str, password_hash: str | None) -> tuple[bool, str | None]:
        """(matches, a fresh hash when the stored one uses outdated parameters).

        With ``password_hash=None`` (unknown account) it verifies against a dummy hash, so an
        unknown email costs the same time as a wrong password, and answers False.
        """
        ...


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    token_id: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    expires_in: int


class AccessTokens(Protocol):
    def issue(self, user_id: uuid.UUID, session_id: uuid.UUID) -> IssuedAccessToken: ...

    def verify(self, token: str) -> AccessClaims:
        """The claims of a valid access token; raises `Unauthenticated` for anything else."""
        ...


class RefreshTokens(Protocol):
    """Opaque, random refresh tokens; only their hash is ever stored."""

    def new(self) -> str: ...

    def digest(self, token: str) -> str: ...


@dataclass(frozen=True, slots=True)
class NewApiKeySecret:
    key: str
    prefix: str
    key_hash: str


class ApiKeyCodec(Protocol):
    def generate(self) -> NewApiKeySecret: ...

    def parse_prefix(self, key: str) -> str:
        """The public prefix of a well-formed key; `Unauthenticated` (no lookup) when the format
        or the checksum is wrong."""
        ...

    def digest(self, key: str) -> str:
        """The keyed hash under the current pepper (what is stored and cached)."""
        ...

    def matches(self, key: str, stored_hash: str) -> tuple[bool, bool]:
        """(matches under some configured pepper, matched only under a previous pepper)."""
        ...


@dataclass(frozen=True, slots=True)
class RevocationState:
    session_revoked: bool = False
    api_key_revoked: bool = False
    user_disabled: bool = False
    user_version: int = 0
    api_key_version: int = 0


class RevocationUnavailable(Exception):
    """The shared revocation store cannot be reached; callers fall back to the database."""


class RevocationStore(Protocol):
    """Shared, fast revocation state, checked on every authenticated request (one round trip).

    Markers say "revoked / disabled" outright; versions change on any other edit (scopes,
    role) so that instances drop cached copies.
    """

    async def state(
        self, *, user_id: uuid.UUID, session_id: uuid.UUID | None = None, api_key_id: uuid.UUID | None = None
    ) -> RevocationState: ...

    async def revoke_sessions(self, session_ids: list[uuid.UUID]) -> None: ...

    async def revoke_api_key(self, key_id: uuid.UUID) -> None: ...

    async def api_key_changed(self, key_id: uuid.UUID) -> None: ...

    async def user_changed(self, user_id: uuid.UUID, *, disabled: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class CachedApiKey:
    key: ApiKey
    user: UserSnapshot
    key_version: int
    user_version: int


@dataclass(frozen=True, slots=True)
class CachedUser:
    user: UserSnapshot
    user_version: int


class IdentityCache(Protocol):
    """In-process, short-TTL cache of authenticated keys (by digest) and users (by id)."""

    def get_key(self, digest: str) -> CachedApiKey | None: ...

    def put_key(self, digest: str, entry: CachedApiKey) -> None: ...

    def get_user(self, user_id: uuid.UUID) -> CachedUser | None: ...

    def put_user(self, entry: CachedUser) -> None: ...


class LoginThrottle(Protocol):
    """Counts failed logins per client IP and per account in a sliding window."""

    async def retry_after(self, ip: str, account: str) -> float | None:
        """Seconds until another attempt is allowed, or None when it is allowed now."""
        ...

    async def record_failure(self, ip: str, account: str) -> None: ...

    async def reset_account(self, account: str) -> None: ...


class LastUsedRecorder(Protocol):
    """Records that a key was used, behind the request (never blocks, never raises)."""

    def record(self, key_id: uuid.UUID, at: datetime) -> None: ...
