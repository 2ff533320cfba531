"""/ready turns 503 and names the dependency when Postgres or Redis goes away, and recovers
when it comes back. The outage is real: a TCP proxy between the app and the server is cut."""

from __future__ import annotations

from urllib.parse import urlsplit

from litestar.testing import AsyncTestClient

from app.config import DatabaseSettings, RedisSettings, Settings
from tests.conftest import AppFactory
from tests.support.tcp_proxy import TcpProxy


def through(url: str, port: int) -> str:
    """The same URL, pointed at the proxy on 127.0.0.1:`port` (credentials kept)."""
    parts = urlsplit(url)
    credentials, _, _ = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{credentials + '@' if credentials else ''}127.0.0.1:{port}").geturl()


def _host_port(url: str, default: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default


async def test_ready_503_while_postgres_is_down_then_recovers(
    settings: Settings, app_factory: AppFactory, database_url: str
) -> None:
    proxy = TcpProxy(*_host_port(database_url, 5432))
    proxy.start()
    proxied = through(database_url, proxy.port)
    settings = settings.model_copy(
        update={"database": DatabaseSettings(url=proxied, auto_migrate=False, connect_timeout_seconds=1)}
    )
    async with AsyncTestClient(app=app_factory(settings)) as client:
        assert (await client.get("/ready")).status_code == 200

        proxy.stop()
        down = await client.get("/ready")
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "not_ready"
        assert body["checks"]["database"].startswith("error:")
        assert body["checks"]["redis"] == "ok"
        assert (await client.get("/health")).status_code == 200  # liveness is not readiness

        proxy.start()
        assert (await client.get("/ready")).status_code == 200
    proxy.close()


async def test_ready_503_while_redis_is_down(settings: Settings, app_factory: AppFactory, redis_url: str) -> None:
    proxy = TcpProxy(*_host_port(redis_url, 6379))
    proxy.start()
    redis = RedisSettings(url=f"redis://127.0.0.1:{proxy.port}/0", socket_timeout_seconds=0.5)
    settings = settings.model_copy(update={"redis": redis})
    async with AsyncTestClient(app=app_factory(settings)) as client:
        assert (await client.get("/ready")).status_code == 200
        proxy.stop()
        down = await client.get("/ready")
        assert down.status_code == 503
        assert down.json()["checks"]["redis"].startswith("error:")
        assert down.json()["checks"]["database"] == "ok"
        proxy.start()
        assert (await client.get("/ready")).status_code == 200
    proxy.close()
