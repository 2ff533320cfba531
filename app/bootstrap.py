"""The composition root: builds every adapter from settings and hands them to the HTTP app.

Nothing else constructs adapters. Tests build settings (or a container with fakes) and call
the same functions, so what runs in tests is what runs in production.
"""

from __future__ import annotations

import time

import httpx
from litestar import Litestar
from redis.asyncio import Redis

from app.application.health import CheckReadiness
from app.application.identity.api_keys import GetApiKey, IssueApiKey, ListApiKeys, RevokeApiKey, UpdateApiKey
from app.application.identity.auth import (
    Authenticator,
    EnsureAdmin,
    GetCurrentUser,
    Login,
    Logout,
    RefreshSession,
    RegisterUser,
    SessionStarter,
)
from app.application.identity.ports import LoginThrottle, RevocationStore
from app.application.identity.users import ListUsers, UpdateUser
from app.application.ports import DependencyProbe, UnitOfWorkFactory
from app.config import Settings, load_settings
from app.infrastructure.container import Container
from app.infrastructure.http.app import build_http_app
from app.infrastructure.observability.logging import configure_logging
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.persistence.database import DatabaseProbe, create_engine, create_session_factory
from app.infrastructure.persistence.unit_of_work import SqlAlchemyUnitOfWork
from app.infrastructure.redis_client import InProcessLimiterProbe, RedisProbe, create_redis
from app.infrastructure.security.api_keys import HmacApiKeyCodec
from app.infrastructure.security.cache import InProcessIdentityCache
from app.infrastructure.security.clock import SystemClock
from app.infrastructure.security.last_used import BackgroundLastUsedWriter
from app.infrastructure.security.passwords import Argon2PasswordHasher
from app.infrastructure.security.revocation import InProcessRevocationStore, RedisRevocationStore
from app.infrastructure.security.services import IdentityServices
from app.infrastructure.security.throttle import InProcessLoginThrottle, RedisLoginThrottle
from app.infrastructure.security.tokens import JwtAccessTokens, OpaqueRefreshTokens


class MissingDatabaseUrl(RuntimeError):
    pass


def build_container(settings: Settings) -> Container:
    if settings.database.url is None:
        raise MissingDatabaseUrl(
            "DATABASE_URL is not set: start with `make run` / `agent-api serve` (which start the embedded"
            " Postgres in development) or set DATABASE_URL"
        )
    engine = create_engine(settings.database, settings.database.url.get_secret_value())
    redis = create_redis(settings.redis)
    probes: list[DependencyProbe] = [DatabaseProbe(engine)]
    probes.append(RedisProbe(redis) if redis is not None else InProcessLimiterProbe())
    http_client = httpx.AsyncClient(
        timeout=httpx.Timeout(connect=5.0, read=60.0, write=30.0, pool=5.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )
    session_factory = create_session_factory(engine)
    metrics = Metrics()
    return Container(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        redis=redis,
        http_client=http_client,
        metrics=metrics,
        readiness=CheckReadiness(probes),
        identity=build_identity(settings, lambda: SqlAlchemyUnitOfWork(session_factory), redis, metrics),
    )


def build_identity(
    settings: Settings, uow: UnitOfWorkFactory, redis: Redis | None, metrics: Metrics
) -> IdentityServices:
    """Users, sessions, tokens and API keys: adapters from settings, use cases from adapters."""
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
            redis, key_prefix=settings.redis.key_prefix, session_marker_ttl_seconds=session_marker_ttl
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


def create_app(settings: Settings | None = None) -> Litestar:
    """The ASGI application (uvicorn calls this as a factory in every worker)."""
    settings = settings or load_settings()
    configure_logging(settings.logging)
    return build_http_app(build_container(settings))
