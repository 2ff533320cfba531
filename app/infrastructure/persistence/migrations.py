"""Run and inspect the Alembic migrations from inside the application's event loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import app as _app_package

MIGRATIONS_DIR = Path(_app_package.__file__).resolve().parent.parent / "migrations"


class SchemaNotCurrent(RuntimeError):
    """The database schema is not at the migrations' head: the service will not serve."""


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    await _run_command(engine, lambda cfg: command.upgrade(cfg, revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    await _run_command(engine, lambda cfg: command.downgrade(cfg, revision))


async def _run_command(engine: AsyncEngine, run: Callable[[Config], None]) -> None:
    def go(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        run(cfg)

    async with engine.begin() as conn:
        await conn.run_sync(go)


async def ensure_schema_current(engine: AsyncEngine) -> None:
    """Refuse to serve on a schema behind (or ahead of) the code's head revision."""
    current = await current_revision(engine)
    head = head_revision()
    if current != head:
        raise SchemaNotCurrent(
            f"database schema is at {current or 'no revision'}, the code needs {head}: run `make migrate`"
            " (or `agent-api migrate`) before starting the service"
        )
