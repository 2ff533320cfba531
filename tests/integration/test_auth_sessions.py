"""Register, login, refresh, logout and me, against real Postgres and Redis."""

from __future__ import annotations

import asyncio
import json

from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.bootstrap import build_container
from app.config import BootstrapSettings, Settings
from app.domain.errors import Unauthenticated
from tests.conftest import AppFactory
from tests.support.identity import (
    PASSWORD,
    bearer,
    login,
    new_email,
    new_user_session,
    register,
)

Client = AsyncTestClient[Litestar]


def assert_no_secrets(payload: object) -> None:
    text = json.dumps(payload)
    assert "password" not in text
    assert "$argon2" not in text
    assert "hash" not in text


async def test_register_normalises_email_and_ignores_role(client: Client) -> None:
    email = new_email()
    response = await client.post(
        "/v1/auth/register",
        json={"email": f"  {email.upper()} ", "password": PASSWORD, "name": "Ada", "role": "admin", "is_active": False},
    )
    assert response.status_code == 201
    user = response.json()["user"]
    assert user["email"] == email
    assert user["role"] == "user"
    assert user["is_active"] is True
    assert set(user) == {"id", "email", "name", "role", "is_active", "created_at"}
    assert_no_secrets(response.json())

    duplicate = await client.post("/v1/auth/register", json={"email": email.upper(), "password": PASSWORD})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "email_taken"


async def test_register_password_policy_and_bad_email(client: Client) -> None:
    for password in ("short", "x" * 129):
        response = await client.post("/v1/auth/register", json={"email": new_email(), "password": password})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "password"
    response = await client.post("/v1/auth/register", json={"email": "not-an-email", "password": PASSWORD})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "email"


async def test_registration_can_be_switched_off(settings: Settings, app_factory: AppFactory) -> None:
    closed = settings.model_copy(update={"bootstrap": BootstrapSettings(allow_registration=False)})
    async with AsyncTestClient(app=app_factory(closed)) as client:
        response = await client.post("/v1/auth/register", json={"email": new_email(), "password": PASSWORD})
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


async def test_login_me_and_same_answer_for_unknown_email(client: Client) -> None:
    user = await register(client)
    session = await login(client, user["email"].upper())
    assert session["token_type"] == "Bearer"
    assert session["expires_in"] == 900
    assert session["user"]["id"] == user["id"]
    assert_no_secrets(session["user"])

    me = await client.get("/v1/auth/me", headers=bearer(session["access_token"]))
    assert me.status_code == 200
    assert me.json() == {
        "user": user,
        "auth": {"type": "jwt", "api_key_id": None, "allowed_models": None, "allowed_tools": None},
    }

    wrong_password = await client.post("/v1/auth/login", json={"email": user["email"], "password": "wrong password"})
    unknown_email = await client.post("/v1/auth/login", json={"email": new_email(), "password": "wrong password"})
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.json() == unknown_email.json()


async def test_refresh_rotates_and_reuse_revokes_the_whole_session(client: Client) -> None:
    first = await new_user_session(client)
    second = (await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/v1/auth/me", headers=bearer(second["access_token"]))).status_code == 200

    # The first token again: theft. 401, and everything descended from that login dies.
    reuse = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    assert reuse.json()["error"]["code"] == "token_revoked"
    newer = await client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert newer.status_code == 401
    for access in (first["access_token"], second["access_token"]):
        refused = await client.get("/v1/auth/me", headers=bearer(access))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "token_revoked"


async def test_refresh_token_is_not_an_access_token_nor_the_reverse(client: Client) -> None:
    session = await new_user_session(client)
    as_access = await client.get("/v1/auth/me", headers=bearer(session["refresh_token"]))
    assert as_access.status_code == 401
    assert as_access.json()["error"]["type"] == "authentication_error"
    as_refresh = await client.post("/v1/auth/refresh", json={"refresh_token": session["access_token"]})
    assert as_refresh.status_code == 401
    # Neither attempt harmed the real session.
    assert (await client.get("/v1/auth/me", headers=bearer(session["access_token"]))).status_code == 200


async def test_logout_ends_access_and_refresh_tokens(client: Client) -> None:
    session = await new_user_session(client)
    other = await login(client, session["user"]["email"])  # a second login is a separate session
    assert (await client.post("/v1/auth/logout", headers=bearer(session["access_token"]))).status_code == 204
    refused = await client.get("/v1/auth/me", headers=bearer(session["access_token"]))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "token_revoked"
    assert (await client.post("/v1/auth/refresh", json={"refresh_token": session["refresh_token"]})).status_code == 401
    assert (await client.get("/v1/auth/me", headers=bearer(other["access_token"]))).status_code == 200


async def test_exactly_one_of_two_concurrent_refreshes_succeeds(settings: Settings) -> None:
    """Two refreshes with one token race on real Postgres (two connections, truly concurrent)."""
    container = build_container(settings)
    try:
        identity = container.identity
        email = new_email()
        await identity.register(email, PASSWORD)
        pair = await identity.login(email, PASSWORD, "127.0.0.1")
        outcomes = await asyncio.gather(
            identity.refresh(pair.refresh_token), identity.refresh(pair.refresh_token), return_exceptions=True
        )
    finally:
        await container.aclose()
    successes = [o for o in outcomes if not isinstance(o, BaseException)]
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(successes) == 1
    assert len(failures) == 1
    assert isinstance(failures[0], Unauthenticated)


async def test_login_rehashes_when_argon2_parameters_change(
    settings: Settings, app_factory: AppFactory, database_url: str
) -> None:
    from sqlalchemy import text

    from app.config import AuthSettings, DatabaseSettings
    from app.infrastructure.persistence.database import create_engine

    async def stored_hash(email: str) -> str:
        engine = create_engine(DatabaseSettings(url=database_url), database_url)
        try:
            async with engine.connect() as conn:
                value = await conn.scalar(text("SELECT password_hash FROM users WHERE email = :e"), {"e": email})
                return str(value)
        finally:
            await engine.dispose()

    async with AsyncTestClient(app=app_factory(settings)) as client:
        user = await register(client)
    assert "m=64," in await stored_hash(user["email"])
    stronger = settings.model_copy(update={"auth": AuthSettings(argon2_memory_kib=128, argon2_time_cost=1)})
    async with AsyncTestClient(app=app_factory(stronger)) as client:
        await login(client, user["email"])
    assert "m=128," in await stored_hash(user["email"])
