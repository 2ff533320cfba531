"""API keys: issue, list, read, update, revoke; the hot path (no Postgres) and outages."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.config import DatabaseSettings, Settings
from app.infrastructure.security.api_keys import checksum
from tests.conftest import AppFactory
from tests.support.identity import (
    admin_session,
    bearer,
    counting_queries,
    issue_key,
    new_user_session,
    whoami,
    with_admin,
)
from tests.support.tcp_proxy import TcpProxy

Client = AsyncTestClient[Litestar]
KEY_FIELDS = {
    "id",
    "name",
    "user_id",
    "prefix",
    "allowed_models",
    "allowed_tools",
    "rpm_limit",
    "tpm_limit",
    "daily_token_budget",
    "expires_at",
    "last_used_at",
    "revoked_at",
    "created_at",
}


@pytest.fixture
async def client(settings: Settings, app_factory: AppFactory) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app_factory(with_admin(settings), [whoami])) as test_client:
        yield test_client


@pytest.fixture
async def admin(client: Client) -> dict[str, Any]:
    return await admin_session(client)


async def test_issue_shows_the_secret_once_and_never_a_hash(client: Client, admin: dict[str, Any]) -> None:
    user = await new_user_session(client)
    created = await issue_key(
        client,
        admin["access_token"],
        user_id=user["user"]["id"],
        name="ci",
        allowed_models=["gpt-4o-mini"],
        allowed_tools=[],
        rpm_limit=60,
        tpm_limit=10_000,
        daily_token_budget=100_000,
        expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat(),
    )
    assert set(created) == KEY_FIELDS | {"key"}
    assert created["key"].startswith(created["prefix"] + "_")
    assert created["user_id"] == user["user"]["id"]
    assert created["allowed_tools"] == []
    assert created["rpm_limit"] == 60

    listed = await client.get("/v1/api-keys", headers=bearer(admin["access_token"]))
    one = await client.get(f"/v1/api-keys/{created['id']}", headers=bearer(user["access_token"]))
    for response in (listed, one):
        assert response.status_code == 200
        text = json.dumps(response.json())
        assert created["key"] not in text
        assert "hash" not in text
        assert '"key"' not in text
    assert set(one.json()) == KEY_FIELDS

    # The key authenticates as its user, narrowed by its scopes.
    me = await client.get("/v1/auth/me", headers={"X-API-Key": created["key"]})
    assert me.status_code == 200
    assert me.json()["user"]["id"] == user["user"]["id"]
    assert me.json()["auth"] == {
        "type": "api_key",
        "api_key_id": created["id"],
        "allowed_models": ["gpt-4o-mini"],
        "allowed_tools": [],
    }


async def test_users_see_only_their_own_keys(client: Client, admin: dict[str, Any]) -> None:
    alice = await new_user_session(client)
    bob = await new_user_session(client)
    alice_key = await issue_key(client, admin["access_token"], user_id=alice["user"]["id"])
    bob_key = await issue_key(client, admin["access_token"], user_id=bob["user"]["id"])

    listed = await client.get("/v1/api-keys", headers=bearer(alice["access_token"]))
    assert [k["id"] for k in listed.json()["data"]] == [alice_key["id"]]
    filtered = await client.get(f"/v1/api-keys?user_id={bob['user']['id']}", headers=bearer(alice["access_token"]))
    assert filtered.json()["data"] == []

    for method in ("GET", "DELETE"):
        response = await client.request(method, f"/v1/api-keys/{bob_key['id']}", headers=bearer(alice["access_token"]))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert (await client.get("/v1/auth/me", headers=bearer(bob_key["key"]))).status_code == 200

    by_admin = await client.get(f"/v1/api-keys?user_id={bob['user']['id']}", headers=bearer(admin["access_token"]))
    assert [k["id"] for k in by_admin.json()["data"]] == [bob_key["id"]]


async def test_list_is_paginated_with_an_opaque_cursor(client: Client, admin: dict[str, Any]) -> None:
    user = await new_user_session(client)
    ids = {(await issue_key(client, admin["access_token"], user_id=user["user"]["id"]))["id"] for _ in range(3)}
    seen: list[str] = []
    cursor = None
    while True:
        query = f"/v1/api-keys?user_id={user['user']['id']}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(query, headers=bearer(admin["access_token"]))).json()
        assert page["object"] == "list"
        seen += [k["id"] for k in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    bad = await client.get("/v1/api-keys?cursor=%%%", headers=bearer(admin["access_token"]))
    assert bad.status_code == 400


async def test_owner_revokes_and_the_key_is_refused(client: Client, admin: dict[str, Any]) -> None:
    user = await new_user_session(client)
    key = await issue_key(client, admin["access_token"], user_id=user["user"]["id"])
    assert (await client.get("/v1/test/whoami", headers=bearer(key["key"]))).status_code == 200  # cached now
    assert (await client.delete(f"/v1/api-keys/{key['id']}", headers=bearer(user["access_token"]))).status_code == 204
    refused = await client.get("/v1/test/whoami", headers=bearer(key["key"]))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    shown = (await client.get(f"/v1/api-keys/{key['id']}", headers=bearer(user["access_token"]))).json()
    assert shown["revoked_at"] is not None


async def test_expired_key_is_refused(client: Client, admin: dict[str, Any]) -> None:
    key = await issue_key(client, admin["access_token"])
    assert (await client.get("/v1/test/whoami", headers=bearer(key["key"]))).status_code == 200
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    patched = await client.patch(
        f"/v1/api-keys/{key['id']}", json={"expires_at": past}, headers=bearer(admin["access_token"])
    )
    assert patched.status_code == 200
    refused = await client.get("/v1/test/whoami", headers=bearer(key["key"]))
    assert refused.status_code == 401
    assert "expired" in refused.json()["error"]["message"]
    in_past = await client.post(
        "/v1/api-keys", json={"name": "x", "expires_at": past}, headers=bearer(admin["access_token"])
    )
    assert in_past.status_code == 400


async def test_patch_changes_scopes_everywhere(client: Client, admin: dict[str, Any]) -> None:
    key = await issue_key(client, admin["access_token"], allowed_models=["a"])
    assert (await client.get("/v1/test/whoami", headers=bearer(key["key"]))).json()["allowed_models"] == ["a"]
    patched = await client.patch(
        f"/v1/api-keys/{key['id']}",
        json={"allowed_models": ["b", "c"], "name": "renamed", "rpm_limit": None},
        headers=bearer(admin["access_token"]),
    )
    assert patched.status_code == 200
    assert patched.json()["name"] == "renamed"
    assert (await client.get("/v1/test/whoami", headers=bearer(key["key"]))).json()["allowed_models"] == ["b", "c"]
    unknown_field = await client.patch(
        f"/v1/api-keys/{key['id']}", json={"user_id": admin["user"]["id"]}, headers=bearer(admin["access_token"])
    )
    assert unknown_field.status_code == 400


async def test_malformed_keys_are_refused_with_no_lookup(client: Client, admin: dict[str, Any]) -> None:
    key = (await issue_key(client, admin["access_token"]))["key"]
    body = key[:-6]
    flipped_char = "A" if key[10] != "A" else "B"
    candidates = [
        key[:-1] + ("0" if key[-1] != "0" else "1"),  # wrong checksum
        key[:10] + flipped_char + key[11:],  # mistyped character: the checksum no longer matches
        key[:-2],  # truncated
        "sk-" + "a" * 10,
        "sk-proj-abcdefghijklmnop",  # an OpenAI key pasted by mistake
    ]
    # A well-formed key with a correct checksum but an unknown prefix does need one lookup (control).
    unknown_prefix = "sk-ZZZZZZZZZZZZ" + body[15:]
    engine = client.app.state.container.engine
    with counting_queries(engine) as counter:
        for candidate in candidates:
            response = await client.get("/v1/test/whoami", headers={"X-API-Key": candidate})
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
        assert counter.count == 0
        control = await client.get("/v1/test/whoami", headers={"X-API-Key": unknown_prefix + checksum(unknown_prefix)})
        assert control.status_code == 401
        assert counter.count > 0


async def test_a_known_key_costs_no_database_query(client: Client, admin: dict[str, Any]) -> None:
    key = (await issue_key(client, admin["access_token"]))["key"]
    assert (await client.get("/v1/test/whoami", headers=bearer(key))).status_code == 200
    engine = client.app.state.container.engine
    with counting_queries(engine) as counter:
        for _ in range(5):
            assert (await client.get("/v1/test/whoami", headers=bearer(key))).status_code == 200
    # The only statement is the background `last_used_at` stamp (not in the request path),
    # written at most once per key per minute.
    behind = [s for s in counter.statements if s.startswith("UPDATE api_keys SET last_used_at")]
    assert [s for s in counter.statements if s not in behind] == []
    assert len(behind) <= 1


async def test_last_used_at_is_written_behind_the_request(client: Client, admin: dict[str, Any]) -> None:
    key = await issue_key(client, admin["access_token"])
    assert key["last_used_at"] is None
    assert (await client.get("/v1/test/whoami", headers=bearer(key["key"]))).status_code == 200
    for _ in range(50):
        shown = (await client.get(f"/v1/api-keys/{key['id']}", headers=bearer(admin["access_token"]))).json()
        if shown["last_used_at"] is not None:
            break
        await asyncio.sleep(0.05)
    assert shown["last_used_at"] is not None


async def test_admin_rights_through_a_key_only_for_admins(client: Client, admin: dict[str, Any]) -> None:
    user = await new_user_session(client)
    admin_key = await issue_key(client, admin["access_token"])
    user_key = await issue_key(client, admin["access_token"], user_id=user["user"]["id"])
    assert (await client.get("/v1/admin/users", headers=bearer(admin_key["key"]))).status_code == 200
    refused = await client.get("/v1/admin/users", headers=bearer(user_key["key"]))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_role"


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    credentials, _, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{credentials + '@' if credentials else ''}127.0.0.1:{port}").geturl()


async def test_cached_key_works_with_postgres_down_and_uncached_gets_503(
    settings: Settings, app_factory: AppFactory, database_url: str
) -> None:
    proxy = TcpProxy(*_host_port(database_url))
    proxy.start()
    database = DatabaseSettings(url=_through(database_url, proxy.port), auto_migrate=False, connect_timeout_seconds=1)
    proxied = with_admin(settings).model_copy(update={"database": database})
    try:
        async with AsyncTestClient(app=app_factory(proxied, [whoami])) as client:
            admin = await admin_session(client)
            cached = (await issue_key(client, admin["access_token"]))["key"]
            uncached = (await issue_key(client, admin["access_token"]))["key"]
            assert (await client.get("/v1/test/whoami", headers=bearer(cached))).status_code == 200

            proxy.stop()
            for _ in range(3):
                assert (await client.get("/v1/test/whoami", headers=bearer(cached))).status_code == 200
            down = await client.get("/v1/test/whoami", headers=bearer(uncached))
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "database_unavailable"

            proxy.start()
            assert (await client.get("/v1/test/whoami", headers=bearer(uncached))).status_code == 200
    finally:
        proxy.close()


async def test_no_secret_or_hash_in_any_response(client: Client, admin: dict[str, Any], settings: Settings) -> None:
    """Walk every identity endpoint; only the 201 of key creation ever shows a key."""
    import hashlib
    import hmac

    responses: list[Any] = []
    email = f"sweep-{uuid.uuid4().hex[:8]}@example.com"
    responses.append(await client.post("/v1/auth/register", json={"email": email, "password": "sweep password"}))
    session = await client.post("/v1/auth/login", json={"email": email, "password": "sweep password"})
    responses.append(session)
    first_refresh = session.json()["refresh_token"]
    refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": first_refresh})
    responses.append(refreshed)
    token = refreshed.json()["access_token"]
    user_id = session.json()["user"]["id"]
    created = await client.post(
        "/v1/api-keys", json={"name": "sweep", "user_id": user_id}, headers=bearer(admin["access_token"])
    )
    secret = created.json()["key"]
    key_id = created.json()["id"]
    admin_headers = bearer(admin["access_token"])
    responses += [
        await client.get("/v1/auth/me", headers=bearer(token)),
        await client.get("/v1/auth/me", headers=bearer(secret)),
        await client.get("/v1/api-keys", headers=admin_headers),
        await client.get("/v1/api-keys", headers=bearer(token)),
        await client.get(f"/v1/api-keys/{key_id}", headers=admin_headers),
        await client.patch(f"/v1/api-keys/{key_id}", json={"name": "renamed"}, headers=admin_headers),
        await client.get("/v1/admin/users?limit=100", headers=admin_headers),
        await client.patch(f"/v1/admin/users/{user_id}", json={"role": "user"}, headers=admin_headers),
        await client.delete(f"/v1/api-keys/{key_id}", headers=admin_headers),
    ]
    forbidden = [
        secret,
        hmac.new(settings.api_key_pepper.encode(), secret.encode(), hashlib.sha256).hexdigest(),
        hashlib.sha256(first_refresh.encode()).hexdigest(),
        hashlib.sha256(refreshed.json()["refresh_token"].encode()).hexdigest(),
        "$argon2",
        "password",
        "key_hash",
        "token_hash",
    ]
    for response in responses:
        assert response.status_code < 300, response.text
        for needle in forbidden:
            assert needle not in response.text, (response.request.url, needle)
    assert "$argon2" not in created.text
    assert "key_hash" not in created.text


def _with_pepper(settings: Settings, pepper: str, previous: list[str]) -> Settings:
    from pydantic import SecretStr

    from app.config import AuthSettings

    auth = AuthSettings(
        argon2_memory_kib=64, argon2_time_cost=1, api_key_previous_peppers=[SecretStr(p) for p in previous]
    )
    security = settings.security.model_copy(update={"api_key_pepper": SecretStr(pepper)})
    groups = {name: getattr(settings, name) for name in Settings.model_fields}
    return Settings(**{**groups, "auth": auth, "security": security})  # new object: no cached pepper


async def test_pepper_rotation_rehashes_keys_on_use(settings: Settings, app_factory: AppFactory) -> None:
    old, new = "old-pepper-" + uuid.uuid4().hex * 2, "new-pepper-" + uuid.uuid4().hex * 2
    base = with_admin(settings)
    async with AsyncTestClient(app=app_factory(_with_pepper(base, old, []), [whoami])) as client:
        admin = await admin_session(client)
        key = (await issue_key(client, admin["access_token"]))["key"]
    async with AsyncTestClient(app=app_factory(_with_pepper(base, new, []), [whoami])) as client:
        assert (await client.get("/v1/test/whoami", headers=bearer(key))).status_code == 401  # control
    async with AsyncTestClient(app=app_factory(_with_pepper(base, new, [old]), [whoami])) as client:
        assert (await client.get("/v1/test/whoami", headers=bearer(key))).status_code == 200
    async with AsyncTestClient(app=app_factory(_with_pepper(base, new, []), [whoami])) as client:
        assert (await client.get("/v1/test/whoami", headers=bearer(key))).status_code == 200  # re-hashed


async def test_a_known_access_token_costs_no_database_query(client: Client) -> None:
    session = await new_user_session(client)
    assert (await client.get("/v1/test/whoami", headers=bearer(session["access_token"]))).status_code == 200
    with counting_queries(client.app.state.container.engine) as counter:
        for _ in range(5):
            assert (await client.get("/v1/test/whoami", headers=bearer(session["access_token"]))).status_code == 200
    assert counter.statements == []
