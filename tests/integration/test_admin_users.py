"""Admin routes: refused to non-admins, listing and patching users, deactivation taking effect at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.config import Settings
from tests.conftest import AppFactory
from tests.support.identity import (
    ADMIN_EMAIL,
    PASSWORD,
    admin_session,
    bearer,
    issue_key,
    new_user_session,
    whoami,
    with_admin,
)

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def client(settings: Settings, app_factory: AppFactory) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app_factory(with_admin(settings), [whoami])) as test_client:
        yield test_client


@pytest.fixture
async def admin(client: Client) -> dict[str, Any]:
    return await admin_session(client)


async def test_every_admin_route_refuses_non_admins(client: Client, admin: dict[str, Any]) -> None:
    user = await new_user_session(client)
    own_key = await issue_key(client, admin["access_token"], user_id=user["user"]["id"])
    some_id = admin["user"]["id"]
    routes = [
        ("GET", "/v1/admin/users", None),
        ("PATCH", f"/v1/admin/users/{some_id}", {"role": "user"}),
        ("PATCH", f"/v1/admin/users/{user['user']['id']}", {"role": "admin"}),
        ("POST", "/v1/api-keys", {"name": "mine"}),
        ("PATCH", f"/v1/api-keys/{own_key['id']}", {"rpm_limit": 1_000_000}),
    ]
    for credential in (user["access_token"], own_key["key"]):
        for method, path, body in routes:
            response = await client.request(method, path, json=body, headers=bearer(credential))
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"] == {
                "message": "This action requires the admin role.",
                "type": "permission_error",
                "param": None,
                "code": "insufficient_role",
            }
    me = await client.get("/v1/auth/me", headers=bearer(user["access_token"]))
    assert me.json()["user"]["role"] == "user"
    # Without any credential: 401, not 403.
    assert (await client.get("/v1/admin/users")).status_code == 401


async def test_admin_lists_users_without_secrets(client: Client, admin: dict[str, Any]) -> None:
    await new_user_session(client)
    page = await client.get("/v1/admin/users?limit=100", headers=bearer(admin["access_token"]))
    assert page.status_code == 200
    body = page.json()
    assert body["object"] == "list"
    assert ADMIN_EMAIL in [u["email"] for u in body["data"]]
    assert "password" not in page.text
    assert "$argon2" not in page.text
    assert (await client.get("/v1/admin/users?limit=0", headers=bearer(admin["access_token"]))).status_code == 400


async def test_promotion_takes_effect_on_live_tokens(client: Client, admin: dict[str, Any]) -> None:
    user = await new_user_session(client)
    token = user["access_token"]
    assert (await client.get("/v1/admin/users", headers=bearer(token))).status_code == 403
    promoted = await client.patch(
        f"/v1/admin/users/{user['user']['id']}", json={"role": "admin"}, headers=bearer(admin["access_token"])
    )
    assert promoted.status_code == 200
    assert promoted.json()["role"] == "admin"
    assert (await client.get("/v1/admin/users", headers=bearer(token))).status_code == 200


async def test_deactivation_stops_sessions_and_keys_at_once(client: Client, admin: dict[str, Any]) -> None:
    user = await new_user_session(client)
    key = await issue_key(client, admin["access_token"], user_id=user["user"]["id"])
    for credential in (user["access_token"], key["key"]):
        assert (await client.get("/v1/test/whoami", headers=bearer(credential))).status_code == 200  # now cached

    patched = await client.patch(
        f"/v1/admin/users/{user['user']['id']}", json={"is_active": False}, headers=bearer(admin["access_token"])
    )
    assert patched.status_code == 200
    assert patched.json()["is_active"] is False
    for credential in (user["access_token"], key["key"]):
        refused = await client.get("/v1/test/whoami", headers=bearer(credential))
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
    assert (await client.post("/v1/auth/refresh", json={"refresh_token": user["refresh_token"]})).status_code == 401
    login = await client.post("/v1/auth/login", json={"email": user["user"]["email"], "password": PASSWORD})
    assert login.status_code == 403
    assert login.json()["error"]["code"] == "account_disabled"

    # Re-activated: the key works again (old sessions stay ended), and so does signing in.
    await client.patch(
        f"/v1/admin/users/{user['user']['id']}", json={"is_active": True}, headers=bearer(admin["access_token"])
    )
    assert (await client.get("/v1/test/whoami", headers=bearer(key["key"]))).status_code == 200
    assert (await client.get("/v1/test/whoami", headers=bearer(user["access_token"]))).status_code == 401
    login = await client.post("/v1/auth/login", json={"email": user["user"]["email"], "password": PASSWORD})
    assert login.status_code == 200


async def test_admin_cannot_lock_themselves_out_and_unknown_user_is_404(client: Client, admin: dict[str, Any]) -> None:
    own = f"/v1/admin/users/{admin['user']['id']}"
    for body in ({"role": "user"}, {"is_active": False}):
        response = await client.patch(own, json=body, headers=bearer(admin["access_token"]))
        assert response.status_code == 400
    missing = await client.patch(
        f"/v1/admin/users/{uuid.uuid4()}", json={"role": "admin"}, headers=bearer(admin["access_token"])
    )
    assert missing.status_code == 404
    bad_role = await client.patch(own, json={"role": "root"}, headers=bearer(admin["access_token"]))
    assert bad_role.status_code == 400


async def test_logout_with_an_api_key_is_a_clear_400(client: Client, admin: dict[str, Any]) -> None:
    key = await issue_key(client, admin["access_token"])
    response = await client.post("/v1/auth/logout", headers=bearer(key["key"]))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_a_session"
