"""The composition root: builds every adapter from settings and hands them to the HTTP app.

Nothing else constructs adapters. Tests build settings (or a container with fakes) and call
the same functions, so what runs in tests is what runs in production.
"""

from __future__ import annotations

import httpx
from litestar import Litestar
from redis.asyncio import Redis

from app.application.health import CheckReadiness
from app.application.ports import DependencyProbe
from app.application.ratelimit import AuthLimitDefaults, CallerLimitDefaults, FailurePolicy, parse_trusted_proxies
from app.application.tools import ToolRegistry
from app.config import RateLimitSettings, Settings, load_settings
from app.infrastructure.agent.services import build_agent_services
from app.infrastructure.container import Container, build_identity
from app.infrastructure.http.app import build_http_app
from app.infrastructure.llm.openai_client import OpenAICompatibleClient, UpstreamPolicy
from app.infrastructure.llm.routing import ModelRoutingProbe, StaticModelCatalog, build_catalog
from app.infrastructure.llm.usage_recorder import BatchingUsageRecorder, MeteredUsageRecorder
from app.infrastructure.observability.logging import configure_logging
from app.infrastructure.observability.metrics import MeteredToolRuns, Metrics
from app.infrastructure.observability.runtime import RuntimeMetrics
from app.infrastructure.persistence.database import DatabaseProbe, create_engine, create_session_factory
from app.infrastructure.persistence.unit_of_work import SqlAlchemyUnitOfWork
from app.infrastructure.ratelimit.in_process import InProcessRateLimiter
from app.infrastructure.ratelimit.redis_limiter import RedisRateLimiter
from app.infrastructure.ratelimit.resilient import RateLimiters, RateLimitProbe, RedisHealth, ResilientRateLimiter
from app.infrastructure.redis_client import InProcessLimiterProbe, RedisProbe, create_hot_path_redis, create_redis
from app.infrastructure.redis_pipeline import HotPathRedis
from app.infrastructure.shutdown import Drain
from app.infrastructure.tools.registry import build_tool_registry


class MissingDatabaseUrl(RuntimeError):
    pass


def build_container(settings: Settings, *, tools: ToolRegistry | None = None) -> Container:
    """`tools` replaces the registry built from settings (tests use it for test-only tool
    construction, e.g. `http_get` with a loopback allowance no setting can give)."""
    if settings.database.url is None:
        raise MissingDatabaseUrl(
            "DATABASE_URL is not set: start with `make run` / `agent-api serve` (which start the embedded"
            " Postgres in development) or set DATABASE_URL"
        )
    engine = create_engine(settings.database, settings.database.url.get_secret_value())
    redis = create_redis(settings.redis)
    # The per-request calls (limit scripts, revocation reads) go through the pipelined client;
    # everything else (writes, login throttle, readiness, `active_leases`) through redis-py.
    hot_path = create_hot_path_redis(settings.redis, redis) if redis is not None else None
    probes: list[DependencyProbe] = [DatabaseProbe(engine)]
    probes.append(RedisProbe(redis) if redis is not None else InProcessLimiterProbe())
    metrics = Metrics()
    rate_limits = build_rate_limiters(settings, redis, metrics, hot_path)
    probes.append(RateLimitProbe(rate_limits, FailurePolicy(settings.rate_limit.api_failure_policy.value)))
    http_client = httpx.AsyncClient(
        timeout=httpx.Timeout(connect=5.0, read=60.0, write=30.0, pool=5.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )
    session_factory = create_session_factory(engine)
    llm = settings.llm
    catalog = build_model_catalog(settings, metrics)
    probes.append(ModelRoutingProbe(catalog))
    readiness = CheckReadiness(probes)
    registry = tools if tools is not None else build_tool_registry(settings.tools)
    usage_recorder = BatchingUsageRecorder(
        session_factory,
        batch_size=llm.usage_batch_size,
        flush_interval=llm.usage_flush_interval_ms / 1000,
        max_queue=llm.usage_queue_size,
        on_dropped=metrics.usage_records_dropped.inc,
        on_written=metrics.usage_records_written.inc,
    )
    return Container(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        redis=redis,
        redis_hot_path=hot_path,
        http_client=http_client,
        metrics=metrics,
        readiness=readiness,
        drain=Drain(readiness, settings.bootstrap.shutdown_drain_seconds),
        runtime_metrics=RuntimeMetrics(metrics.registry),
        tools=registry,
        identity=build_identity(
            settings, lambda: SqlAlchemyUnitOfWork(session_factory), redis, metrics, hot_path=hot_path
        ),
        model_catalog=catalog,
        usage_recorder=usage_recorder,
        rate_limits=rate_limits,
        agent=build_agent_services(
            settings.agent,
            lambda: SqlAlchemyUnitOfWork(session_factory),
            catalog,
            MeteredUsageRecorder(usage_recorder, metrics),
            registry,
            rate_limits=rate_limits,
            default_max_tokens=settings.rate_limit.default_max_tokens,
            tool_runs=MeteredToolRuns(metrics, registry),
        ),
    )


def upstream_policy(settings: Settings) -> UpstreamPolicy:
    llm = settings.llm
    return UpstreamPolicy(
        connect_timeout=llm.llm_connect_timeout_seconds,
        first_byte_timeout=llm.llm_first_byte_timeout_seconds,
        idle_timeout=llm.llm_idle_timeout_seconds,
        total_timeout=llm.llm_total_timeout_seconds,
        max_retries=llm.llm_max_retries,
        max_retry_wait=llm.llm_max_retry_wait_seconds,
        max_request_bytes=llm.llm_max_request_bytes,
        max_response_bytes=llm.llm_max_response_bytes,
        max_connections=llm.llm_max_connections,
        transport=llm.llm_http_transport,
    )


def build_model_catalog(settings: Settings, metrics: Metrics) -> StaticModelCatalog:
    """Model routing from MODELS_CONFIG, else the LLM_* shorthand, else the demo provider."""
    llm = settings.llm

    def client_factory(name: str, base_url: str, api_key: str | None, policy: UpstreamPolicy) -> OpenAICompatibleClient:
        return OpenAICompatibleClient(
            name,
            base_url,
            api_key,
            policy,
            on_malformed_chunk=lambda upstream: metrics.upstream_malformed_chunks.labels(upstream).inc(),
            on_retry=lambda upstream: metrics.upstream_retries.labels(upstream).inc(),
        )

    return build_catalog(
        models_config=llm.models_config,
        base_url=llm.llm_base_url,
        api_key=llm.llm_api_key.get_secret_value() if llm.llm_api_key else None,
        models=llm.llm_models,
        policy=upstream_policy(settings),
        client_factory=client_factory,
    )


def build_rate_limiters(
    settings: Settings, redis: Redis | None, metrics: Metrics, hot_path: HotPathRedis | None = None
) -> RateLimiters:
    """The API and auth limiters: Redis-backed with their failure policies, else in-process.

    ``hot_path`` carries the scripts and the recovery probe's ``PING`` (redis-py's ``redis``
    when None): the probe then checks the very connection the next request will use.
    """
    limits: RateLimitSettings = settings.rate_limit
    local = InProcessRateLimiter(lease_ttl_seconds=limits.lease_ttl_seconds)
    api_keys = CallerLimitDefaults(
        limits.key_rpm, limits.key_tpm, limits.key_daily_token_budget, limits.key_max_streams
    )
    users = CallerLimitDefaults(
        limits.user_rpm, limits.user_tpm, limits.user_daily_token_budget, limits.user_max_streams
    )
    auth_defaults = AuthLimitDefaults(limits.auth_ip_rpm, limits.auth_account_rpm)
    proxies = parse_trusted_proxies(limits.trusted_proxies)
    if redis is None:
        return RateLimiters(local, local, api_keys, users, auth_defaults, proxies)
    health = RedisHealth(
        hot_path if hot_path is not None else redis,
        metrics,
        probe_interval_seconds=limits.recovery_probe_seconds,
        timeout_seconds=settings.redis.socket_timeout_seconds,
    )
    shared = RedisRateLimiter(
        redis, key_prefix=settings.redis.key_prefix, lease_ttl_seconds=limits.lease_ttl_seconds, hot_path=hot_path
    )

    def resilient(name: str, policy: str) -> ResilientRateLimiter:
        return ResilientRateLimiter(shared, local, health, policy=FailurePolicy(policy), metrics=metrics, name=name)

    api = resilient("api", limits.api_failure_policy.value)
    auth = resilient("auth", limits.auth_failure_policy.value)
    return RateLimiters(api, auth, api_keys, users, auth_defaults, proxies, health)


def create_app(settings: Settings | None = None) -> Litestar:
    """The ASGI application (uvicorn calls this as a factory in every worker)."""
    settings = settings or load_settings()
    configure_logging(settings.logging)
    return build_http_app(build_container(settings))
