"""Migrations: up to head, down to base, up again, on a fresh database; the service refuses
to serve on a schema behind head."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import DatabaseSettings
from app.infrastructure.persistence import migrations
from app.infrastructure.persistence.database import create_engine
from tests.support.services import PostgresServer


def contains(exc: BaseException, kind: type[BaseException]) -> bool:
    """True when `kind` is `exc`, or inside it (exception groups, causes)."""
    if isinstance(exc, kind):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(contains(inner, kind) for inner in exc.exceptions)
    return exc.__cause__ is not None and contains(exc.__cause__, kind)


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


@pytest.fixture
async def fresh_engine(postgres_server: PostgresServer):  # type: ignore[no-untyped-def]
    url = await postgres_server.create_database("agent_api_migr")
    engine = create_engine(DatabaseSettings(url=url), url)
    yield engine
    await engine.dispose()
    await postgres_server.drop_database(url)


async def test_up_down_up(fresh_engine: AsyncEngine) -> None:
    head = migrations.head_revision()
    assert head is not None
    assert await migrations.current_revision(fresh_engine) is None

    await migrations.upgrade(fresh_engine)
    assert await migrations.current_revision(fresh_engine) == head
    assert "users" in await tables(fresh_engine)

    await migrations.downgrade(fresh_engine, "base")
    assert await migrations.current_revision(fresh_engine) is None
    assert await tables(fresh_engine) <= {"alembic_version"}

    await migrations.upgrade(fresh_engine)
    assert await migrations.current_revision(fresh_engine) == head


async def test_schema_behind_head_is_refused(fresh_engine: AsyncEngine) -> None:
    with pytest.raises(migrations.SchemaNotCurrent, match="make migrate"):
        await migrations.ensure_schema_current(fresh_engine)
    await migrations.upgrade(fresh_engine)
    await migrations.ensure_schema_current(fresh_engine)


async def test_app_will_not_start_on_an_unmigrated_database(postgres_server: PostgresServer, redis_url: str) -> None:
    from litestar.testing import AsyncTestClient

    from app.bootstrap import build_container
    from app.infrastructure.http.app import build_http_app
    from tests.conftest import make_settings

    url = await postgres_server.create_database("agent_api_stale")
    try:
        app = build_http_app(build_container(make_settings(url, redis_url)))
        with pytest.raises(BaseException) as info:  # noqa: PT011 - the lifespan wraps it in an ExceptionGroup
            async with AsyncTestClient(app=app):
                pass
        assert contains(info.value, migrations.SchemaNotCurrent), info.value
    finally:
        await postgres_server.drop_database(url)
