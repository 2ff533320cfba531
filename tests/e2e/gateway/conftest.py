"""The one fixture every gateway HTTP test goes through: ``gateway_server``.

A real uvicorn server on 127.0.0.1 (in a thread) serving the real app, built by the
shared ``app_factory`` from settings that route models to a fake upstream (a real HTTP
server in its own thread). Callers are posed by the TEMPORARY `PrincipalInjector` until the
auth branch is merged; then only this fixture changes (real users and API keys).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import openai
import pytest
import yaml

from app.config import LLMSettings
from tests.conftest import AppFactory, make_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.principal_injector import TOKEN_PREFIX, PrincipalInjector, ThreadedServer, scenarios

UPSTREAM_KEY = "sk-upstream-secret-do-not-leak"


@dataclass
class GatewayServer:
    base_url: str
    upstream: FakeUpstream
    user_id: uuid.UUID
    api_key_id: uuid.UUID
    database_url: str

    @staticmethod
    def api_key(scenario: str = "all") -> str:
        return f"{TOKEN_PREFIX}{scenario}"

    def client(self, scenario: str = "all", **options: Any) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 10.0)
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key(scenario), **options)

    def async_client(self, scenario: str = "all", **options: Any) -> openai.AsyncOpenAI:
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 10.0)
        return openai.AsyncOpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key(scenario), **options)


async def _create_user(database_url: str) -> uuid.UUID:
    user_id = uuid.uuid4()
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        await conn.execute(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, 'x')",
            user_id,
            f"gateway-{user_id.hex[:8]}@example.test",
        )
    finally:
        await conn.close()
    return user_id


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    yield upstream
    upstream.close()


def models_file(path: Path, upstream: FakeUpstream, dead_port: int) -> Path:
    fast = {"backoff_base": 0.01, "backoff_max": 0.05, "first_byte_timeout": 1.5, "idle_timeout": 1.5}
    path.write_text(
        yaml.safe_dump(
            {
                "upstreams": {
                    "fake": {"base_url": upstream.base_url, "api_key": UPSTREAM_KEY, "timeouts": fast},
                    "dead": {"base_url": f"http://127.0.0.1:{dead_port}/v1", "api_key": "sk-dead", "timeouts": fast},
                    "demo": {"type": "demo"},
                },
                "models": [
                    {"id": "fake-model", "upstream": "fake", "upstream_model": "upstream-model-x"},
                    {"id": "fallback-model", "upstream": "dead", "fallbacks": ["fake-model"]},
                    {"id": "capped-model", "upstream": "fake", "max_tokens": 50},
                    {"id": "demo", "upstream": "demo"},
                    {"id": "org/slashed-model", "upstream": "fake"},
                ],
            }
        )
    )
    return path


@pytest.fixture
def gateway_server(
    database_url: str,
    redis_url: str,
    app_factory: AppFactory,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
) -> Iterator[GatewayServer]:
    from app.infrastructure.persistence.embedded import free_port

    fake_upstream.reset()
    config = models_file(tmp_path / "models.yaml", fake_upstream, free_port())
    settings = make_settings(
        database_url,
        redis_url,
        llm=LLMSettings(models_config=str(config), llm_heartbeat_seconds=0.3, usage_flush_interval_ms=20),
    )
    user_id = asyncio.run(_create_user(database_url))
    api_key_id = uuid.uuid4()
    app = PrincipalInjector(app_factory(settings), scenarios(user_id, api_key_id))
    server = ThreadedServer(app)
    server.start()
    try:
        yield GatewayServer(server.base_url, fake_upstream, user_id, api_key_id, database_url)
    finally:
        server.stop()
