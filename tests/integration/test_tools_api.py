"""The Tools API over real auth: what a key may list and run follows its `allowed_tools`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.config import Settings
from tests.conftest import AppFactory
from tests.support.identity import admin_session, bearer, issue_key, with_admin

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def client(settings: Settings, app_factory: AppFactory) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app_factory(with_admin(settings))) as test_client:
        yield test_client


@pytest.fixture
async def admin_token(client: Client) -> str:
    token: str = (await admin_session(client))["access_token"]
    return token


async def key_headers(client: Client, admin_token: str, **scopes: Any) -> dict[str, str]:
    issued = await issue_key(client, admin_token, **scopes)
    return bearer(issued["key"])


async def test_list_shows_only_allowed_tools_with_schemas(client: Client, admin_token: str) -> None:
    everything = (await client.get("/v1/tools", headers=bearer(admin_token))).json()
    assert everything["object"] == "list"
    by_name = {tool["name"]: tool for tool in everything["data"]}
    assert {"calculator", "current_time", "http_get"} <= set(by_name)
    assert by_name["http_get"]["requires_approval"] is True
    assert by_name["calculator"]["requires_approval"] is False
    assert by_name["calculator"]["parameters"]["type"] == "object"
    assert "web_search" not in by_name  # no search backend configured

    narrow = await key_headers(client, admin_token, allowed_tools=["calculator"])
    names = [tool["name"] for tool in (await client.get("/v1/tools", headers=narrow)).json()["data"]]
    assert names == ["calculator"]

    nothing = await key_headers(client, admin_token, allowed_tools=[])
    assert (await client.get("/v1/tools", headers=nothing)).json()["data"] == []


async def test_execute_runs_the_tool(client: Client, admin_token: str) -> None:
    response = await client.post(
        "/v1/tools/execute",
        json={"name": "calculator", "arguments": {"expression": "2 * (3 + 4)"}},
        headers=bearer(admin_token),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "calculator"
    assert body["status"] == "success"
    assert body["error"] is None
    assert "14" in str(body["output"])
    assert isinstance(body["duration_ms"], int | float)


async def test_execute_validates_arguments_against_the_schema(client: Client, admin_token: str) -> None:
    response = await client.post(
        "/v1/tools/execute", json={"name": "calculator", "arguments": {"expression": 12}}, headers=bearer(admin_token)
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None
    assert "expression" in error["param"]


async def test_execute_refuses_approval_gated_and_disallowed_tools(client: Client, admin_token: str) -> None:
    gated = await client.post(
        "/v1/tools/execute",
        json={"name": "http_get", "arguments": {"url": "https://example.com"}},
        headers=bearer(admin_token),
    )
    assert gated.status_code == 403
    assert gated.json()["error"]["code"] == "approval_required"

    narrow = await key_headers(client, admin_token, allowed_tools=["current_time"])
    refused = await client.post(
        "/v1/tools/execute", json={"name": "calculator", "arguments": {"expression": "1+1"}}, headers=narrow
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "tool_not_allowed"


async def test_execute_a_tool_error_is_a_result_not_a_failure(client: Client, admin_token: str) -> None:
    response = await client.post(
        "/v1/tools/execute",
        json={"name": "calculator", "arguments": {"expression": "1/0"}},
        headers=bearer(admin_token),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "error"
    assert body["error"]


async def test_batch_keeps_order_and_isolates_failures(client: Client, admin_token: str) -> None:
    narrow = await key_headers(client, admin_token, allowed_tools=["calculator", "current_time"])
    calls = [
        {"id": "a", "name": "calculator", "arguments": {"expression": "6*7"}},
        {"id": "b", "name": "http_get", "arguments": {"url": "https://example.com"}},
        {"id": "c", "name": "current_time", "arguments": {"timezone": "Nowhere/Atlantis"}},
        {"id": "d", "name": "current_time", "arguments": {"timezone": "Europe/Paris"}},
    ]
    response = await client.post("/v1/tools/batch", json={"calls": calls}, headers=narrow)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == ["a", "b", "c", "d"]
    assert [r["status"] for r in results] == ["success", "error", "error", "success"]
    assert "42" in str(results[0]["output"])


async def test_batch_over_sixteen_calls_is_refused(client: Client, admin_token: str) -> None:
    calls = [{"name": "calculator", "arguments": {"expression": "1"}}] * 17
    response = await client.post("/v1/tools/batch", json={"calls": calls}, headers=bearer(admin_token))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "calls"


async def test_tools_need_a_credential(client: Client) -> None:
    response = await client.get("/v1/tools")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
