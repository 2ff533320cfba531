"""The composition root: builds every adapter from settings and hands them to the HTTP app.

Nothing else constructs adapters. Tests build settings (or a container with fakes) and call
the same functions, so what runs in tests is what runs in production.
"""

from __future__ import annotations

import httpx
from litestar import Litestar

from app.application.health import CheckReadiness
from app.application.ports import DependencyProbe
from app.config import Settings, load_settings
from app.infrastructure.container import Container, build_identity
from app.infrastructure.http.app import build_http_app
from app.infrastructure.llm.openai_client import OpenAICompatibleClient, UpstreamPolicy
from app.infrastructure.llm.routing import ModelRoutingProbe, StaticModelCatalog, build_catalog
from app.infrastructure.llm.usage_recorder import BatchingUsageRecorder
from app.infrastructure.observability.logging import configure_logging
from app.infrastructure.observability.metrics import Metrics
from app.infrastructure.persistence.database import DatabaseProbe, create_engine, create_session_factory
from app.infrastructure.persistence.unit_of_work import SqlAlchemyUnitOfWork
from app.infrastructure.redis_client import InProcessLimiterProbe, RedisProbe, create_redis
from app.infrastructure.tools.registry import build_tool_registry


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
    metrics = Metrics()
    session_factory = create_session_factory(engine)
    llm = settings.llm
    catalog = build_model_catalog(settings, metrics)
    probes.append(ModelRoutingProbe(catalog))
    return Container(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        redis=redis,
        http_client=http_client,
        metrics=metrics,
        readiness=CheckReadiness(probes),
        tools=build_tool_registry(settings.tools),
        identity=build_identity(settings, lambda: SqlAlchemyUnitOfWork(session_factory), redis, metrics),
        model_catalog=catalog,
        usage_recorder=BatchingUsageRecorder(
            session_factory,
            batch_size=llm.usage_batch_size,
            flush_interval=llm.usage_flush_interval_ms / 1000,
            max_queue=llm.usage_queue_size,
            on_dropped=metrics.usage_records_dropped.inc,
            on_written=metrics.usage_records_written.inc,
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


def create_app(settings: Settings | None = None) -> Litestar:
    """The ASGI application (uvicorn calls this as a factory in every worker)."""
    settings = settings or load_settings()
    configure_logging(settings.logging)
    return build_http_app(build_container(settings))
