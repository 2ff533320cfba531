"""What is specific to the raw ASGI endpoint of ``POST /v1/chat/completions``
(http/chat_endpoint.py), on the real app with Postgres, Redis and the demo model: CORS, the
trailing slash, 413, auth and body errors in the contract's shape, an unexpected error, metrics,
and the hand-over of server tools to the Litestar route. The ordinary behaviour is covered by
the gateway tests (tests/e2e/gateway) through the same endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.application.llm.use_cases import CreateChatCompletion
from app.config import Settings
from app.infrastructure.http.chat_endpoint import BodyTooLarge, read_body
from tests.conftest import AppFactory
from tests.support.identity import Client, admin_session, bearer, issue_key, with_admin

CHAT: dict[str, Any] = {"model": "demo", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
ORIGIN = "https://app.example.com"


@pytest.fixture
async def key_client(settings: Settings, app_factory: AppFactory) -> AsyncIterator[tuple[Client, str, str]]:
    from litestar.testing import AsyncTestClient

    server = settings.server.model_copy(update={"cors_allow_origins": [ORIGIN], "request_max_body_bytes": 4096})
    configured = with_admin(settings).model_copy(update={"server": server})
    async with AsyncTestClient(app=app_factory(configured)) as client:
        admin = await admin_session(client)
        key = await issue_key(client, admin["access_token"])
        yield client, key["key"], admin["access_token"]


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers.get("x-request-id")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def test_cors_headers_on_allowed_origins_only(key_client: tuple[Client, str, str]) -> None:
    client, key, _ = key_client
    for stream in (False, True):
        allowed = await client.post(
            "/v1/chat/completions", json={**CHAT, "stream": stream}, headers={**bearer(key), "Origin": ORIGIN}
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
    other = await client.post(
        "/v1/chat/completions", json=CHAT, headers={**bearer(key), "Origin": "https://evil.example.net"}
    )
    assert other.status_code == 200
    assert other.headers.get("access-control-allow-origin") != "https://evil.example.net"
    preflight = await client.options(
        "/v1/chat/completions", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == ORIGIN


async def test_trailing_slash_is_the_same_endpoint(key_client: tuple[Client, str, str]) -> None:
    client, key, _ = key_client
    response = await client.post("/v1/chat/completions/", json=CHAT, headers=bearer(key))
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"


async def test_bodies_over_the_limit_are_413(key_client: tuple[Client, str, str]) -> None:
    client, key, _ = key_client
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert error_of(await client.post("/v1/chat/completions", json=big, headers=bearer(key)), 413)["code"] == (
        "request_too_large"
    )


async def test_a_body_without_length_is_refused_as_it_grows_past_the_limit() -> None:
    """Chunked uploads declare no Content-Length: `read_body` counts what arrives and stops reading."""
    messages = [{"type": "http.request", "body": b"x" * 1000, "more_body": True} for _ in range(10)]
    taken: list[Any] = []

    async def receive() -> Any:
        taken.append(messages.pop(0))
        return taken[-1]

    with pytest.raises(BodyTooLarge):
        await read_body({"type": "http", "headers": []}, receive, 4096)  # type: ignore[arg-type]
    assert len(taken) == 5  # refused at the fifth kilobyte, the rest never read
    whole = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"c"}]

    async def receive_whole() -> Any:
        return whole.pop(0)

    assert await read_body({"type": "http", "headers": []}, receive_whole, 4096) == b"abc"  # type: ignore[arg-type]


async def test_credentials_are_checked_like_everywhere_else(key_client: tuple[Client, str, str]) -> None:
    client, key, admin_token = key_client
    assert error_of(await client.post("/v1/chat/completions", json=CHAT), 401)["code"] == "invalid_api_key"
    basic = await client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Basic dXNlcg=="})
    assert error_of(basic, 401)["code"] == "invalid_token"
    wrong = await client.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-not-a-real-key"))
    assert error_of(wrong, 401)["type"] == "authentication_error"
    assert (await client.post("/v1/chat/completions", json=CHAT, headers={"X-API-Key": key})).status_code == 200
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(admin_token))).status_code == 200


async def test_bad_bodies_are_400_never_500(key_client: tuple[Client, str, str]) -> None:
    client, key, _ = key_client
    headers = {**bearer(key), "Content-Type": "application/json"}
    for content, code in ((b"\xff\xfe{", "invalid_json"), (b"", "invalid_json"), (b"{not json", "invalid_json")):
        assert (
            error_of(await client.post("/v1/chat/completions", content=content, headers=headers), 400)["code"] == code
        )
    for content in (b"null", b'"a string"', b"[1, 2]"):
        error = error_of(await client.post("/v1/chat/completions", content=content, headers=headers), 400)
        assert error["type"] == "invalid_request_error"
    missing = error_of(await client.post("/v1/chat/completions", json={"model": "demo"}, headers=headers), 400)
    assert (missing["param"], missing["code"]) == ("messages", "missing_field")


async def test_an_unexpected_error_is_a_bare_500_and_counted(
    key_client: tuple[Client, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, key, _ = key_client

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret internals at /srv/app.py line 42")

    monkeypatch.setattr(CreateChatCompletion, "complete", broken)
    response = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    error = error_of(response, 500)
    assert error["code"] == "internal_error"
    assert "secret" not in response.text
    assert "agent_api_unhandled_errors_total 1.0" in (await client.get("/metrics")).text


async def test_requests_are_counted_by_route_and_status(key_client: tuple[Client, str, str]) -> None:
    client, key, _ = key_client
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))).status_code == 200
    assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 401
    text = (await client.get("/metrics")).text
    for status in ("200", "401"):
        line = next(
            line
            for line in text.splitlines()
            if line.startswith("agent_api_http_requests_total{")
            and 'route="/v1/chat/completions"' in line
            and f'status="{status}"' in line
        )
        assert float(line.rsplit(" ", 1)[1]) >= 1


async def test_server_tools_are_handed_to_the_agent_route_with_their_body(key_client: tuple[Client, str, str]) -> None:
    client, key, _ = key_client
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "what is 6 * 7?"}],
        "tools": [{"type": "function", "function": {"name": "calculator"}}],
    }
    response = await client.post("/v1/chat/completions", json=body, headers=bearer(key))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion"
    assert "42" in answer["choices"][0]["message"]["content"]
