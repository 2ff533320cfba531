"""The real server process (`agent-api serve`: uvicorn, uvloop, httptools) over real HTTP:
it starts on a migrated database, answers /health and /ready, propagates X-Request-ID, and
writes JSON log lines that carry the request id."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.infrastructure.persistence.embedded import free_port


@pytest.fixture
def server(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {
        **os.environ,
        "APP_ENV": "test",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "API_KEY_PEPPER": secrets.token_urlsafe(48),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("server did not start:\n" + log_path.read_text())
            time.sleep(0.1)
        try:
            yield base, log_path
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_serves_health_ready_and_request_ids(server: tuple[str, Path]) -> None:
    base, log_path = server
    with httpx.Client(base_url=base, timeout=5) as http:
        health = http.get("/health")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        assert health.headers["x-request-id"]

        ready = http.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "llm": "ok", "rate_limits": "ok"}

        missing = http.get("/v1/nothing-here", headers={"X-Request-ID": "e2e-trace-7"})
        assert missing.status_code == 404
        assert missing.headers["x-request-id"] == "e2e-trace-7"
        assert missing.json()["error"]["code"] == "not_found"

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        tagged = [line for line in lines if line.get("request_id") == "e2e-trace-7"]
        if tagged:
            break
        time.sleep(0.1)
    assert tagged, "no JSON log line carried the request id"
    assert tagged[0]["status"] == 404
    assert tagged[0]["path"] == "/v1/nothing-here"
    assert all("timestamp" in line and "level" in line for line in lines)
