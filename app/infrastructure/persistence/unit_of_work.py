"""The explicit unit of work: one session, one transaction, rolled back unless committed."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain.agent import ConversationRepository, MessageRepository, RunRepository, ToolExecutionRepository
from app.domain.errors import ServiceUnavailable
from app.domain.identity import ApiKeyRepository, SessionRepository
from app.domain.users import UserRepository
from app.infrastructure.persistence.agent_repositories import (
    SqlAlchemyConversationRepository,
    SqlAlchemyMessageRepository,
    SqlAlchemyRunRepository,
    SqlAlchemyToolExecutionRepository,
)
from app.infrastructure.persistence.identity_repositories import (
    SqlAlchemyApiKeyRepository,
    SqlAlchemySessionRepository,
)
from app.infrastructure.persistence.repositories import SqlAlchemyUserRepository


def is_connectivity_error(exc: BaseException) -> bool:
    """True for failures that mean "the database is unreachable", not "the query was wrong"."""
    if isinstance(exc, PoolTimeoutError | OperationalError | InterfaceError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError):
        return bool(exc.connection_invalidated) or isinstance(exc.orig, OSError | ConnectionError)
    return isinstance(exc, OSError)


class SqlAlchemyUnitOfWork:
    """``async with uow:`` opens a session; leaving it rolls back whatever was not committed.

    Connectivity failures (pool timeout, refused or dropped connections) surface as the
    domain's `ServiceUnavailable("database_unavailable")`, which the HTTP layer turns into
    a 503: a database blip is never a 401 or a 500.
    """

    # Typed as the domain protocols so this class satisfies the application's `UnitOfWork`.
    users: UserRepository
    sessions: SessionRepository
    api_keys: ApiKeyRepository
    conversations: ConversationRepository
    messages: MessageRepository
    runs: RunRepository
    tool_executions: ToolExecutionRepository

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> Self:
        self._session = self._session_factory()
        self.users = SqlAlchemyUserRepository(self._session)
        self.sessions = SqlAlchemySessionRepository(self._session)
        self.api_keys = SqlAlchemyApiKeyRepository(self._session)
        self.conversations = SqlAlchemyConversationRepository(self._session)
        self.messages = SqlAlchemyMessageRepository(self._session)
        self.runs = SqlAlchemyRunRepository(self._session)
        self.tool_executions = SqlAlchemyToolExecutionRepository(self._session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self._session
        self._session = None
        if session is None:
            return
        try:
            await session.rollback()
        except Exception:  # noqa: BLE001, S110 - the connection may already be gone; closing cleans up
            pass
        finally:
            await session.close()
        if exc is not None and is_connectivity_error(exc):
            raise ServiceUnavailable(
                "The database is unavailable; try again shortly.", code="database_unavailable"
            ) from exc

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._session

    async def commit(self) -> None:
        await self.session.commit()

    async def rollback(self) -> None:
        await self.session.rollback()
