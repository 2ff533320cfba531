"""Shared fixtures: real Postgres and Redis for the run, a migrated database, app factories."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.config import (
    AuthSettings,
    DatabaseSettings,
    Environment,
    LoggingSettings,
    RedisSettings,
    SecuritySettings,
    ServerSettings,
    Settings,
)
from app.infrastructure.observability.logging import configure_logging
from app.infrastructure.persistence import migrations
from app.infrastructure.persistence.database import create_engine
from tests.support.services import PostgresServer, RedisServer, spawn_redis, start_postgres, start_redis


@pytest.fixture(scope="session", autouse=True)
def _structured_logging() -> None:
    """Log exactly as production does (structlog through the standard library)."""
    configure_logging(LoggingSettings(level="INFO", format="json"))


_SERVICES: dict[str, Any] = {}


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    _announce(f"postgres: {server.source}")
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A throwaway Redis of this test's own, to stop, pause, restart or flush (never the shared one)."""
    server = spawn_redis()
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)  # a paused server cannot stop
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    _announce(f"redis: {server.source}")
    yield server
    server.stop()


def _announce(line: str) -> None:
    """Say which real service this run uses (shown in the terminal summary)."""
    _SERVICES[line.split(":", maxsplit=1)[0]] = line


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _SERVICES.values():
        terminalreporter.write_line(f"used {line}")


async def _migrate(url: str) -> None:
    engine = create_engine(DatabaseSettings(url=url), url)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for this run, built by the Alembic migrations (never create_all)."""
    url = asyncio.run(postgres_server.create_database())
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(postgres_server.drop_database(url))


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


def make_settings(database_url: str, redis_url: str | None, **overrides: Any) -> Settings:
    """Test settings: real services, strong random secrets, a Redis key prefix of its own."""
    groups: dict[str, Any] = {
        "app_env": Environment.TEST,
        "database": DatabaseSettings(url=database_url, auto_migrate=False, pool_timeout_seconds=2.0),
        # 1 s, not the production 0.25 s: a loaded 2-core CI machine must not turn slow answers
        # into "Redis down" (the auth limiter's policy is closed: a 503) in tests about other things.
        "redis": RedisSettings(url=redis_url, key_prefix=f"test-{uuid.uuid4().hex[:8]}:", socket_timeout_seconds=1.0),
        "security": SecuritySettings(jwt_secret=secrets.token_urlsafe(48), api_key_pepper=secrets.token_urlsafe(48)),
        "logging": LoggingSettings(level="WARNING", format="json"),
        # Cheap argon2 parameters: the tests exercise the logic, not the cost.
        "auth": AuthSettings(argon2_memory_kib=64, argon2_time_cost=1),
        # The collector left as it is: a test process starts hundreds of applications, and each
        # start-up's full collection before the freeze cost the suite a third of its time. The
        # tuning has tests of its own (test_http_basics.py), and every server process of the
        # end-to-end tests runs it as production does.
        "server": ServerSettings(gc_young_threshold=0),
    }
    groups.update(overrides)
    return Settings(**groups)


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url, redis_url)


AppFactory = Callable[..., Litestar]


@pytest.fixture
def app_factory() -> AppFactory:
    """Build the real app the way production does (bootstrap), optionally with test-only routes."""
    from app.bootstrap import build_container
    from app.infrastructure.http.app import build_http_app

    def factory(settings: Settings, extra_route_handlers: list[Any] | None = None) -> Litestar:
        return build_http_app(build_container(settings), extra_route_handlers or [])

    return factory


@pytest.fixture
async def client(settings: Settings, app_factory: AppFactory) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app_factory(settings)) as test_client:
        yield test_client
