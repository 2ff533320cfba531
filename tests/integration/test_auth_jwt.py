"""Access-token verification: every forgery and misuse is a 401 in the contract's shape, never a 500."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import SecretStr

from app.config import AuthSettings, Settings
from app.infrastructure.security.tokens import key_id
from tests.conftest import AppFactory
from tests.support.identity import bearer, make_token, new_user_session

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def session(client: Client) -> dict[str, Any]:
    return await new_user_session(client)


def claims_of(session: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of the session's real claims, changed as asked (None removes a claim)."""
    payload_b64 = session["access_token"].split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


async def assert_refused(client: Client, token: str, code: str = "invalid_token") -> None:
    response = await client.get("/v1/auth/me", headers=bearer(token))
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == code


async def test_a_correctly_signed_copy_is_accepted(client: Client, settings: Settings, session: dict[str, Any]) -> None:
    """The control for every test below: our forged tokens are right except for the one flaw."""
    token = make_token(settings.jwt_secret, claims_of(session), kid=key_id(settings.jwt_secret))
    assert (await client.get("/v1/auth/me", headers=bearer(token))).status_code == 200


async def test_alg_none_is_refused(client: Client, settings: Settings, session: dict[str, Any]) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": key_id(settings.jwt_secret)}

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    await assert_refused(client, f"{b64(header)}.{b64(claims_of(session))}.")


async def test_wrong_algorithm_is_refused(client: Client, settings: Settings, session: dict[str, Any]) -> None:
    token = make_token(settings.jwt_secret, claims_of(session), kid=key_id(settings.jwt_secret), algorithm="HS512")
    await assert_refused(client, token)


async def test_tampered_payload_is_refused(client: Client, session: dict[str, Any]) -> None:
    header, _, signature = session["access_token"].split(".")
    forged = claims_of(session, sub=str(uuid.uuid4()))
    payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    await assert_refused(client, f"{header}.{payload}.{signature}")


async def test_expired_token_is_refused(client: Client, settings: Settings, session: dict[str, Any]) -> None:
    now = int(time.time())
    claims = claims_of(session, iat=now - 3600, nbf=now - 3600, exp=now - 60)  # beyond the 10 s leeway
    await assert_refused(
        client, make_token(settings.jwt_secret, claims, kid=key_id(settings.jwt_secret)), "token_expired"
    )


async def test_not_yet_valid_token_is_refused(client: Client, settings: Settings, session: dict[str, Any]) -> None:
    now = int(time.time())
    claims = claims_of(session, iat=now, nbf=now + 120, exp=now + 900)
    await assert_refused(client, make_token(settings.jwt_secret, claims, kid=key_id(settings.jwt_secret)))


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "exp", "iat", "nbf", "jti", "sid", "typ"])
async def test_missing_claim_is_refused(
    client: Client, settings: Settings, session: dict[str, Any], claim: str
) -> None:
    claims = claims_of(session, **{claim: None})
    await assert_refused(client, make_token(settings.jwt_secret, claims, kid=key_id(settings.jwt_secret)))


@pytest.mark.parametrize(("claim", "value"), [("aud", "someone-else"), ("iss", "evil-issuer"), ("typ", "refresh")])
async def test_wrong_audience_issuer_or_type_is_refused(
    client: Client, settings: Settings, session: dict[str, Any], claim: str, value: str
) -> None:
    claims = claims_of(session, **{claim: value})
    await assert_refused(client, make_token(settings.jwt_secret, claims, kid=key_id(settings.jwt_secret)))


async def test_unknown_or_missing_kid_is_a_401_not_a_500(
    client: Client, settings: Settings, session: dict[str, Any]
) -> None:
    await assert_refused(client, make_token(settings.jwt_secret, claims_of(session), kid="no-such-key"))
    await assert_refused(client, make_token(settings.jwt_secret, claims_of(session), kid=None))
    # Signed with a secret we never had, under our own kid: the signature check catches it.
    await assert_refused(
        client, make_token(secrets.token_urlsafe(48), claims_of(session), kid=key_id(settings.jwt_secret))
    )
    await assert_refused(client, "not.a.jwt")
    await assert_refused(client, "garbage")


@pytest.fixture
async def rotated(settings: Settings, app_factory: AppFactory) -> tuple[Settings, dict[str, Any], AppFactory]:
    """A session whose access token is signed with the key that is about to be rotated out."""
    async with AsyncTestClient(app=app_factory(settings)) as old_client:
        session = await new_user_session(old_client)
    return settings, session, app_factory


def rotate(settings: Settings, *, rotated_at: datetime, overlap_seconds: int) -> Settings:
    auth = AuthSettings(
        argon2_memory_kib=64,
        argon2_time_cost=1,
        jwt_previous_secrets=[SecretStr(settings.jwt_secret)],
        jwt_rotated_at=rotated_at,
        jwt_rotation_overlap_seconds=overlap_seconds,
    )
    security = settings.security.model_copy(update={"jwt_secret": SecretStr(secrets.token_urlsafe(48))})
    # A new Settings object: model_copy would carry the cached `jwt_secret` over.
    groups = {name: getattr(settings, name) for name in Settings.model_fields}
    return Settings(**{**groups, "auth": auth, "security": security})


async def test_previous_key_verifies_inside_the_overlap(
    rotated: tuple[Settings, dict[str, Any], AppFactory],
) -> None:
    settings, session, app_factory = rotated
    new_settings = rotate(settings, rotated_at=datetime.now(UTC), overlap_seconds=600)
    async with AsyncTestClient(app=app_factory(new_settings)) as client:
        me = await client.get("/v1/auth/me", headers=bearer(session["access_token"]))
        assert me.status_code == 200
        # New tokens are signed with the new key only.
        fresh = (await client.post("/v1/auth/refresh", json={"refresh_token": session["refresh_token"]})).json()
        header = json.loads(base64.urlsafe_b64decode(fresh["access_token"].split(".")[0] + "=="))
        assert new_settings.jwt_secret != settings.jwt_secret
        assert header["kid"] == key_id(new_settings.jwt_secret)
        assert header["alg"] == "HS256"


async def test_previous_key_is_refused_after_the_overlap(
    rotated: tuple[Settings, dict[str, Any], AppFactory],
) -> None:
    settings, session, app_factory = rotated
    new_settings = rotate(settings, rotated_at=datetime.now(UTC) - timedelta(hours=1), overlap_seconds=600)
    async with AsyncTestClient(app=app_factory(new_settings)) as client:
        await assert_refused(client, session["access_token"])
