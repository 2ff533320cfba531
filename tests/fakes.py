"""Fakes of the application ports, for unit tests only (no I/O)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from app.domain.users import Role, User
from tests.fakes_agent import (
    InMemoryConversationRepository,
    InMemoryMessageRepository,
    InMemoryRunRepository,
    InMemoryToolExecutionRepository,
)


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class InMemoryUserRepository:
    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, User] = {}

    async def add(self, user: User) -> None:
        if any(u.email == user.email for u in self.rows.values()):
            raise ValueError("duplicate email")
        self.rows[user.id] = user

    async def get(self, user_id: uuid.UUID) -> User | None:
        return self.rows.get(user_id)

    async def get_by_email(self, email: str) -> User | None:
        return next((u for u in self.rows.values() if u.email == email), None)

    async def update(self, user: User) -> None:
        self.rows[user.id] = user

    async def count_admins(self) -> int:
        return sum(1 for u in self.rows.values() if u.role is Role.ADMIN)


class FakeUnitOfWork:
    """Commits are counted; rollback of an uncommitted block is recorded, not simulated."""

    def __init__(self) -> None:
        self.users = InMemoryUserRepository()
        # The agent's repositories (fakes in tests/fakes_agent.py).
        self.conversations = InMemoryConversationRepository()
        self.messages = InMemoryMessageRepository()
        self.runs = InMemoryRunRepository()
        self.tool_executions = InMemoryToolExecutionRepository()
        self.commits = 0
        self.rollbacks = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.rollbacks += 1

    async def commit(self) -> None:
        self.commits += 1

    async def rollback(self) -> None:
        self.rollbacks += 1


class FakeProbe:
    """A dependency probe that answers, fails or hangs as told."""

    def __init__(self, name: str, *, required: bool = True, fail: str | None = None, hang: bool = False) -> None:
        self.name = name
        self.required = required
        self.fail = fail
        self.hang = hang

    async def check(self) -> str:
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            raise ConnectionRefusedError(self.fail)
        return "ok"
