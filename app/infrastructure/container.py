"""The adapters one application instance runs on, and their lifecycle."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.application.agent.sweeper import SweepInterruptedRuns
from app.application.health import CheckReadiness
from app.application.identity.api_keys import GetApiKey, IssueApiKey, ListApiKeys, RevokeApiKey, UpdateApiKey
from app.application.identity.auth import (
    Authenticator,
    EnsureAdmin,
    FindUserByEmail,
    GetCurrentUser,
    Login,
    Logout,
    RefreshSession,
    RegisterUser,
    SessionStarter,
)
from app.application.identity.ports import LoginThrottle, RevocationStore
from app.application.identity.users import ListUsers, UpdateUser
from app.application.ports import UnitOfWorkFactory
from app.application.tools import ToolRegistry
from app.config import Settings
from app.domain.errors import Conflict
from app.infrastructure.agent.services import AgentServices
from app.infrastructure.llm.routing import StaticModelCatalog
from app.infrastructure.llm.usage_recorder import BatchingUsageRecorder
from app.infrastructure.observability.logging import get_logger
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.observability.runtime import RuntimeMetrics
from app.infrastructure.persistence import migrations
from app.infrastructure.persistence.unit_of_work import SqlAlchemyUnitOfWork, is_connectivity_error
from app.infrastructure.ratelimit.resilient import RateLimiters
from app.infrastructure.redis_pipeline import HotPathRedis
from app.infrastructure.security.api_keys import HmacApiKeyCodec
from app.infrastructure.security.cache import InProcessIdentityCache
from app.infrastructure.security.clock import SystemClock
from app.infrastructure.security.last_used import BackgroundLastUsedWriter
from app.infrastructure.security.passwords import Argon2PasswordHasher
from app.infrastructure.security.revocation import InProcessRevocationStore, RedisRevocationStore
from app.infrastructure.security.services import IdentityServices
from app.infrastructure.security.throttle import InProcessLoginThrottle, RedisLoginThrottle
from app.infrastructure.security.tokens import JwtAccessTokens, OpaqueRefreshTokens
from app.infrastructure.shutdown import Drain

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
    model_catalog: StaticModelCatalog
    usage_recorder: BatchingUsageRecorder
    # The API and auth rate limiters (Redis-backed with a failure policy, or in-process).
    rate_limits: RateLimiters
    # SIGTERM handling: readiness 503 at once, a drain deadline for running streams.
    drain: Drain
    runtime_metrics: RuntimeMetrics
    # Conversations, runs, approvals, server tools: one RunSignals and one AgentLoop per process.
    agent: AgentServices
    # The tools this process offers (built-ins, configured web_search, plugins).
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    # The client of the per-request Redis calls (limit scripts, revocation reads); None without Redis.
    redis_hot_path: HotPathRedis | None = None
    # How long start() waits for the database before giving up (a compose or k8s start race).
    database_wait_seconds: float = 30.0
    _closed: bool = field(default=False, init=False)

    def unit_of_work(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.session_factory)

    async def start(self) -> None:
        """Bring the schema to head (development) or refuse to serve on a stale one."""
        self.drain.install()
        self.runtime_metrics.watch_pool(self.engine)
        self.runtime_metrics.watch_queue("usage_records", lambda: self.usage_recorder.depth)
        self.runtime_metrics.watch_queue("api_key_last_used", lambda: self.identity.last_used_writer.depth)
        self.runtime_metrics.start()
        self.metrics.agent_runs_unsettled.set_function(lambda: float(self.agent.loop.settling))
        deadline = time.monotonic() + self.database_wait_seconds
        while True:
            try:
                if self.settings.auto_migrate:
                    await migrations.upgrade(self.engine)
                await migrations.ensure_schema_current(self.engine)
                self.usage_recorder.start()
                break
            except Exception as exc:
                if not is_connectivity_error(exc) or time.monotonic() >= deadline:
                    raise
                log.warning("database_not_ready_at_startup", error=type(exc).__name__)
                await asyncio.sleep(1.0)
        await self.identity.last_used_writer.start()
        await self._sweep_interrupted_runs()
        await self._bootstrap_admin()

    async def _sweep_interrupted_runs(self) -> None:
        sweep = SweepInterruptedRuns(
            self.unit_of_work, SystemClock(), stale_after_seconds=self.settings.bootstrap.stale_run_seconds
        )
        swept = await sweep()
        if swept:
            log.warning("agent_runs_interrupted", runs=[str(run_id) for run_id in swept])

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
        self.drain.uninstall()
        await self.agent.loop.aclose()  # runs still waiting to store their end: swept at next start
        await self.runtime_metrics.aclose()
        await self.identity.last_used_writer.stop()
        await self.usage_recorder.aclose()  # flush queued usage before the engine goes
        await self.model_catalog.aclose()
        await self.rate_limits.aclose()
        await self.http_client.aclose()
        if self.redis_hot_path is not None:
            await self.redis_hot_path.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


def build_identity(
    settings: Settings,
    uow: UnitOfWorkFactory,
    redis: Redis | None,
    metrics: Metrics,
    *,
    hot_path: HotPathRedis | None = None,
) -> IdentityServices:
    """Users, sessions, tokens and API keys: adapters from settings, use cases from adapters.

    ``hot_path`` serves the revocation reads of every authenticated request (redis-py when None).
    """
    auth = settings.auth
    clock = SystemClock()
    hasher = Argon2PasswordHasher(
        memory_kib=auth.argon2_memory_kib, time_cost=auth.argon2_time_cost, parallelism=auth.argon2_parallelism
    )
    overlap_start = auth.jwt_rotated_at.timestamp() if auth.jwt_rotated_at else time.time()
    access_tokens = JwtAccessTokens(
        secret=settings.jwt_secret,
        previous_secrets=[s.get_secret_value() for s in auth.jwt_previous_secrets],
        previous_retire_at=overlap_start + auth.jwt_rotation_overlap_seconds,
        issuer=auth.jwt_issuer,
        audience=auth.jwt_audience,
        ttl_seconds=auth.access_token_ttl_seconds,
        leeway_seconds=auth.jwt_leeway_seconds,
    )
    codec = HmacApiKeyCodec(settings.api_key_pepper, [p.get_secret_value() for p in auth.api_key_previous_peppers])
    # An ended session's marker must outlive its access tokens.
    session_marker_ttl = auth.access_token_ttl_seconds + auth.jwt_leeway_seconds + 60
    local_throttle = InProcessLoginThrottle(
        max_per_account=auth.login_max_failures_per_account,
        max_per_ip=auth.login_max_failures_per_ip,
        window_seconds=auth.login_failure_window_seconds,
    )
    revocation: RevocationStore
    throttle: LoginThrottle
    if redis is not None:
        revocation = RedisRevocationStore(
            redis,
            key_prefix=settings.redis.key_prefix,
            session_marker_ttl_seconds=session_marker_ttl,
            cache_seconds=settings.auth.revocation_cache_seconds,
            reads=hot_path,
        )
        throttle = RedisLoginThrottle(
            redis,
            local_throttle,
            key_prefix=settings.redis.key_prefix,
            max_per_account=auth.login_max_failures_per_account,
            max_per_ip=auth.login_max_failures_per_ip,
            window_seconds=auth.login_failure_window_seconds,
        )
    else:
        revocation = InProcessRevocationStore(session_marker_ttl_seconds=session_marker_ttl)
        throttle = local_throttle
    cache = InProcessIdentityCache(
        ttl_seconds=auth.identity_cache_ttl_seconds, max_entries=auth.identity_cache_max_entries
    )
    writer = BackgroundLastUsedWriter(
        uow,
        interval_seconds=auth.api_key_last_used_interval_seconds,
        queue_size=auth.api_key_last_used_queue_size,
        on_drop=metrics.api_key_last_used_dropped.inc,
    )
    starter = SessionStarter(
        access_tokens, OpaqueRefreshTokens(), clock, refresh_ttl_seconds=auth.refresh_token_ttl_seconds
    )
    return IdentityServices(
        authenticator=Authenticator(uow, access_tokens, codec, revocation, cache, writer, clock),
        register=RegisterUser(uow, hasher, clock, allow_registration=settings.bootstrap.allow_registration),
        login=Login(uow, hasher, starter, throttle),
        refresh=RefreshSession(uow, starter, revocation),
        logout=Logout(uow, revocation, clock),
        current_user=GetCurrentUser(uow),
        find_user=FindUserByEmail(uow),
        ensure_admin=EnsureAdmin(uow, hasher, clock),
        issue_api_key=IssueApiKey(uow, codec, clock),
        list_api_keys=ListApiKeys(uow),
        get_api_key=GetApiKey(uow),
        update_api_key=UpdateApiKey(uow, revocation, clock),
        revoke_api_key=RevokeApiKey(uow, revocation, clock),
        list_users=ListUsers(uow),
        update_user=UpdateUser(uow, revocation, clock),
        last_used_writer=writer,
    )
