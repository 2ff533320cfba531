"""SQLAlchemy implementations of the domain repository protocols."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.errors import Conflict
from app.domain.users import Role, User
from app.infrastructure.persistence.models import UserModel


def _user_to_domain(row: UserModel) -> User:
    return User(
        id=row.id,
        email=row.email,
        name=row.name,
        role=Role(row.role),
        is_active=row.is_active,
        password_hash=row.password_hash,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlAlchemyUserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, user: User) -> None:
        self._session.add(
            UserModel(
                id=user.id,
                email=user.email,
                name=user.name,
                role=user.role.value,
                is_active=user.is_active,
                password_hash=user.password_hash,
                created_at=user.created_at,
                updated_at=user.updated_at,
            )
        )
        try:
            await self._session.flush()
        except IntegrityError as exc:
            if "uq_users_email" in str(exc.orig):
                raise Conflict("An account with this email already exists.", code="email_taken", param="email") from exc
            raise

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> User | None:
        row = await self._session.get(UserModel, user_id, with_for_update=for_update)
        return _user_to_domain(row) if row else None

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        await self._session.execute(
            update(UserModel)
            .where(UserModel.id == user_id)
            .values(password_hash=password_hash, updated_at=func.now())
            .execution_options(synchronize_session=False)
        )

    async def get_by_email(self, email: str) -> User | None:
        row = (await self._session.execute(select(UserModel).where(UserModel.email == email))).scalar_one_or_none()
        return _user_to_domain(row) if row else None

    async def update(self, user: User) -> None:
        row = await self._session.get(UserModel, user.id)
        if row is None:
            return
        row.email = user.email
        row.name = user.name
        row.role = user.role.value
        row.is_active = user.is_active
        row.password_hash = user.password_hash
        row.updated_at = user.updated_at
        await self._session.flush()

    async def count_admins(self) -> int:
        stmt = select(func.count()).select_from(UserModel).where(UserModel.role == Role.ADMIN.value)
        return int((await self._session.execute(stmt)).scalar_one())

    async def list_page(self, *, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[User]:
        stmt = select(UserModel).order_by(UserModel.created_at.desc(), UserModel.id.desc()).limit(limit)
        if after is not None:
            stmt = stmt.where(tuple_(UserModel.created_at, UserModel.id) < tuple_(*after))
        return [_user_to_domain(row) for row in (await self._session.execute(stmt)).scalars()]
