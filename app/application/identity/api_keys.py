"""API keys: issued by admins, seen and revoked by their owners, refused everywhere once revoked."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.application.identity.ports import ApiKeyCodec, RevocationStore
from app.application.ports import Clock, UnitOfWorkFactory
from app.domain.errors import Forbidden, InvalidInput, NotFound
from app.domain.identity import ApiKey, ApiKeyFilter
from app.domain.principal import Principal

MAX_KEY_NAME_LENGTH = 200
MAX_SCOPE_ENTRIES = 256
MAX_LIST_LIMIT = 100


def encode_cursor(created_at: datetime, item_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, item_id = raw.partition("|")
        return datetime.fromisoformat(stamp), uuid.UUID(item_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput("The cursor is not valid.", param="cursor") from exc


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT}.", param="limit")
    return limit


def _scope(values: Sequence[str] | None, param: str) -> tuple[str, ...] | None:
    if values is None:
        return None
    if len(values) > MAX_SCOPE_ENTRIES:
        raise InvalidInput(f"{param} may list at most {MAX_SCOPE_ENTRIES} names.", param=param)
    cleaned: list[str] = []
    for value in values:
        name = value.strip()
        if not name or len(name) > MAX_KEY_NAME_LENGTH:
            raise InvalidInput(f"{param} entries must be non-empty names.", param=param)
        if name not in cleaned:
            cleaned.append(name)
    return tuple(cleaned)


def _key_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_KEY_NAME_LENGTH:
        raise InvalidInput(f"name must be 1 to {MAX_KEY_NAME_LENGTH} characters.", param="name")
    return name


def _positive(value: int | None, param: str) -> int | None:
    if value is not None and value < 1:
        raise InvalidInput(f"{param} must be a positive integer or null.", param=param)
    return value


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("This action requires the admin role.", code="insufficient_role")


@dataclass(frozen=True, slots=True)
class ApiKeySpec:
    name: str
    user_id: uuid.UUID | None = None
    allowed_models: Sequence[str] | None = None
    allowed_tools: Sequence[str] | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    daily_token_budget: int | None = None
    expires_at: datetime | None = None


UPDATABLE_FIELDS = frozenset(
    {"name", "allowed_models", "allowed_tools", "rpm_limit", "tpm_limit", "daily_token_budget", "expires_at"}
)


class IssueApiKey:
    """Admins issue keys (for themselves by default, or any user). The secret is returned once."""

    def __init__(self, uow: UnitOfWorkFactory, codec: ApiKeyCodec, clock: Clock) -> None:
        self._uow = uow
        self._codec = codec
        self._clock = clock

    async def __call__(self, principal: Principal, spec: ApiKeySpec) -> tuple[ApiKey, str]:
        _require_admin(principal)
        now = self._clock.now()
        if spec.expires_at is not None and spec.expires_at <= now:
            raise InvalidInput("expires_at must be in the future.", param="expires_at")
        owner_id = spec.user_id or principal.user_id
        secret = self._codec.generate()
        key = ApiKey(
            id=uuid.uuid4(),
            user_id=owner_id,
            name=_key_name(spec.name),
            prefix=secret.prefix,
            key_hash=secret.key_hash,
            created_at=now,
            updated_at=now,
            allowed_models=_scope(spec.allowed_models, "allowed_models"),
            allowed_tools=_scope(spec.allowed_tools, "allowed_tools"),
            rpm_limit=_positive(spec.rpm_limit, "rpm_limit"),
            tpm_limit=_positive(spec.tpm_limit, "tpm_limit"),
            daily_token_budget=_positive(spec.daily_token_budget, "daily_token_budget"),
            expires_at=spec.expires_at,
        )
        async with self._uow() as uow:
            if await uow.users.get(owner_id) is None:
                raise NotFound("No such user.", param="user_id")
            await uow.api_keys.add(key)
            await uow.commit()
        return key, secret.key


class ListApiKeys:
    """Admins see every key (optionally one user's); users see their own."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(
        self, principal: Principal, *, user_id: uuid.UUID | None, limit: int, cursor: str | None
    ) -> tuple[list[ApiKey], str | None]:
        limit = check_limit(limit)
        owner = user_id if principal.is_admin else principal.user_id
        if not principal.is_admin and user_id is not None and user_id != principal.user_id:
            return [], None
        query = ApiKeyFilter(user_id=owner, limit=limit + 1, after=decode_cursor(cursor))
        async with self._uow() as uow:
            keys = await uow.api_keys.list_page(query)
        next_cursor = encode_cursor(keys[limit - 1].created_at, keys[limit - 1].id) if len(keys) > limit else None
        return keys[:limit], next_cursor


async def _visible_key(uow_factory: UnitOfWorkFactory, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    async with uow_factory() as uow:
        key = await uow.api_keys.get(key_id)
    if key is None or (not principal.is_admin and key.user_id != principal.user_id):
        raise NotFound("No such API key.")
    return key


class GetApiKey:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, principal: Principal, key_id: uuid.UUID) -> ApiKey:
        return await _visible_key(self._uow, principal, key_id)


class UpdateApiKey:
    """Admins change a key's name, scopes, limits or expiry; every instance drops its cached copy."""

    def __init__(self, uow: UnitOfWorkFactory, revocation: RevocationStore, clock: Clock) -> None:
        self._uow = uow
        self._revocation = revocation
        self._clock = clock

    async def __call__(self, principal: Principal, key_id: uuid.UUID, changes: dict[str, Any]) -> ApiKey:
        _require_admin(principal)
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise InvalidInput(f"{sorted(unknown)[0]} cannot be changed.", param=sorted(unknown)[0])
        async with self._uow() as uow:
            key = await uow.api_keys.get(key_id)
            if key is None:
                raise NotFound("No such API key.")
            if "name" in changes:
                key.name = _key_name(str(changes["name"]))
            if "allowed_models" in changes:
                key.allowed_models = _scope(changes["allowed_models"], "allowed_models")
            if "allowed_tools" in changes:
                key.allowed_tools = _scope(changes["allowed_tools"], "allowed_tools")
            for field_name in ("rpm_limit", "tpm_limit", "daily_token_budget"):
                if field_name in changes:
                    setattr(key, field_name, _positive(changes[field_name], field_name))
            if "expires_at" in changes:
                key.expires_at = changes["expires_at"]
            key.updated_at = self._clock.now()
            await uow.api_keys.update(key)
            await uow.commit()
        await self._revocation.api_key_changed(key.id)
        return key


class RevokeApiKey:
    """Admins revoke any key, users their own; refused on every instance within a second.

    Idempotent: revoking again re-publishes the revocation (useful after a Redis outage).
    """

    def __init__(self, uow: UnitOfWorkFactory, revocation: RevocationStore, clock: Clock) -> None:
        self._uow = uow
        self._revocation = revocation
        self._clock = clock

    async def __call__(self, principal: Principal, key_id: uuid.UUID) -> None:
        async with self._uow() as uow:
            key = await uow.api_keys.get(key_id)
            if key is None or (not principal.is_admin and key.user_id != principal.user_id):
                raise NotFound("No such API key.")
            if key.revoked_at is None:
                await uow.api_keys.revoke(key_id, self._clock.now())
                await uow.commit()
        await self._revocation.revoke_api_key(key_id)
