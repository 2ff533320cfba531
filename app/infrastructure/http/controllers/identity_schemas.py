"""Request and response bodies of the auth, API key and admin endpoints."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.domain.identity import ApiKey
from app.domain.principal import Principal
from app.domain.users import Role, User


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class RegisterBody(BaseModel):
    # Unknown fields (a `role`, an `is_active`) are ignored: nothing here can make an admin.
    model_config = ConfigDict(extra="ignore")

    email: str = Field(max_length=1000)
    password: str = Field(max_length=4096)
    name: str | None = Field(None, max_length=1000)


class LoginBody(BaseModel):
    email: str = Field(max_length=1000)
    password: str = Field(max_length=4096)


class RefreshBody(BaseModel):
    refresh_token: str = Field(max_length=1000)


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str | None
    role: Literal["user", "admin"]
    is_active: bool
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            role=user.role.value,
            is_active=user.is_active,
            created_at=user.created_at,
        )


class UserEnvelope(BaseModel):
    user: UserOut


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme's name, not a secret
    expires_in: int
    user: UserOut


class AuthInfo(BaseModel):
    type: Literal["jwt", "api_key"]
    api_key_id: uuid.UUID | None
    allowed_models: list[str] | None
    allowed_tools: list[str] | None

    @classmethod
    def of(cls, principal: Principal) -> AuthInfo:
        return cls(
            type=principal.credential.value,
            api_key_id=principal.api_key_id,
            allowed_models=list(principal.allowed_models) if principal.allowed_models is not None else None,
            allowed_tools=list(principal.allowed_tools) if principal.allowed_tools is not None else None,
        )


class MeResponse(BaseModel):
    user: UserOut
    auth: AuthInfo


class ApiKeyCreateBody(BaseModel):
    user_id: uuid.UUID | None = None
    name: str = Field(max_length=1000)
    allowed_models: list[str] | None = None
    allowed_tools: list[str] | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    daily_token_budget: int | None = None
    expires_at: datetime | None = None

    _tz = field_validator("expires_at")(_utc)


class ApiKeyPatchBody(BaseModel):
    """Only the fields present are changed; `null` clears a scope, limit or expiry."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=1000)
    allowed_models: list[str] | None = None
    allowed_tools: list[str] | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    daily_token_budget: int | None = None
    expires_at: datetime | None = None

    _tz = field_validator("expires_at")(_utc)


class ApiKeyOut(BaseModel):
    id: uuid.UUID
    name: str
    user_id: uuid.UUID
    prefix: str
    allowed_models: list[str] | None
    allowed_tools: list[str] | None
    rpm_limit: int | None
    tpm_limit: int | None
    daily_token_budget: int | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    @classmethod
    def fields_of(cls, key: ApiKey) -> dict[str, object]:
        return {
            "id": key.id,
            "name": key.name,
            "user_id": key.user_id,
            "prefix": f"sk-{key.prefix}",
            "allowed_models": list(key.allowed_models) if key.allowed_models is not None else None,
            "allowed_tools": list(key.allowed_tools) if key.allowed_tools is not None else None,
            "rpm_limit": key.rpm_limit,
            "tpm_limit": key.tpm_limit,
            "daily_token_budget": key.daily_token_budget,
            "expires_at": key.expires_at,
            "last_used_at": key.last_used_at,
            "revoked_at": key.revoked_at,
            "created_at": key.created_at,
        }

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls.model_validate(cls.fields_of(key))


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret key. Shown only in this response; store it now.")

    @classmethod
    def created(cls, key: ApiKey, secret: str) -> ApiKeyCreated:
        return cls.model_validate({**cls.fields_of(key), "key": secret})


class ApiKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKeyOut]
    next_cursor: str | None


class UserList(BaseModel):
    object: Literal["list"] = "list"
    data: list[UserOut]
    next_cursor: str | None


class UserPatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    is_active: bool | None = None
