"""The one fixture every gateway HTTP test goes through: ``gateway_server``.

A real uvicorn server on 127.0.0.1 (in a thread) serving the real app, built by the
shared ``app_factory`` from settings that route models to a fake upstream (a real HTTP
server in its own thread). Callers are real: a user registered through the API and one API
key per scenario, issued by the bootstrap admin with that scenario's scopes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from app.config import LLMSettings
from tests.conftest import AppFactory, make_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.identity import ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD, new_email, with_admin
from tests.support.threaded_server import ThreadedServer

UPSTREAM_KEY = "sk-upstream-secret-do-not-leak"


# The callers tests may pose as: API keys of one user, scoped as named.
SCENARIOS: dict[str, dict[str, Any]] = {
    "all": {},
    "demo-only": {"allowed_models": ["demo"]},
    "no-models": {"allowed_models": []},
    "no-tools": {"allowed_tools": []},
}


@dataclass
class GatewayServer:
    base_url: str
    upstream: FakeUpstream
    user_id: uuid.UUID
    api_key_id: uuid.UUID
    database_url: str
    keys: dict[str, str]

    def api_key(self, scenario: str = "all") -> str:
        return self.keys[scenario]

    def client(self, scenario: str = "all", **options: Any) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 10.0)
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key(scenario), **options)

    def async_client(self, scenario: str = "all", **options: Any) -> openai.AsyncOpenAI:
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 10.0)
        return openai.AsyncOpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key(scenario), **options)


def _issue_keys(base_url: str) -> tuple[uuid.UUID, dict[str, str], dict[str, uuid.UUID]]:
    """Register a user through the API; the admin issues that user one key per scenario."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        registered = http.post("/v1/auth/register", json={"email": new_email(), "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        user_id = uuid.UUID(registered.json()["user"]["id"])
        login = http.post("/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert login.status_code == 200, login.text
        admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
        keys: dict[str, str] = {}
        key_ids: dict[str, uuid.UUID] = {}
        for scenario, scopes in SCENARIOS.items():
            issued = http.post(
                "/v1/api-keys", json={"user_id": str(user_id), "name": scenario, **scopes}, headers=admin
            )
            assert issued.status_code == 201, issued.text
            keys[scenario] = issued.json()["key"]
            key_ids[scenario] = uuid.UUID(issued.json()["id"])
    return user_id, keys, key_ids


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
    server = ThreadedServer(app_factory(with_admin(settings)))
    server.start()
    try:
        user_id, keys, key_ids = _issue_keys(server.base_url)
        yield GatewayServer(server.base_url, fake_upstream, user_id, key_ids["all"], database_url, keys)
    finally:
        server.stop()
