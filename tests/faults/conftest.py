"""Fault-test fixtures: the real app with its upstream, Postgres or Redis behind a TCP fault proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.config import LLMSettings, Settings
from tests.conftest import AppFactory
from tests.support.fake_upstream import FakeUpstream
from tests.support.identity import admin_session, bearer, with_admin
from tests.support.tcp_proxy import TcpProxy


@dataclass
class FaultyUpstream:
    client: AsyncTestClient[Litestar]
    headers: dict[str, str]
    upstream: FakeUpstream
    proxy: TcpProxy

    async def chat(self, *, stream: bool = False) -> Any:
        body = {"model": "faulty", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        return await self.client.post("/v1/chat/completions", json=body, headers=self.headers)


@pytest.fixture
def upstream_proxy() -> Iterator[tuple[FakeUpstream, TcpProxy]]:
    upstream = FakeUpstream()
    host, port = upstream.base_url.removeprefix("http://").split("/")[0].split(":")
    proxy = TcpProxy(host, int(port))
    proxy.start()
    yield upstream, proxy
    proxy.close()
    upstream.close()


@pytest.fixture
async def faulty(
    settings: Settings, app_factory: AppFactory, upstream_proxy: tuple[FakeUpstream, TcpProxy], tmp_path: Path
) -> AsyncIterator[FaultyUpstream]:
    upstream, proxy = upstream_proxy
    timeouts = {
        "connect_timeout": 0.5,
        "first_byte_timeout": 0.8,
        "idle_timeout": 0.8,
        "total_timeout": 10,
        "max_retries": 2,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
    }
    config = tmp_path / "models.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "upstreams": {
                    "faulty": {
                        "base_url": f"http://127.0.0.1:{proxy.port}/v1",
                        "api_key": "sk-up",
                        "timeouts": timeouts,
                    }
                },
                "models": [{"id": "faulty", "upstream": "faulty"}],
            }
        )
    )
    configured = with_admin(settings.model_copy(update={"llm": LLMSettings(models_config=str(config))}))
    async with AsyncTestClient(app=app_factory(configured)) as client:
        token = (await admin_session(client))["access_token"]
        yield FaultyUpstream(client, bearer(token), upstream, proxy)
