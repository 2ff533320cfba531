"""Users: the people (and their roles) behind every credential."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from app.domain.errors import InvalidInput

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128
MAX_EMAIL_LENGTH = 254


class Role(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


def normalise_email(raw: str) -> str:
    """Trim and lower-case an email address, and check its basic shape.

    Deliverability is not our business; a single ``@`` with text on both sides and a dot
    in the domain is.
    """
    email = raw.strip().lower()
    local, sep, domain = email.partition("@")
    if (
        not sep
        or not local
        or "." not in domain
        or domain.startswith(".")
        or domain.endswith(".")
        or "@" in domain
        or any(ch.isspace() for ch in email)
        or len(email) > MAX_EMAIL_LENGTH
    ):
        raise InvalidInput("A valid email address is required.", param="email")
    return email


def check_password_policy(password: str) -> None:
    """Passwords are 8 to 128 characters; anything else is refused before hashing."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"Password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
            param="password",
        )


@dataclass(slots=True)
class User:
    id: uuid.UUID
    email: str
    name: str | None
    role: Role
    is_active: bool
    password_hash: str
    created_at: datetime
    updated_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class UserRepository(Protocol):
    async def add(self, user: User) -> None: ...

    async def get(self, user_id: uuid.UUID, *, for_update: bool = False) -> User | None:
        """`for_update` locks the row until the transaction ends (read-modify-write of a user)."""
        ...

    async def get_by_email(self, email: str) -> User | None: ...

    async def update(self, user: User) -> None: ...

    async def count_admins(self) -> int: ...

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        """Replace only the hash (a re-hash on login must not write back a stale role or flag)."""
        ...

    async def list_page(self, *, limit: int, after: tuple[datetime, uuid.UUID] | None) -> list[User]:
        """Users ordered by (created_at, id), starting after the given position."""
        ...
