"""The admin's user management: list users, change a role, deactivate or re-activate an account."""

from __future__ import annotations

import uuid

from app.application.identity.api_keys import check_limit, decode_cursor, encode_cursor
from app.application.identity.ports import RevocationStore
from app.application.ports import Clock, UnitOfWorkFactory
from app.domain.errors import Forbidden, InvalidInput, NotFound
from app.domain.principal import Principal
from app.domain.users import Role, User


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("This action requires the admin role.", code="insufficient_role")


class ListUsers:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, principal: Principal, *, limit: int, cursor: str | None) -> tuple[list[User], str | None]:
        _require_admin(principal)
        limit = check_limit(limit)
        async with self._uow() as uow:
            users = await uow.users.list_page(limit=limit + 1, after=decode_cursor(cursor))
        next_cursor = encode_cursor(users[limit - 1].created_at, users[limit - 1].id) if len(users) > limit else None
        return users[:limit], next_cursor


class UpdateUser:
    """Change a user's role or active flag. Deactivation ends every session and silences every
    key of the user on all instances at once; an admin cannot demote or deactivate themselves
    (so the last admin cannot lock everyone out by mistake)."""

    def __init__(self, uow: UnitOfWorkFactory, revocation: RevocationStore, clock: Clock) -> None:
        self._uow = uow
        self._revocation = revocation
        self._clock = clock

    async def __call__(
        self, principal: Principal, user_id: uuid.UUID, *, role: Role | None = None, is_active: bool | None = None
    ) -> User:
        _require_admin(principal)
        if user_id == principal.user_id and (role is Role.USER or is_active is False):
            raise InvalidInput("Admins cannot demote or deactivate themselves.", param="role" if role else "is_active")
        now = self._clock.now()
        ended_sessions: list[uuid.UUID] = []
        async with self._uow() as uow:
            user = await uow.users.get(user_id, for_update=True)
            if user is None:
                raise NotFound("No such user.")
            if role is not None:
                user.role = role
            if is_active is not None:
                user.is_active = is_active
            user.updated_at = now
            await uow.users.update(user)
            if is_active is False:
                ended_sessions = await uow.sessions.revoke_all_for_user(user_id, now, "user_deactivated")
            await uow.commit()
        await self._revocation.user_changed(user_id, disabled=not user.is_active)
        if ended_sessions:
            await self._revocation.revoke_sessions(ended_sessions)
        return user
