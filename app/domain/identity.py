"""Identity: login sessions, their rotating refresh tokens, and scoped API keys.

A *session* is one login. Every refresh token descends from it (the "family"); revoking
the session kills its refresh tokens and, through the revocation check, its access tokens.
A refresh token is single-use: using it marks it used and issues its successor.
An *API key* authenticates as its user, narrowed by its scopes and limits.
Secrets are never held here: only their hashes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.domain.principal import CredentialKind, Limits, Principal
from app.domain.users import Role, User


@dataclass(slots=True)
class Session:
    id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    revoked_reason: str | None = None

    def is_usable(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(slots=True)
class RefreshToken:
    id: uuid.UUID
    session_id: uuid.UUID
    token_hash: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


@dataclass(slots=True)
class ApiKey:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    key_hash: str
    created_at: datetime
    updated_at: datetime
    allowed_models: tuple[str, ...] | None = None
    allowed_tools: tuple[str, ...] | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    daily_token_budget: int | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def refusal(self, now: datetime) -> str | None:
        """Why this key may not authenticate now (None when it may)."""
        if self.revoked_at is not None:
            return "The API key has been revoked."
        if self.expires_at is not None and now >= self.expires_at:
            return "The API key has expired."
        return None

    @property
    def limits(self) -> Limits:
        return Limits(rpm_limit=self.rpm_limit, tpm_limit=self.tpm_limit, daily_token_budget=self.daily_token_budget)


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """What authentication needs to know of a user (cached in-process, never the password hash)."""

    id: uuid.UUID
    email: str
    role: Role
    is_active: bool

    @classmethod
    def of(cls, user: User) -> UserSnapshot:
        return cls(id=user.id, email=user.email, role=user.role, is_active=user.is_active)


def principal_for_session(user: UserSnapshot, session_id: str) -> Principal:
    return Principal(
        user_id=user.id,
        email=user.email,
        role=user.role,
        credential=CredentialKind.JWT,
        session_id=session_id,
    )


def principal_for_api_key(user: UserSnapshot, key: ApiKey) -> Principal:
    """An API key acts as its user (an admin only if the user is), narrowed by its scopes."""
    return Principal(
        user_id=user.id,
        email=user.email,
        role=user.role,
        credential=CredentialKind.API_KEY,
        api_key_id=key.id,
        allowed_models=key.allowed_models,
        allowed_tools=key.allowed_tools,
        limits=key.limits,
    )


@dataclass(frozen=True, slots=True)
class ApiKeyFilter:
    user_id: uuid.UUID | None = None
    limit: int = 20
    # (created_at, id) of the last item of the previous page.
    after: tuple[datetime, uuid.UUID] | None = None


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...

    async def get(self, session_id: uuid.UUID) -> Session | None: ...

    async def revoke(self, session_id: uuid.UUID, at: datetime, reason: str) -> None: ...

    async def revoke_all_for_user(self, user_id: uuid.UUID, at: datetime, reason: str) -> list[uuid.UUID]:
        """Revoke every live session of a user; return their ids."""
        ...

    async def add_refresh_token(self, token: RefreshToken) -> None: ...

    async def claim_refresh_token(self, token_hash: str, at: datetime) -> RefreshToken | None:
        """Atomically mark an unused token used; None when it is unknown or already used.

        Of two concurrent claims of one token exactly one gets it.
        """
        ...

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None: ...


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey) -> None: ...

    async def get(self, key_id: uuid.UUID) -> ApiKey | None: ...

    async def get_by_prefix(self, prefix: str) -> ApiKey | None: ...

    async def list_page(self, query: ApiKeyFilter) -> list[ApiKey]: ...

    async def update(self, key: ApiKey) -> None:
        """Write the editable fields (name, scopes, limits, expiry); never `revoked_at` or the hash."""
        ...

    async def revoke(self, key_id: uuid.UUID, at: datetime) -> None:
        """Set `revoked_at` unless already set (a revocation is never undone)."""
        ...

    async def set_key_hash(self, key_id: uuid.UUID, key_hash: str) -> None: ...

    async def touch_last_used(self, stamps: dict[uuid.UUID, datetime]) -> None: ...
