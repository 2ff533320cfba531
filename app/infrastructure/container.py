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
from app.domain.errors import Conflict
from app.infrastructure.observability.logging import get_logger
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.persistence import migrations
from app.infrastructure.persistence.unit_of_work import SqlAlchemyUnitOfWork, is_connectivity_error
from app.infrastructure.security.services import IdentityServices

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
    identity: IdentityServices
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
                break
            except Exception as exc:
                if not is_connectivity_error(exc) or time.monotonic() >= deadline:
                    raise
                log.warning("database_not_ready_at_startup", error=type(exc).__name__)
                await asyncio.sleep(1.0)
        await self.identity.last_used_writer.start()
        await self._bootstrap_admin()

    async def _bootstrap_admin(self) -> None:
        """BOOTSTRAP_ADMIN_EMAIL / _PASSWORD: create that admin if absent (every worker may try)."""
        boot = self.settings.bootstrap
        if not boot.bootstrap_admin_email or boot.bootstrap_admin_password is None:
            return
        try:
            _, created = await self.identity.ensure_admin(
                boot.bootstrap_admin_email, boot.bootstrap_admin_password.get_secret_value(), update_existing=False
            )
        except Conflict:  # another worker created it a moment ago
            return
        if created:
            log.info("bootstrap_admin_created")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.identity.last_used_writer.stop()
        await self.http_client.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
