"""The async SQLAlchemy engine: a bounded pool with a short checkout timeout."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.config import DatabaseSettings


def create_engine(settings: DatabaseSettings, url: str) -> AsyncEngine:
    """A pool of at most `pool_size + max_overflow` connections.

    `pool_timeout` is short on purpose: a request that cannot get a connection quickly
    gets a 503 (`database_unavailable`) instead of queueing behind a stuck pool.
    `pool_pre_ping` drops connections that died while idle (a Postgres restart), so the
    first request after a blip does not fail.
    """
    server_settings = {"application_name": "agent-api"}
    if settings.statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.statement_timeout_ms)
    return create_async_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_seconds,
        pool_pre_ping=True,
        pool_recycle=1800,
        echo=settings.echo,
        connect_args={"timeout": settings.connect_timeout_seconds, "server_settings": server_settings},
    )


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


class DatabaseProbe:
    """Readiness probe: one trivial query."""

    name = "database"
    required = True

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def check(self) -> str:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return "ok"
