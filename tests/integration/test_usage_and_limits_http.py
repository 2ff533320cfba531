"""`GET /v1/usage` (aggregated in Postgres, own vs admin, validated parameters), per-user limits of
JWT callers on chat completions, scope checks before any charge, and the auth limit's client IP
(X-Forwarded-For ignored from an untrusted peer). Real Postgres and Redis, the app in-process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import insert

from app.config import RateLimitSettings, Settings
from app.infrastructure.persistence.database import create_engine
from app.infrastructure.persistence.models import UsageRecordModel
from tests.conftest import AppFactory
from tests.support.identity import Client, admin_session, bearer, issue_key, new_user_session, with_admin

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=UTC)


def row(  # noqa: PLR0917 - one usage record, positionally
    user_id: uuid.UUID,
    key: uuid.UUID | None,
    model: str,
    prompt: int,
    completion: int,
    created_at: datetime,
    status: str = "success",
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "api_key_id": key,
        "model": model,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "created_at": created_at,
        "status": status,
    }


async def insert_usage(settings: Settings, rows: list[dict[str, Any]]) -> None:
    url = settings.database.url.get_secret_value() if settings.database.url else ""
    engine = create_engine(settings.database, url)
    defaults = {"latency_ms": 5, "ttft_ms": None, "status": "success", "error_code": None, "request_id": None}
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(UsageRecordModel),
                [
                    {
                        **defaults,
                        "id": uuid.uuid4(),
                        "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
                        **row,
                    }
                    for row in rows
                ],
            )
    finally:
        await engine.dispose()


@pytest.fixture
async def client(settings: Settings, app_factory: AppFactory) -> AsyncIterator[Client]:
    limits = RateLimitSettings(user_rpm=2, auth_ip_rpm=40)
    configured = with_admin(settings).model_copy(update={"rate_limit": limits})
    async with AsyncTestClient(app=app_factory(configured)) as test_client:
        yield test_client


async def test_usage_is_aggregated_per_day_model_and_key(client: Client, settings: Settings) -> None:
    admin = await admin_session(client)
    alice, bob = await new_user_session(client), await new_user_session(client)
    alice_id, bob_id = uuid.UUID(alice["user"]["id"]), uuid.UUID(bob["user"]["id"])
    key = uuid.uuid4()
    await insert_usage(
        settings,
        [
            row(alice_id, key, "m1", 10, 5, at(1)),
            row(alice_id, None, "m2", 1, 0, at(1, 23), status="error"),
            row(alice_id, key, "m1", 3, 3, at(2)),
            row(alice_id, key, "m1", 99, 99, at(5)),  # outside the window
            row(bob_id, None, "m1", 100, 100, at(1)),
        ],
    )
    window = {"start": "2026-03-01", "end": "2026-03-03T00:00:00Z"}

    by_day = await client.get("/v1/usage", params={**window, "group_by": "day"}, headers=bearer(alice["access_token"]))
    assert by_day.status_code == 200, by_day.text
    body = by_day.json()
    assert body["user_id"] == str(alice_id)
    assert [(g["day"], g["requests"], g["total_tokens"]) for g in body["data"]] == [
        ("2026-03-01", 2, 16),
        ("2026-03-02", 1, 6),
    ]
    assert body["total"] == {
        "requests": 3,
        "failed_requests": 1,
        "prompt_tokens": 14,
        "completion_tokens": 8,
        "total_tokens": 22,
    }

    by_model = await client.get(
        "/v1/usage", params={**window, "group_by": "model"}, headers=bearer(alice["access_token"])
    )
    assert [(g["model"], g["requests"], g["failed_requests"], g["total_tokens"]) for g in by_model.json()["data"]] == [
        ("m1", 2, 0, 21),
        ("m2", 1, 1, 1),
    ]
    by_key = await client.get(
        "/v1/usage", params={**window, "group_by": "api_key"}, headers=bearer(alice["access_token"])
    )
    assert [(g["api_key_id"], g["requests"]) for g in by_key.json()["data"]] == [(str(key), 2), (None, 1)]

    # Someone else's usage: admins only.
    other = await client.get(
        "/v1/usage", params={**window, "user_id": str(bob_id)}, headers=bearer(alice["access_token"])
    )
    assert other.status_code == 403
    assert other.json()["error"]["code"] == "insufficient_role"
    own = await client.get(
        "/v1/usage", params={**window, "user_id": str(alice_id)}, headers=bearer(alice["access_token"])
    )
    assert own.json()["total"]["requests"] == 3
    everyone = await client.get("/v1/usage", params=window, headers=bearer(admin["access_token"]))
    assert everyone.json()["user_id"] is None
    assert everyone.json()["total"]["requests"] >= 4  # alice's 3 and bob's 1 (other tests may add theirs)
    just_bob = await client.get(
        "/v1/usage", params={**window, "user_id": str(bob_id)}, headers=bearer(admin["access_token"])
    )
    assert just_bob.json()["total"] == {
        "requests": 1,
        "failed_requests": 0,
        "prompt_tokens": 100,
        "completion_tokens": 100,
        "total_tokens": 200,
    }
    # Unix seconds work too.
    unix = {"start": str(int(at(2, 0).timestamp())), "end": str(int(at(3, 0).timestamp()))}
    second_day = await client.get("/v1/usage", params=unix, headers=bearer(alice["access_token"]))
    assert second_day.json()["total"]["total_tokens"] == 6


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"start": "yesterday"}, "start"),
        ({"end": "2026-13-01"}, "end"),
        ({"start": "2026-03-02", "end": "2026-03-01"}, "start"),
        ({"start": "2020-01-01", "end": "2026-01-01"}, "start"),
        ({"user_id": "not-a-uuid"}, "user_id"),
    ],
)
async def test_bad_parameters_are_400_with_param(client: Client, params: dict[str, str], param: str) -> None:
    session = await new_user_session(client)
    response = await client.get("/v1/usage", params=params, headers=bearer(session["access_token"]))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_usage_is_in_the_openapi_schema(client: Client) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/usage"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"start", "end", "group_by", "user_id"}


async def test_jwt_callers_are_limited_per_user_and_real_calls_show_up_in_usage(client: Client) -> None:
    session = await new_user_session(client)
    headers = bearer(session["access_token"])
    first = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert "x-ratelimit-remaining-tokens" in first.headers
    second = await client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers)
    assert second.status_code == 200
    assert second.headers["content-type"].startswith("text/event-stream")
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    third = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "rate_limit_exceeded"
    # Another user (same defaults) is not affected.
    other = await new_user_session(client)
    assert (
        await client.post("/v1/chat/completions", json=CHAT, headers=bearer(other["access_token"]))
    ).status_code == 200


async def test_scope_checks_come_before_any_charge(client: Client) -> None:
    admin = await admin_session(client)
    key = (await issue_key(client, admin["access_token"], allowed_models=["elsewhere"], rpm_limit=1))["key"]
    for _ in range(3):
        refused = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "model_not_allowed"
    unknown = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}, headers=bearer(key))
    assert unknown.status_code == 404


async def test_a_daily_budget_gives_insufficient_quota(client: Client) -> None:
    admin = await admin_session(client)
    key = (await issue_key(client, admin["access_token"], daily_token_budget=20))["key"]
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))).status_code == 200
    # The reservation is prompt estimate + max_tokens (here 2 + 8 = 10); 100 cannot fit what is left.
    over = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 100}, headers=bearer(key))
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "insufficient_quota"
    assert over.headers["x-should-retry"] == "false"


async def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(settings: Settings, app_factory: AppFactory) -> None:
    configured = settings.model_copy(update={"rate_limit": RateLimitSettings(auth_ip_rpm=3)})
    async with AsyncTestClient(app=app_factory(configured)) as client:
        for n in range(3):
            answer = await client.post(
                "/v1/auth/refresh", json={"refresh_token": "rt_" + "y" * 43}, headers={"X-Forwarded-For": f"10.0.0.{n}"}
            )
            assert answer.status_code == 401
            assert answer.headers["x-ratelimit-limit-requests"] == "3"
        refused = await client.post(
            "/v1/auth/refresh", json={"refresh_token": "rt_" + "y" * 43}, headers={"X-Forwarded-For": "10.9.9.9"}
        )
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(refused.headers["Retry-After"]) >= 1
