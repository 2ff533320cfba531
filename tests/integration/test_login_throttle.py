"""Login throttling per account and per client IP: in Redis, and in-process without it."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from app.config import AuthSettings, RedisSettings, Settings
from tests.conftest import AppFactory
from tests.support.identity import PASSWORD, new_email, register


def throttled(settings: Settings, *, redis: bool, per_account: int = 3, per_ip: int = 100) -> Settings:
    auth = AuthSettings(
        argon2_memory_kib=64,
        argon2_time_cost=1,
        login_max_failures_per_account=per_account,
        login_max_failures_per_ip=per_ip,
        login_failure_window_seconds=900,
    )
    update: dict[str, object] = {"auth": auth}
    if not redis:
        update["redis"] = RedisSettings(url=None)
    return settings.model_copy(update=update)


@pytest.mark.parametrize("redis", [True, False], ids=["redis", "in-process"])
async def test_account_is_throttled_after_repeated_failures(
    settings: Settings, app_factory: AppFactory, redis: bool
) -> None:
    async with AsyncTestClient(app=app_factory(throttled(settings, redis=redis))) as client:
        user = await register(client)
        for _ in range(3):
            failed = await client.post("/v1/auth/login", json={"email": user["email"], "password": "wrong password"})
            assert failed.status_code == 401
        blocked = await client.post("/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
        assert blocked.status_code == 429
        assert blocked.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(blocked.headers["Retry-After"]) <= 900
        # Another account from the same client is not affected by this account's lock.
        other = await register(client)
        assert (
            await client.post("/v1/auth/login", json={"email": other["email"], "password": PASSWORD})
        ).status_code == 200


async def test_client_ip_is_throttled_across_accounts(settings: Settings, app_factory: AppFactory) -> None:
    async with AsyncTestClient(app=app_factory(throttled(settings, redis=True, per_account=100, per_ip=4))) as client:
        user = await register(client)
        for _ in range(4):
            failed = await client.post("/v1/auth/login", json={"email": new_email(), "password": "wrong password"})
            assert failed.status_code == 401
        blocked = await client.post("/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
        assert blocked.status_code == 429
        assert "Retry-After" in blocked.headers


async def test_success_resets_the_account_counter(settings: Settings, app_factory: AppFactory) -> None:
    async with AsyncTestClient(app=app_factory(throttled(settings, redis=True))) as client:
        user = await register(client)
        for _ in range(2):
            await client.post("/v1/auth/login", json={"email": user["email"], "password": "wrong password"})
        assert (
            await client.post("/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
        ).status_code == 200
        for _ in range(2):
            await client.post("/v1/auth/login", json={"email": user["email"], "password": "wrong password"})
        assert (
            await client.post("/v1/auth/login", json={"email": user["email"], "password": PASSWORD})
        ).status_code == 200
