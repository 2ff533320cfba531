"""While draining (after SIGTERM): readiness is 503 at once, new requests get 503
`shutting_down`, liveness still answers."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from app.config import Settings
from app.infrastructure.container import Container
from tests.conftest import AppFactory


async def test_draining_refuses_new_requests_but_stays_alive(settings: Settings, app_factory: AppFactory) -> None:
    app = app_factory(settings)
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/ready")).status_code == 200
        container: Container = app.state.container
        container.drain.begin()

        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not_ready"
        assert ready.json()["checks"]["shutdown"] == "draining"

        refused = await client.post("/v1/auth/login", json={"email": "a@b.co", "password": "whatever1"})
        assert refused.status_code == 503
        assert refused.json()["error"] == {
            "message": "The server is shutting down; retry on another instance.",
            "type": "service_unavailable",
            "param": None,
            "code": "shutting_down",
        }
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-request-id"]

        assert (await client.get("/health")).status_code == 200
        assert container.readiness.draining
