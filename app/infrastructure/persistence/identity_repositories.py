"""SQLAlchemy repositories of sessions, refresh tokens and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import case, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.identity import ApiKey, ApiKeyFilter, RefreshToken, Session
from app.infrastructure.persistence.models import ApiKeyModel, RefreshTokenModel, SessionModel


def _session(row: SessionModel) -> Session:
    return Session(
        id=row.id,
        user_id=row.user_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        revoked_reason=row.revoked_reason,
    )


def _refresh(row: RefreshTokenModel) -> RefreshToken:
    return RefreshToken(
        id=row.id,
        session_id=row.session_id,
        token_hash=row.token_hash,
        created_at=row.created_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
    )


def _scope(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values is not None else None


def _api_key(row: ApiKeyModel) -> ApiKey:
    return ApiKey(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        key_hash=row.key_hash,
        created_at=row.created_at,
        updated_at=row.updated_at,
        allowed_models=_scope(row.allowed_models),
        allowed_tools=_scope(row.allowed_tools),
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
        daily_token_budget=row.daily_token_budget,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class SqlAlchemySessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._db = session

    async def add(self, session: Session) -> None:
        self._db.add(
            SessionModel(
                id=session.id,
                user_id=session.user_id,
                created_at=session.created_at,
                expires_at=session.expires_at,
                revoked_at=session.revoked_at,
                revoked_reason=session.revoked_reason,
            )
        )
        await self._db.flush()

    async def get(self, session_id: uuid.UUID) -> Session | None:
        row = await self._db.get(SessionModel, session_id)
        return _session(row) if row else None

    async def revoke(self, session_id: uuid.UUID, at: datetime, reason: str) -> None:
        await self._db.execute(
            update(SessionModel)
            .where(SessionModel.id == session_id, SessionModel.revoked_at.is_(None))
            .values(revoked_at=at, revoked_reason=reason)
        )

    async def revoke_all_for_user(self, user_id: uuid.UUID, at: datetime, reason: str) -> list[uuid.UUID]:
        result = await self._db.execute(
            update(SessionModel)
            .where(SessionModel.user_id == user_id, SessionModel.revoked_at.is_(None), SessionModel.expires_at > at)
            .values(revoked_at=at, revoked_reason=reason)
            .returning(SessionModel.id)
        )
        return list(result.scalars())

    async def add_refresh_token(self, token: RefreshToken) -> None:
        self._db.add(
            RefreshTokenModel(
                id=token.id,
                session_id=token.session_id,
                token_hash=token.token_hash,
                created_at=token.created_at,
                expires_at=token.expires_at,
                used_at=token.used_at,
            )
        )
        await self._db.flush()

    async def claim_refresh_token(self, token_hash: str, at: datetime) -> RefreshToken | None:
        # One conditional UPDATE: of two concurrent claims, Postgres lets exactly one match.
        result = await self._db.execute(
            update(RefreshTokenModel)
            .where(RefreshTokenModel.token_hash == token_hash, RefreshTokenModel.used_at.is_(None))
            .values(used_at=at)
            .returning(RefreshTokenModel)
        )
        row = result.scalar_one_or_none()
        return _refresh(row) if row else None

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        stmt = select(RefreshTokenModel).where(RefreshTokenModel.token_hash == token_hash)
        row = (await self._db.execute(stmt)).scalar_one_or_none()
        return _refresh(row) if row else None


class SqlAlchemyApiKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._db = session

    async def add(self, key: ApiKey) -> None:
        self._db.add(
            ApiKeyModel(
                id=key.id,
                user_id=key.user_id,
                name=key.name,
                prefix=key.prefix,
                key_hash=key.key_hash,
                allowed_models=list(key.allowed_models) if key.allowed_models is not None else None,
                allowed_tools=list(key.allowed_tools) if key.allowed_tools is not None else None,
                rpm_limit=key.rpm_limit,
                tpm_limit=key.tpm_limit,
                daily_token_budget=key.daily_token_budget,
                expires_at=key.expires_at,
                last_used_at=key.last_used_at,
                revoked_at=key.revoked_at,
                created_at=key.created_at,
                updated_at=key.updated_at,
            )
        )
        await self._db.flush()

    async def get(self, key_id: uuid.UUID) -> ApiKey | None:
        row = await self._db.get(ApiKeyModel, key_id)
        return _api_key(row) if row else None

    async def get_by_prefix(self, prefix: str) -> ApiKey | None:
        row = (await self._db.execute(select(ApiKeyModel).where(ApiKeyModel.prefix == prefix))).scalar_one_or_none()
        return _api_key(row) if row else None

    async def list_page(self, query: ApiKeyFilter) -> list[ApiKey]:
        stmt = select(ApiKeyModel).order_by(ApiKeyModel.created_at.desc(), ApiKeyModel.id.desc()).limit(query.limit)
        if query.user_id is not None:
            stmt = stmt.where(ApiKeyModel.user_id == query.user_id)
        if query.after is not None:
            stmt = stmt.where(tuple_(ApiKeyModel.created_at, ApiKeyModel.id) < tuple_(*query.after))
        return [_api_key(row) for row in (await self._db.execute(stmt)).scalars()]

    async def update(self, key: ApiKey) -> None:
        await self._db.execute(
            update(ApiKeyModel)
            .where(ApiKeyModel.id == key.id)
            .values(
                name=key.name,
                allowed_models=list(key.allowed_models) if key.allowed_models is not None else None,
                allowed_tools=list(key.allowed_tools) if key.allowed_tools is not None else None,
                rpm_limit=key.rpm_limit,
                tpm_limit=key.tpm_limit,
                daily_token_budget=key.daily_token_budget,
                expires_at=key.expires_at,
                updated_at=key.updated_at,
            )
        )

    async def revoke(self, key_id: uuid.UUID, at: datetime) -> None:
        await self._db.execute(
            update(ApiKeyModel)
            .where(ApiKeyModel.id == key_id, ApiKeyModel.revoked_at.is_(None))
            .values(revoked_at=at, updated_at=at)
        )

    async def set_key_hash(self, key_id: uuid.UUID, key_hash: str) -> None:
        await self._db.execute(update(ApiKeyModel).where(ApiKeyModel.id == key_id).values(key_hash=key_hash))

    async def touch_last_used(self, stamps: dict[uuid.UUID, datetime]) -> None:
        if not stamps:
            return
        stamp = case(stamps, value=ApiKeyModel.id)
        await self._db.execute(
            update(ApiKeyModel)
            .where(ApiKeyModel.id.in_(list(stamps)))
            .where((ApiKeyModel.last_used_at.is_(None)) | (ApiKeyModel.last_used_at < stamp))
            .values(last_used_at=stamp)
            .execution_options(synchronize_session=False)
        )
