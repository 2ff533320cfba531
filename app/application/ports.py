"""Ports: what the use cases need from the outside world, as Protocols.

Each has a production adapter in `app.infrastructure` and a fake in `tests/fakes.py`.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from app.domain.agent import ConversationRepository, MessageRepository, RunRepository, ToolExecutionRepository
from app.domain.identity import ApiKeyRepository, SessionRepository
from app.domain.users import UserRepository


class Transaction(Protocol):
    """An explicit transaction: ``async with uow:`` rolls back unless the use case commits."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class AgentUnitOfWork(Transaction, Protocol):
    """What the agent needs: conversations, messages, runs, tool executions (nothing of identity)."""

    conversations: ConversationRepository
    messages: MessageRepository
    runs: RunRepository
    tool_executions: ToolExecutionRepository


class UnitOfWork(AgentUnitOfWork, Protocol):
    """Every repository, in one transaction."""

    users: UserRepository
    sessions: SessionRepository
    api_keys: ApiKeyRepository


class AgentUnitOfWorkFactory(Protocol):
    def __call__(self) -> AgentUnitOfWork: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class DependencyProbe(Protocol):
    """Checks one dependency (database, redis, llm). Raises on failure; returns a short status."""

    name: str
    required: bool

    async def check(self) -> str: ...
