"""What is specific to the raw ASGI endpoint of ``POST /v1/chat/completions``
(http/chat_endpoint.py, served in front of Litestar's router): CORS around it, the trailing
slash, its own body limit (declared and streamed), authentication and body errors in the
contract's shape, the 500 path, metrics and the access log, and the hand-over of server-tool
requests to the Litestar route with the body replayed.

The real app (real Postgres and Redis) in-process through `AsyncTestClient`, or under uvicorn
on loopback where the test needs a real socket (a body that never arrives, chunked bodies);
models route to a fake upstream on loopback, which counts what reaches it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from app.application.llm.use_cases import CreateChatCompletion
from app.config import LLMSettings, RateLimitSettings, Settings
from app.infrastructure.http.chat_endpoint import ChatCompletionsEndpoint
from app.infrastructure.persistence.embedded import free_port
from tests.conftest import AppFactory
from tests.e2e.gateway.conftest import models_file
from tests.support.fake_upstream import FakeUpstream
from tests.support.identity import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    Client,
    admin_session,
    bearer,
    issue_key,
    new_user_session,
    with_admin,
)
from tests.support.raw_http import read_head
from tests.support.threaded_server import ThreadedServer

PATH = "/v1/chat/completions"
ORIGIN = "https://app.example.com"
EVIL = "https://evil.example.net"
LIMIT = 8192  # server.request_max_body_bytes of these tests
CHAT: dict[str, Any] = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}]}
LEAK = "postgresql://admin:hunter2@db/secret-internals"


def assert_error(response: httpx.Response, status: int, type_: str, code: str | None) -> dict[str, Any]:
    """The contract's error shape, with an X-Request-ID like every response."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    assert body["error"]["type"] == type_
    assert body["error"]["code"] == code
    assert response.headers["x-request-id"]
    error: dict[str, Any] = body["error"]
    return error


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    yield server
    server.close()


@pytest.fixture
def chat_settings(settings: Settings, upstream: FakeUpstream, tmp_path: Path) -> Settings:
    upstream.reset()
    config = models_file(tmp_path / "models.yaml", upstream, free_port())
    server = settings.server.model_copy(update={"cors_allow_origins": [ORIGIN], "request_max_body_bytes": LIMIT})
    return with_admin(settings).model_copy(
        update={
            "server": server,
            "llm": LLMSettings(models_config=str(config), llm_heartbeat_seconds=0.3, usage_flush_interval_ms=20),
            # Every test registers and logs in: the auth limits are not what is tested here.
            "rate_limit": RateLimitSettings(auth_ip_rpm=0, auth_account_rpm=0),
        }
    )


@pytest.fixture
async def api(chat_settings: Settings, app_factory: AppFactory) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=app_factory(chat_settings)) as test_client:
        yield test_client


@dataclass
class Caller:
    api_key: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.api_key)


@pytest.fixture
async def caller(api: Client) -> Caller:
    """A user registered through the API (its JWT) and an API key the admin issued to it."""
    session = await new_user_session(api)
    admin = await admin_session(api)
    key = await issue_key(api, admin["access_token"], user_id=session["user"]["id"])
    return Caller(api_key=key["key"], access_token=session["access_token"])


@pytest.fixture
def served_by_endpoint(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths `ChatCompletionsEndpoint` was called for (it, not the Litestar route)."""
    paths: list[str] = []
    original = ChatCompletionsEndpoint.__call__

    async def spy(self: ChatCompletionsEndpoint, scope: Any, receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(ChatCompletionsEndpoint, "__call__", spy)
    return paths


def metric_value(text: str, sample: str) -> float:
    """The value of one exposition line (``name{labels}``), 0 when absent."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def requests_sample(status: int) -> str:
    return f'agent_api_http_requests_total{{method="POST",route="{PATH}",status="{status}"}}'


# -- 1. CORS --------------------------------------------------------------------------------


async def test_cors_allowed_origin_gets_the_header_on_json_and_stream(
    api: Client, caller: Caller, served_by_endpoint: list[str]
) -> None:
    headers = {**caller.headers, "Origin": ORIGIN}
    answer = await api.post(PATH, json=CHAT, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["object"] == "chat.completion"
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()

    stream = await api.post(PATH, json={**CHAT, "stream": True}, headers=headers)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["access-control-allow-origin"] == ORIGIN
    assert stream.text.rstrip().endswith("data: [DONE]")

    # Errors are readable by the browser too.
    refused = await api.post(PATH, json=CHAT, headers={"Origin": ORIGIN})
    assert_error(refused, 401, "authentication_error", "invalid_api_key")
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert served_by_endpoint == [PATH, PATH, PATH]


async def test_cors_disallowed_origin_gets_no_allow_origin(api: Client, caller: Caller) -> None:
    for body in (CHAT, {**CHAT, "stream": True}):
        response = await api.post(PATH, json=body, headers={**caller.headers, "Origin": EVIL})
        assert response.status_code == 200, response.text
        assert "access-control-allow-origin" not in response.headers


async def test_cors_preflight_for_the_path(api: Client) -> None:
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    for path in (PATH, PATH + "/"):
        response = await api.options(path, headers=preflight)
        assert response.status_code in (200, 204), response.text
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
    evil = await api.options(PATH, headers={**preflight, "Origin": EVIL})
    assert evil.status_code == 400
    assert "access-control-allow-origin" not in evil.headers


# -- 2. Trailing slash ------------------------------------------------------------------------


async def test_trailing_slash_is_served_by_the_endpoint_like_without(
    api: Client, caller: Caller, upstream: FakeUpstream, served_by_endpoint: list[str]
) -> None:
    plain = await api.post(PATH, json=CHAT, headers=caller.headers)
    slashed = await api.post(PATH + "/", json=CHAT, headers=caller.headers)
    assert plain.status_code == slashed.status_code == 200, slashed.text
    assert slashed.json()["choices"][0]["message"]["content"] == plain.json()["choices"][0]["message"]["content"]
    assert slashed.headers["x-ratelimit-remaining-requests"]
    stream = await api.post(PATH + "/", json={**CHAT, "stream": True}, headers=caller.headers)
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert served_by_endpoint == [PATH, PATH + "/", PATH + "/"]
    assert upstream.request_count == 3
    assert upstream.requests[1].body["model"] == "upstream-model-x"
    metrics = (await api.get("/metrics")).text
    assert metric_value(metrics, requests_sample(200)) == 3  # one route label, slash or not


# -- 3. Body limit ----------------------------------------------------------------------------


@dataclass
class LiveServer:
    host: str
    port: int
    api_key: str

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)


@pytest.fixture
async def live(chat_settings: Settings, app_factory: AppFactory) -> AsyncIterator[LiveServer]:
    """The app under uvicorn on loopback (a real socket: partial and chunked bodies)."""
    server = ThreadedServer(app_factory(chat_settings))
    server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            api_key = await _issue_key_over_http(http)
        yield LiveServer("127.0.0.1", server.port, api_key)
    finally:
        server.stop()


async def _issue_key_over_http(http: httpx.AsyncClient) -> str:
    login = await http.post("/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert login.status_code == 200, login.text
    issued = await http.post("/v1/api-keys", json={"name": "raw"}, headers=bearer(login.json()["access_token"]))
    assert issued.status_code == 201, issued.text
    key: str = issued.json()["key"]
    return key


async def _read_response(reader: asyncio.StreamReader) -> httpx.Response:
    status, headers = await asyncio.wait_for(read_head(reader), timeout=5)
    content = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout=5)
    return httpx.Response(status, headers=headers, content=content)


def _head(server: LiveServer, *lines: str) -> bytes:
    common = [
        f"POST {PATH} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        f"Authorization: Bearer {server.api_key}",
        "Connection: close",
    ]
    return ("\r\n".join([*common, *lines]) + "\r\n\r\n").encode("latin-1")


async def test_declared_content_length_over_the_limit_is_413_before_the_body(
    live: LiveServer, upstream: FakeUpstream
) -> None:
    reader, writer = await live.open()
    try:
        # Only a few bytes of the announced megabytes follow: the answer cannot wait for them.
        writer.write(_head(live, f"Content-Length: {LIMIT * 100}") + b'{"model": ')
        await writer.drain()
        response = await _read_response(reader)
    finally:
        writer.close()
    error = assert_error(response, 413, "invalid_request_error", "request_too_large")
    assert error["param"] is None
    assert upstream.request_count == 0


async def test_chunked_body_growing_past_the_limit_is_413(live: LiveServer, upstream: FakeUpstream) -> None:
    # A valid request of ~3x the limit: served (and sent upstream) if the limit were not kept.
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * (LIMIT * 3)}]}).encode()
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    encoded = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
    reader, writer = await live.open()
    try:
        writer.write(_head(live, "Transfer-Encoding: chunked") + encoded)
        await writer.drain()
        response = await _read_response(reader)
    finally:
        writer.close()
    assert_error(response, 413, "invalid_request_error", "request_too_large")
    assert upstream.request_count == 0

    # Just under the limit, chunked the same way, is served.
    small = json.dumps({**CHAT, "messages": [{"role": "user", "content": "y" * (LIMIT - 200)}]}).encode()
    encoded = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (small[:500], small[500:])) + b"0\r\n\r\n"
    reader, writer = await live.open()
    try:
        writer.write(_head(live, "Transfer-Encoding: chunked") + encoded)
        await writer.drain()
        ok = await _read_response(reader)
    finally:
        writer.close()
    assert ok.status_code == 200, ok.text
    assert upstream.request_count == 1


async def test_in_process_body_over_the_limit_is_413(api: Client, caller: Caller, upstream: FakeUpstream) -> None:
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "z" * LIMIT}]}).encode()
    response = await api.post(PATH, content=big, headers={**caller.headers, "Content-Type": "application/json"})
    assert_error(response, 413, "invalid_request_error", "request_too_large")
    assert upstream.request_count == 0


# -- 4. Authentication ------------------------------------------------------------------------


async def test_no_credential_is_401_invalid_api_key(api: Client, upstream: FakeUpstream) -> None:
    response = await api.post(PATH, json=CHAT, headers={"X-Request-ID": "trace-no-credential"})
    assert_error(response, 401, "authentication_error", "invalid_api_key")
    assert response.headers["x-request-id"] == "trace-no-credential"
    assert upstream.request_count == 0


async def test_basic_authorization_is_401_invalid_token(api: Client, caller: Caller) -> None:
    # Even with a valid key beside it: a non-Bearer Authorization is refused, not skipped.
    headers = {"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": caller.api_key}
    response = await api.post(PATH, json=CHAT, headers=headers)
    assert_error(response, 401, "authentication_error", "invalid_token")


@pytest.mark.parametrize(
    ("credential", "code"),
    [("sk-not-a-real-key", "invalid_api_key"), ("not.a.jwt", "invalid_token"), ("x" * 5000, "invalid_token")],
)
async def test_bad_credentials_are_401(api: Client, credential: str, code: str) -> None:
    response = await api.post(PATH, json=CHAT, headers=bearer(credential))
    assert_error(response, 401, "authentication_error", code)


async def test_x_api_key_and_a_jwt_access_token_both_work(
    api: Client, caller: Caller, upstream: FakeUpstream, served_by_endpoint: list[str]
) -> None:
    by_key = await api.post(PATH, json=CHAT, headers={"X-API-Key": caller.api_key})
    assert by_key.status_code == 200, by_key.text
    assert by_key.json()["object"] == "chat.completion"
    by_jwt = await api.post(PATH, json=CHAT, headers=bearer(caller.access_token))
    assert by_jwt.status_code == 200, by_jwt.text
    assert by_jwt.json()["object"] == "chat.completion"
    assert upstream.request_count == 2
    assert served_by_endpoint == [PATH, PATH]


# -- 5. Body errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xff\xfe{}", id="not-utf8-start"),
        pytest.param(b'{"model": "\xff", "messages": []}', id="not-utf8-in-a-string"),
        pytest.param(b'{"model": "demo", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}', id="surrogate"),
        pytest.param(b"{bad json", id="malformed"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[" * 2000 + b"]" * 2000, id="nested-too-deep"),
    ],
)
async def test_undecodable_body_is_400_invalid_json(
    api: Client, caller: Caller, upstream: FakeUpstream, body: bytes
) -> None:
    response = await api.post(PATH, content=body, headers={**caller.headers, "Content-Type": "application/json"})
    assert_error(response, 400, "invalid_request_error", "invalid_json")
    assert upstream.request_count == 0


@pytest.mark.parametrize("body", [b"null", b'"a string"', b"42", b"[]"])
async def test_json_that_is_not_a_request_object_is_400(
    api: Client, caller: Caller, upstream: FakeUpstream, body: bytes
) -> None:
    response = await api.post(PATH, content=body, headers={**caller.headers, "Content-Type": "application/json"})
    error = assert_error(response, 400, "invalid_request_error", "invalid_value")
    assert error["param"] is None
    assert upstream.request_count == 0


async def test_invalid_field_names_the_param(api: Client, caller: Caller) -> None:
    response = await api.post(PATH, json={**CHAT, "temperature": 9}, headers=caller.headers)
    error = assert_error(response, 400, "invalid_request_error", "invalid_value")
    assert error["param"] == "temperature"
    missing = await api.post(PATH, json={"model": "fake-model"}, headers=caller.headers)
    assert assert_error(missing, 400, "invalid_request_error", "missing_field")["param"] == "messages"


# -- 6. Unexpected exceptions -----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_unexpected_exception_is_500_without_internals_and_counted(
    api: Client, caller: Caller, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, stream: bool
) -> None:
    async def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError(LEAK)

    monkeypatch.setattr(CreateChatCompletion, "stream" if stream else "complete", boom)
    before = metric_value((await api.get("/metrics")).text, "agent_api_unhandled_errors_total")
    with caplog.at_level(logging.ERROR):
        response = await api.post(PATH, json={**CHAT, "stream": stream}, headers=caller.headers)
    assert_error(response, 500, "server_error", "internal_error")
    for leak in ("hunter2", "postgresql://", "Traceback", "RuntimeError", "secret-internals"):
        assert leak not in response.text
    assert any(isinstance(r.msg, dict) and r.msg.get("event") == "unhandled_exception" for r in caplog.records)
    metrics = (await api.get("/metrics")).text
    assert metric_value(metrics, "agent_api_unhandled_errors_total") == before + 1
    assert metric_value(metrics, requests_sample(500)) == 1


# -- 7. Metrics and the access log ------------------------------------------------------------


async def test_requests_are_counted_and_logged_under_the_route(
    api: Client, caller: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="agent_api.access"):
        responses = [
            await api.post(PATH, json=CHAT, headers=caller.headers),
            await api.post(PATH, json={**CHAT, "stream": True}, headers=caller.headers),
            await api.post(PATH, json=CHAT),
            await api.post(PATH, content=b"{", headers=caller.headers),
        ]
    assert [r.status_code for r in responses] == [200, 200, 401, 400]
    metrics = (await api.get("/metrics")).text
    assert metric_value(metrics, requests_sample(200)) == 2
    assert metric_value(metrics, requests_sample(401)) == 1
    assert metric_value(metrics, requests_sample(400)) == 1
    assert metric_value(metrics, f'agent_api_http_request_duration_seconds_count{{method="POST",route="{PATH}"}}') == 4
    events = [r.msg for r in caplog.records if r.name == "agent_api.access" and isinstance(r.msg, dict)]
    logged = [(e["route"], e["status"], e["method"], e["request_id"]) for e in events if e.get("path") == PATH]
    assert logged == [(PATH, r.status_code, "POST", r.headers["x-request-id"]) for r in responses]


# -- 8. Server tools: handed to the Litestar route ---------------------------------------------


@pytest.mark.parametrize("path", [PATH, PATH + "/"])
async def test_server_tools_are_handed_to_the_litestar_route_with_the_body(
    api: Client, caller: Caller, upstream: FakeUpstream, served_by_endpoint: list[str], path: str
) -> None:
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "What is 6 * 7?"}],
        "tools": [{"type": "function", "function": {"name": "calculator"}}],
    }
    response = await api.post(path, json=body, headers={**caller.headers, "Origin": ORIGIN})
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["object"] == "chat.completion"
    [choice] = completion["choices"]
    # The demo model asks for the calculator and answers with its result: the loop ran the tool.
    assert choice["message"]["content"] == 'The result is {"expression": "6 * 7", "result": 42}.'
    assert choice["message"].get("tool_calls") is None
    assert choice["finish_reason"] == "stop"
    assert served_by_endpoint == [path]  # it came in through the endpoint and was handed over
    assert upstream.request_count == 0
    # CORS applies once, whichever of the two answered.
    assert response.headers.get_list("access-control-allow-origin") == [ORIGIN]
    assert len(response.headers.get_list("x-request-id")) == 1
