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
        tools=build_tool_registry(settings.tools),
        identity=build_identity(settings, lambda: SqlAlchemyUnitOfWork(session_factory), redis, metrics),
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """The ASGI application (uvicorn calls this as a factory in every worker)."""
    settings = settings or load_settings()
    configure_logging(settings.logging)
    return build_http_app(build_container(settings))
