"""The contract's conventions on the real app (real Postgres and Redis): health, docs,
the error shape for everything, and X-Request-ID."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from typing import Any

import pytest
from litestar import Litestar, get, post
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient
from pydantic import BaseModel

from app.config import Settings
from app.domain.errors import Conflict, RateLimited, ServiceUnavailable
from tests.conftest import AppFactory


class Payload(BaseModel):
    name: str
    count: int = 1


@post("/_test/echo", exclude_from_auth=True)
async def echo(data: JSONBody[Payload]) -> Payload:
    return data


@get("/_test/boom", exclude_from_auth=True)
async def boom() -> None:
    raise RuntimeError("postgresql://admin:hunter2@db/secret-internals")


@get("/_test/conflict", exclude_from_auth=True)
async def conflict() -> None:
    raise Conflict("That email is taken.", code="email_taken", param="email")


@get("/_test/limited", exclude_from_auth=True)
async def limited() -> None:
    raise RateLimited("Slow down.", retry_after_seconds=1.2)


@get("/_test/quota", exclude_from_auth=True)
async def quota() -> None:
    raise RateLimited("Budget spent.", retry_after_seconds=3600, code="insufficient_quota", should_retry=False)


@get("/_test/db-down", exclude_from_auth=True)
async def db_down() -> None:
    raise ServiceUnavailable("The database is unavailable.", code="database_unavailable")


# The probes test error mapping, not authentication: they opt out of the auth middleware.
PROBES = [echo, boom, conflict, limited, quota, db_down]


@pytest.fixture
async def probe_client(settings: Settings, app_factory: AppFactory) -> Any:
    async with AsyncTestClient(app=app_factory(settings, PROBES)) as test_client:
        yield test_client


def assert_error_shape(body: dict[str, Any], type_: str, code: str | None) -> None:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["type"] == type_
    assert error["code"] == code


async def test_health(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_with_real_postgres_and_redis(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "ok"


async def test_unknown_route_is_404_in_contract_shape(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/v1/does-not-exist")
    assert response.status_code == 404
    assert_error_shape(response.json(), "not_found_error", "not_found")


async def test_wrong_method_is_405_with_allow(client: AsyncTestClient[Litestar]) -> None:
    response = await client.delete("/health")
    assert response.status_code == 405
    assert_error_shape(response.json(), "invalid_request_error", "method_not_allowed")
    assert "GET" in response.headers["allow"]


@pytest.mark.parametrize("body", [b"{bad json", b'{"name": "a",}', b"\xff\xfe{}", b'{"name": "\xff"}'])
async def test_invalid_json_is_400_invalid_json(probe_client: Any, body: bytes) -> None:
    response = await probe_client.post("/_test/echo", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert_error_shape(response.json(), "invalid_request_error", "invalid_json")


async def test_missing_field_names_the_param(probe_client: Any) -> None:
    response = await probe_client.post("/_test/echo", json={"count": 2})
    assert response.status_code == 400
    body = response.json()
    assert_error_shape(body, "invalid_request_error", "missing_field")
    assert body["error"]["param"] == "name"


async def test_wrong_type_names_the_param(probe_client: Any) -> None:
    response = await probe_client.post("/_test/echo", json={"name": "x", "count": "many"})
    assert response.status_code == 400
    body = response.json()
    assert_error_shape(body, "invalid_request_error", "invalid_value")
    assert body["error"]["param"] == "count"


async def test_body_over_one_mebibyte_is_413(probe_client: Any) -> None:
    big = json.dumps({"name": "x" * (1024 * 1024 + 10)}).encode()
    response = await probe_client.post("/_test/echo", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert_error_shape(response.json(), "invalid_request_error", "request_too_large")


async def test_body_just_under_the_limit_is_accepted(probe_client: Any) -> None:
    ok = json.dumps({"name": "x" * (1024 * 1024 - 100)}).encode()
    response = await probe_client.post("/_test/echo", content=ok, headers={"content-type": "application/json"})
    assert response.status_code == 201


async def test_unexpected_exception_is_500_without_internals(
    probe_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = await probe_client.get("/_test/boom")
    assert response.status_code == 500
    body = response.json()
    assert_error_shape(body, "server_error", "internal_error")
    text = response.text
    for leak in ("hunter2", "postgresql://", "Traceback", "RuntimeError", "secret-internals"):
        assert leak not in text
    assert any("unhandled_exception" in r.getMessage() for r in caplog.records)


async def test_domain_errors_map_to_contract(probe_client: Any) -> None:
    response = await probe_client.get("/_test/conflict")
    assert response.status_code == 409
    body = response.json()
    assert_error_shape(body, "conflict_error", "email_taken")
    assert body["error"]["param"] == "email"

    response = await probe_client.get("/_test/limited")
    assert response.status_code == 429
    assert_error_shape(response.json(), "rate_limit_error", "rate_limit_exceeded")
    assert response.headers["retry-after"] == "2"
    assert response.headers["retry-after-ms"] == "1200"

    response = await probe_client.get("/_test/quota")
    assert response.status_code == 429
    assert_error_shape(response.json(), "rate_limit_error", "insufficient_quota")
    assert response.headers["x-should-retry"] == "false"

    response = await probe_client.get("/_test/db-down")
    assert response.status_code == 503
    assert_error_shape(response.json(), "service_unavailable", "database_unavailable")


async def test_request_id_is_echoed_when_sane(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "client-trace_42.a:b"})
    assert response.headers["x-request-id"] == "client-trace_42.a:b"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "semi;colon", "<script>"])
async def test_insane_request_id_is_replaced(client: AsyncTestClient[Litestar], bad: str) -> None:
    response = await client.get("/health", headers={"X-Request-ID": bad})
    generated = response.headers["x-request-id"]
    assert generated != bad
    assert len(generated) == 32
    assert all(c in "0123456789abcdef" for c in generated)


async def test_every_response_has_a_request_id_even_errors(client: AsyncTestClient[Litestar]) -> None:
    ids = set()
    for method, path in (("GET", "/health"), ("GET", "/nope"), ("POST", "/health"), ("GET", "/ready")):
        response = await client.request(method, path)
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 4


async def test_openapi_schema_and_docs(client: AsyncTestClient[Litestar]) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert schema["openapi"].startswith("3.")
    assert "/health" in schema["paths"]
    assert "/ready" in schema["paths"]
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]


async def test_metrics_count_requests_by_route(client: AsyncTestClient[Litestar]) -> None:
    await client.get("/health")
    await client.get("/no/such/route")
    text = (await client.get("/metrics")).text
    assert 'agent_api_http_requests_total{method="GET",route="/health",status="200"}' in text
    assert 'route="unmatched",status="404"' in text


async def test_cors_is_off_by_default_and_configurable(settings: Settings, app_factory: AppFactory) -> None:
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}
    async with AsyncTestClient(app=app_factory(settings)) as plain:
        response = await plain.get("/health", headers={"Origin": "https://app.example.com"})
        assert "access-control-allow-origin" not in response.headers

    server = settings.server.model_copy(update={"cors_allow_origins": ["https://app.example.com"]})
    async with AsyncTestClient(app=app_factory(settings.model_copy(update={"server": server}))) as cors:
        response = await cors.options("/health", headers=preflight)
        assert response.status_code in (200, 204)
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        other = await cors.get("/health", headers={"Origin": "https://evil.example.net"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example.net"


async def test_metrics_expose_runtime_gauges(client: AsyncTestClient[Litestar]) -> None:
    await asyncio.sleep(0.6)  # one event-loop lag sample
    text = (await client.get("/metrics")).text
    assert 'agent_api_queue_depth{queue="usage_records"} 0.0' in text
    assert 'agent_api_queue_depth{queue="api_key_last_used"} 0.0' in text
    assert 'agent_api_db_pool_connections{state="capacity"} 20.0' in text  # pool_size 10 + overflow 10
    assert 'agent_api_db_pool_connections{state="in_use"}' in text
    lag = next(line for line in text.splitlines() if line.startswith("agent_api_event_loop_lag_seconds "))
    assert 0.0 <= float(lag.split()[1]) < 5.0


async def test_start_up_objects_are_frozen_while_serving_and_released_at_shutdown(
    settings: Settings, app_factory: AppFactory
) -> None:
    before = gc.get_threshold()
    tuned = settings.model_copy(update={"server": settings.server.model_copy(update={"gc_young_threshold": 10_000})})
    async with AsyncTestClient(app=app_factory(tuned)) as test_client:
        assert (await test_client.get("/health")).status_code == 200
        assert gc.get_freeze_count() > 10_000  # the application's objects are out of the collector's way
        assert gc.get_threshold()[0] == 10_000
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


async def test_gc_young_threshold_0_leaves_the_collector_as_it_is(settings: Settings, app_factory: AppFactory) -> None:
    before = gc.get_threshold()
    untouched = settings.model_copy(update={"server": settings.server.model_copy(update={"gc_young_threshold": 0})})
    async with AsyncTestClient(app=app_factory(untouched)) as test_client:
        assert (await test_client.get("/health")).status_code == 200
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before
