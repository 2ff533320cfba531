"""Redis down: credentials are checked against Postgres instead (never a 401 for the outage),
and a revocation that cannot be published answers 503 so the caller retries."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from litestar.testing import AsyncTestClient

from app.config import RedisSettings, Settings
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


async def test_redis_outage_falls_back_to_the_database(
    settings: Settings, app_factory: AppFactory, redis_url: str
) -> None:
    parts = urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    proxy.start()
    redis = RedisSettings(
        url=f"redis://127.0.0.1:{proxy.port}/0", socket_timeout_seconds=0.5, key_prefix=settings.redis.key_prefix
    )
    try:
        async with AsyncTestClient(
            app=app_factory(with_admin(settings).model_copy(update={"redis": redis}), [whoami])
        ) as client:
            admin = await admin_session(client)
            key = await issue_key(client, admin["access_token"])
            user = await new_user_session(client)
            for credential in (key["key"], user["access_token"]):
                assert (await client.get("/v1/test/whoami", headers=bearer(credential))).status_code == 200

            proxy.stop()
            # Reads of the revocation state made just before the outage are reused this long.
            await asyncio.sleep(settings.auth.revocation_cache_seconds + 0.05)
            engine = client.app.state.container.engine
            with counting_queries(engine) as counter:
                for credential in (key["key"], user["access_token"]):
                    assert (await client.get("/v1/test/whoami", headers=bearer(credential))).status_code == 200
            assert counter.count > 0  # Postgres answered what Redis could not

            logout = await client.post("/v1/auth/logout", headers=bearer(user["access_token"]))
            assert logout.status_code == 503
            assert logout.json()["error"]["code"] == "redis_unavailable"
            # The session is ended in Postgres all the same, and Postgres is what is asked now.
            refused = await client.get("/v1/test/whoami", headers=bearer(user["access_token"]))
            assert refused.status_code == 401

            proxy.start()
            # Redis is back: the revocation made during the outage is published and still holds.
            refused = await client.get("/v1/test/whoami", headers=bearer(user["access_token"]))
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "token_revoked"
            assert (await client.get("/v1/test/whoami", headers=bearer(key["key"]))).status_code == 200
    finally:
        proxy.close()
