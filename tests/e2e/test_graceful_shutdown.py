"""SIGTERM with a stream in flight, on the real server process (`python -m app serve`).

Pass criteria: after SIGTERM the server takes no new connections (readiness is gone at
once); the running stream keeps flowing until the drain deadline, then ends with an in-band
`shutting_down` error chunk and `[DONE]`; the upstream request is cancelled; the process
exits with status 0 before the deadline plus 2 s; the stream's usage record was flushed to
Postgres on the way out."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml

from app.infrastructure.persistence.embedded import free_port
from tests.support.fake_upstream import FakeUpstream, UpstreamScript
from tests.support.identity import ADMIN_EMAIL, ADMIN_PASSWORD

DRAIN_SECONDS = 2.0


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    # 40 words, 0.2 s apart: an 8 s stream, far longer than the drain deadline.
    fake.reset(UpstreamScript(words=[f"w{i}" for i in range(40)], chunk_delay=0.2))
    yield fake
    fake.close()


def start_server(database_url: str, redis_url: str, models: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "APP_ENV": "test",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": f"shutdown-{secrets.token_hex(4)}:",
        "JWT_SECRET": secrets.token_urlsafe(48),
        "API_KEY_PEPPER": secrets.token_urlsafe(48),
        "MODELS_CONFIG": str(models),
        "SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
        "BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "ARGON2_MEMORY_KIB": "1024",
        "LOG_LEVEL": "INFO",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app", "serve"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


async def usage_statuses(database_url: str, user_id: str) -> list[str]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        # Only this test routes to "slow-model" (the admin user is shared with other tests).
        rows = await conn.fetch(
            "SELECT status FROM usage_records WHERE user_id = $1::uuid AND model = 'slow-model'", user_id
        )
    finally:
        await conn.close()
    return [row["status"] for row in rows]


def assert_not_ready(url: str) -> None:
    """Right after SIGTERM: the connection is refused (listener closed) or, inside uvicorn's
    100 ms polling window, answered 503 with readiness marked draining."""
    try:
        response = httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return
    assert response.status_code == 503, response.text
    assert response.json()["checks"]["shutdown"] == "draining"


def test_sigterm_drains_the_stream_then_exits_zero(
    database_url: str, redis_url: str, upstream: FakeUpstream, tmp_path: Path
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(
        yaml.safe_dump(
            {
                "upstreams": {"fake": {"base_url": upstream.base_url, "api_key": "sk-upstream"}},
                "models": [{"id": "slow-model", "upstream": "fake"}],
            }
        )
    )
    port = free_port()
    log = tmp_path / "server.log"
    process = start_server(database_url, redis_url, models, port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        login = httpx.post(f"{base}/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).json()
        headers = {"Authorization": f"Bearer {login['access_token']}"}
        body = {"model": "slow-model", "stream": True, "messages": [{"role": "user", "content": "talk"}]}

        lines: list[str] = []
        signalled_at = 0.0
        with (
            httpx.Client(timeout=30) as http,
            http.stream("POST", f"{base}/v1/chat/completions", json=body, headers=headers) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                lines.append(line)
                if len(lines) == 3:
                    process.send_signal(signal.SIGTERM)
                    signalled_at = time.monotonic()
                    assert_not_ready(f"{base}/ready")
        ended_at = time.monotonic()
        exit_code = process.wait(timeout=DRAIN_SECONDS + 10)
        exited_at = time.monotonic()
    finally:
        if process.poll() is None:
            process.kill()

    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2].removeprefix("data: "))
    assert error["error"]["code"] == "shutting_down", lines[-3:]
    content_chunks = [json.loads(line[6:]) for line in lines[:-2]]
    assert len(content_chunks) > 3, "the stream kept flowing after SIGTERM, until the deadline"
    assert len(content_chunks) < 40, "the stream was ended at the deadline, not run to its end"
    assert DRAIN_SECONDS - 0.5 <= ended_at - signalled_at <= DRAIN_SECONDS + 1.5
    assert exit_code == 0, log.read_text()[-2000:]
    assert exited_at - signalled_at <= DRAIN_SECONDS + 2
    assert upstream.wait_for(lambda: upstream.disconnects >= 1, timeout=2), "the upstream request was not cancelled"
    statuses = asyncio.run(usage_statuses(database_url, login["user"]["id"]))
    assert len(statuses) == 1, statuses
    assert "shutdown_draining" in log.read_text()
