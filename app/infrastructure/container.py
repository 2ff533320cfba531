"""The adapters one application instance runs on, and their lifecycle."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.application.health import CheckReadiness
from app.config import Settings
from app.infrastructure.observability.logging import get_logger
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.persistence import migrations
from app.infrastructure.persistence.unit_of_work import SqlAlchemyUnitOfWork, is_connectivity_error
from app.infrastructure.ratelimit.resilient import RateLimiters

log = get_logger(__name__)


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis | None
    http_client: httpx.AsyncClient
    metrics: Metrics
    readiness: CheckReadiness
    # The API and auth rate limiters (Redis-backed with a failure policy, or in-process).
    rate_limits: RateLimiters
    # How long start() waits for the database before giving up (a compose or k8s start race).
    database_wait_seconds: float = 30.0
    _closed: bool = field(default=False, init=False)

    def unit_of_work(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.session_factory)

    async def start(self) -> None:
        """Bring the schema to head (development) or refuse to serve on a stale one."""
        deadline = time.monotonic() + self.database_wait_seconds
        while True:
            try:
                if self.settings.auto_migrate:
                    await migrations.upgrade(self.engine)
                await migrations.ensure_schema_current(self.engine)
                return
            except Exception as exc:
                if not is_connectivity_error(exc) or time.monotonic() >= deadline:
                    raise
                log.warning("database_not_ready_at_startup", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.rate_limits.aclose()
        await self.http_client.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
