"""The command line as operators use it: `migrate` on a fresh database, and the development
`serve` with no DATABASE_URL, which starts the embedded PostgreSQL and stops it on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.config import DatabaseSettings
from app.infrastructure.persistence import migrations
from app.infrastructure.persistence.database import create_engine
from app.infrastructure.persistence.embedded import find_postgres_bin_dir, free_port
from tests.support.services import PostgresServer


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


async def revision_of(url: str) -> str | None:
    engine = create_engine(DatabaseSettings(url=url), url)
    try:
        return await migrations.current_revision(engine)
    finally:
        await engine.dispose()


async def test_migrate_brings_a_fresh_database_to_head(postgres_server: PostgresServer) -> None:
    url = await postgres_server.create_database("agent_api_cli")
    try:
        env = {**os.environ, "APP_ENV": "development", "DATABASE_URL": url}
        result = await asyncio.to_thread(run_cli, "migrate", env=env)
        assert result.returncode == 0, result.stderr
        head = migrations.head_revision()
        assert f"database schema at {head}" in result.stdout
        assert await revision_of(url) == head
    finally:
        await postgres_server.drop_database(url)


def _postgres_binaries_present() -> bool:
    try:
        find_postgres_bin_dir()
    except RuntimeError:
        return False
    return True


@pytest.mark.skipif(not _postgres_binaries_present(), reason="needs PostgreSQL server binaries (initdb, pg_ctl)")
def test_development_serve_runs_on_the_embedded_postgres_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "JWT_SECRET", "API_KEY_PEPPER")
    }
    env.update(APP_ENV="development", PORT=str(port), AGENT_API_LOCAL_DIR=str(tmp_path), LOG_LEVEL="WARNING")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "server did not answer /health within 60 s"
            time.sleep(0.1)
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).json()
        assert ready["checks"]["database"] == "ok"
        assert ready["checks"]["redis"] == "not configured (in-process limiter)"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "starting the embedded PostgreSQL" in output
    assert f"serving on http://127.0.0.1:{port}" in output
    assert "stopping the embedded PostgreSQL" in output
    pg_port = int(output.split("starting the embedded PostgreSQL")[1].split("127.0.0.1:")[1].split()[0])
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{pg_port}", timeout=1)  # nothing listens there any more
