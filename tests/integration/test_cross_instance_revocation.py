"""Two application instances sharing Postgres and Redis: a revocation on one is enforced by the
other within a second (in fact within REVOCATION_CACHE_SECONDS, 0.25 s by default: an instance
reuses a revocation read from Redis that long), and at once on the instance that made it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.config import Settings
from tests.conftest import AppFactory
from tests.support.identity import admin_session, bearer, issue_key, new_user_session, whoami, with_admin

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def instances(settings: Settings, app_factory: AppFactory) -> AsyncIterator[tuple[Client, Client]]:
    shared = with_admin(settings)  # same database, same Redis and key prefix, same secrets
    async with (
        AsyncTestClient(app=app_factory(shared, [whoami])) as first,
        AsyncTestClient(app=app_factory(shared, [whoami])) as second,
    ):
        assert first.app is not second.app
        yield first, second


async def refused_within_a_second(client: Client, credential: str) -> bool:
    deadline = time.monotonic() + 1.0
    while True:
        response = await client.get("/v1/test/whoami", headers=bearer(credential))
        if response.status_code == 401:
            return True
        if time.monotonic() > deadline:
            return False


async def test_logout_on_one_instance_is_enforced_on_the_other(instances: tuple[Client, Client]) -> None:
    first, second = instances
    session = await new_user_session(first)
    assert (await second.get("/v1/test/whoami", headers=bearer(session["access_token"]))).status_code == 200
    assert (await first.post("/v1/auth/logout", headers=bearer(session["access_token"]))).status_code == 204
    assert await refused_within_a_second(second, session["access_token"])


async def test_revoked_key_is_refused_on_the_other_instance(instances: tuple[Client, Client]) -> None:
    first, second = instances
    admin = await admin_session(first)
    key = await issue_key(first, admin["access_token"])
    assert (await second.get("/v1/test/whoami", headers=bearer(key["key"]))).status_code == 200  # cached on B
    assert (await first.delete(f"/v1/api-keys/{key['id']}", headers=bearer(admin["access_token"]))).status_code == 204
    assert await refused_within_a_second(second, key["key"])


async def test_deactivation_on_one_instance_is_enforced_on_the_other(instances: tuple[Client, Client]) -> None:
    first, second = instances
    admin = await admin_session(first)
    user: dict[str, Any] = await new_user_session(first)
    key = await issue_key(first, admin["access_token"], user_id=user["user"]["id"])
    for credential in (user["access_token"], key["key"]):
        assert (await second.get("/v1/test/whoami", headers=bearer(credential))).status_code == 200
    patched = await first.patch(
        f"/v1/admin/users/{user['user']['id']}", json={"is_active": False}, headers=bearer(admin["access_token"])
    )
    assert patched.status_code == 200
    assert await refused_within_a_second(second, user["access_token"])
    assert await refused_within_a_second(second, key["key"])


async def test_scope_change_on_one_instance_is_seen_by_the_other(instances: tuple[Client, Client]) -> None:
    first, second = instances
    admin = await admin_session(first)
    key = await issue_key(first, admin["access_token"], allowed_models=["old"])
    assert (await second.get("/v1/test/whoami", headers=bearer(key["key"]))).json()["allowed_models"] == ["old"]
    await first.patch(
        f"/v1/api-keys/{key['id']}", json={"allowed_models": ["new"]}, headers=bearer(admin["access_token"])
    )
    assert (await first.get("/v1/test/whoami", headers=bearer(key["key"]))).json()["allowed_models"] == ["new"]
    deadline = time.monotonic() + 1.0
    while (await second.get("/v1/test/whoami", headers=bearer(key["key"]))).json()["allowed_models"] != ["new"]:
        assert time.monotonic() < deadline, "the other instance still used the old scopes after 1 s"
