"""Postgres and Redis failing under the real app. Each test names its pass criterion."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.testing import AsyncTestClient

from app.config import DatabaseSettings, RedisSettings, Settings
from app.infrastructure.container import Container
from tests.conftest import AppFactory
from tests.support.identity import ADMIN_EMAIL, ADMIN_PASSWORD, admin_session, bearer, issue_key, with_admin
from tests.support.services import spawn_redis
from tests.support.tcp_proxy import TcpProxy
from tests.support.threaded_server import ThreadedServer

Client = AsyncTestClient[Litestar]


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    credentials, _, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{credentials + '@' if credentials else ''}127.0.0.1:{port}").geturl()


@get("/_test/hold-connection", exclude_from_auth=True)
async def hold_connection(state: State) -> dict[str, bool]:
    """Takes a pooled connection inside the app and keeps it for 1.5 s."""
    container: Container = state.container
    async with container.engine.connect():
        await asyncio.sleep(1.5)
    return {"held": True}


async def test_pool_exhausted_is_a_503_within_the_pool_timeout(settings: Settings, app_factory: AppFactory) -> None:
    """Pass: with every pooled connection taken, a request that needs the database gets 503
    database_unavailable after about the pool timeout (0.5 s), not a hang and not a 500;
    a request that needs no database (a known JWT listing models) is unaffected."""
    database = settings.database.model_copy(update={"pool_size": 1, "max_overflow": 0, "pool_timeout_seconds": 0.5})
    server = ThreadedServer(
        app_factory(with_admin(settings.model_copy(update={"database": database})), [hold_connection])
    )
    server.start()
    try:
        await _pool_exhaustion(server.base_url)
    finally:
        server.stop()


async def _pool_exhaustion(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        login = await client.post("/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        token = login.json()["access_token"]
        assert (await client.get("/v1/models", headers=bearer(token))).status_code == 200  # caches the caller
        holder = asyncio.ensure_future(client.get("/_test/hold-connection"))
        await asyncio.sleep(0.3)  # the only connection is now held
        started = time.monotonic()
        response = await client.get("/v1/api-keys", headers=bearer(token))
        elapsed = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "database_unavailable"
        assert 0.4 <= elapsed < 1.2
        assert (await client.get("/v1/models", headers=bearer(token))).status_code == 200
        assert (await holder).json() == {"held": True}
        assert (await client.get("/v1/api-keys", headers=bearer(token))).status_code == 200


async def test_postgres_stopped_under_load_gives_503_not_500_and_recovers(
    settings: Settings, app_factory: AppFactory, database_url: str
) -> None:
    """Pass: while Postgres is cut abruptly under concurrent load, every answer is 200 or 503
    (never 500, never 401); requests that need no database (a cached API key calling the demo
    model) keep succeeding; after Postgres returns, database requests succeed again."""
    parts = urlsplit(database_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.start()
    database = DatabaseSettings(url=through(database_url, proxy.port), auto_migrate=False, connect_timeout_seconds=1)
    app = app_factory(with_admin(settings.model_copy(update={"database": database})))
    try:
        async with AsyncTestClient(app=app) as client:
            admin = (await admin_session(client))["access_token"]
            key = (await issue_key(client, admin))["key"]
            chat = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
            assert (await client.post("/v1/chat/completions", json=chat, headers=bearer(key))).status_code == 200

            async def one(i: int) -> tuple[str, int]:
                if i % 2:
                    response = await client.post("/v1/chat/completions", json=chat, headers=bearer(key))
                    return "chat", response.status_code
                return "keys", (await client.get("/v1/api-keys", headers=bearer(admin))).status_code

            proxy.stop()
            during = await asyncio.gather(*(one(i) for i in range(40)))
            counts = Counter(during)
            assert set(counts) <= {("chat", 200), ("keys", 503)}, counts
            assert counts[("chat", 200)] == 20
            proxy.start()
            deadline = time.monotonic() + 5
            while (await client.get("/v1/api-keys", headers=bearer(admin))).status_code != 200:
                assert time.monotonic() < deadline, "database requests did not recover within 5 s"
                await asyncio.sleep(0.1)
    finally:
        proxy.close()


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
async def test_redis_hung_then_back(settings: Settings, app_factory: AppFactory) -> None:
    """Pass: with Redis frozen (SIGSTOP: connections open, no answers), readiness says so within
    its probe timeout, API-key requests still get answers (no 500, no hang beyond a few socket
    timeouts), and after SIGCONT readiness is back within 5 s."""
    redis = spawn_redis()
    try:
        redis_settings = RedisSettings(url=redis.url, socket_timeout_seconds=0.25)
        app = app_factory(with_admin(settings.model_copy(update={"redis": redis_settings})))
        async with AsyncTestClient(app=app) as client:
            admin = (await admin_session(client))["access_token"]
            key = (await issue_key(client, admin))["key"]
            chat = {"model": "demo", "messages": [{"role": "user", "content": "hello"}]}
            assert (await client.post("/v1/chat/completions", json=chat, headers=bearer(key))).status_code == 200
            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                ready = await client.get("/ready")
                assert ready.status_code == 503
                assert ready.json()["checks"]["redis"].startswith("error")
                statuses: list[Any] = []
                for _ in range(5):
                    response = await client.post("/v1/chat/completions", json=chat, headers=bearer(key))
                    statuses.append(response.status_code)
                assert all(status in (200, 503) for status in statuses), statuses
                assert 200 in statuses, "a cached key with the local fallback should still be served"
                assert time.monotonic() - started < 15
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
            deadline = time.monotonic() + 5
            while (await client.get("/ready")).status_code != 200:
                assert time.monotonic() < deadline, "readiness did not recover within 5 s of Redis returning"
                await asyncio.sleep(0.2)
    finally:
        redis.stop()
